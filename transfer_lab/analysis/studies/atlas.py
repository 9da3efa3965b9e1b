"""analyze.py action=atlas: directed transfer coefficients for every ordered pair of a sweep's corpora.

One atlas sweep holds, per size N, one pre-training per source, one from-scratch curve per target
and the fine-tunes of every ordered pair (source ≠ target): what is shared was trained once
(study/protocol.py). Each pair is then analysed as its own study (run_analysis on the target's scratch
runs and that source's fine-tunes), giving D_T, k, α, β with bootstrap intervals: from the
interpolated transfer law where it is fitted, from the unified law (flagged model-based) where it
is not. The effective data multiplier is read at a reference (N, D_F) from the same law.

Returns an AtlasStudy; report/atlas_report.py writes atlas.md (+ .html), atlas.json, pairs.csv and
the heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit.intervals import identified
from transfer_lab.analysis.fit.transfer_fit import measured_multiplier
from transfer_lab.analysis.studies.sweep_analysis import run_analysis
from transfer_lab.errors import ResultsError


@dataclass
class PairResult:
    source: str
    target: str
    law: str  # transfer (interpolated) | unified (model-based) | none
    params: dict = field(default_factory=dict)  # k, alpha, beta
    ci: dict = field(default_factory=dict)
    n_points: int = 0
    interpolated_points: int = 0
    model_based_points: int = 0
    multiplier: float = float("nan")  # at the reference (N, D_F)
    multiplier_ci: tuple = (float("nan"), float("nan"))
    d_t: float = float("nan")  # at the reference
    d_t_ci: tuple = (float("nan"), float("nan"))
    measured: float = float("nan")  # the multiplier measured at the reference cell (not the law's)
    measured_ci: tuple = (float("nan"), float("nan"))  # from the D_E bootstrap (or the law's, model-based)
    measured_method: str = ""  # interpolated | model-based
    identified: dict = field(default_factory=dict)  # alpha/beta: interval excludes 0 and is ≤ 0.5 wide
    at_bounds: list = field(default_factory=list)  # k/alpha/beta the fit pinned to a bound: no estimate
    messages: list = field(default_factory=list)
    goodness: object = None  # fit.goodness.Goodness of its law: the misfit against the run noise


def _at_reference(fit, n: float, d_f: float, ci: float) -> tuple[float, tuple, float, tuple]:
    """Multiplier and D_T of the law at (n, d_f), with bootstrap percentile intervals."""
    off = 0 if fit.law == "transfer" else 4
    theta = np.vstack([fit.theta[None, :], fit.boot_theta]) if fit.boot_theta is not None else fit.theta[None, :]
    k, a, b = 10 ** theta[:, off], theta[:, off + 1], theta[:, off + 2]
    d_t = k * d_f ** a * n ** b
    mult = 1 + d_t / d_f
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]

    def iv(x):
        x = x[1:][np.isfinite(x[1:])]
        return tuple(float(v) for v in np.percentile(x, q)) if len(x) else (float("nan"),) * 2
    return float(mult[0]), iv(mult), float(d_t[0]), iv(d_t)


def analyse_pairs(runs: list, sweep: str, ref_n: float | None, ref_d_f: float | None, n_bootstrap: int,
                  seed: int = 0, ci: float = 0.95, monotone_tolerance: float = 0.003) -> tuple[list[PairResult], dict]:
    done = [r for r in runs if r.regime in ("scratch", "finetune")]
    targets = sorted({r.target_corpus for r in done if r.target_corpus})
    sources = sorted({r.source_corpus for r in done if r.regime == "finetune" and r.source_corpus})
    corpora = sorted(set(targets) | set(sources))
    if len(corpora) < 2:
        raise ResultsError(f"sweep {sweep} has runs for {len(corpora)} corpus; an atlas needs fine-tunes between "
                           "at least two (python train.py -m experiment=atlas)")
    ns = sorted({float(r.non_embedding_params) for r in done if r.regime == "finetune"})
    d_fs = sorted({float(r.finetune_chars) for r in done if r.regime == "finetune"})
    ref = {"N": ref_n or (ns[-1] if ns else float("nan")), "D_F": ref_d_f or (d_fs[0] if d_fs else float("nan"))}
    out = []
    for s in corpora:
        for t in corpora:
            if s != t:
                pair = [r for r in done if r.target_corpus == t and (r.regime == "scratch" or r.source_corpus == s)]
                out.append(analyse_pair(pair, s, t, ref, n_bootstrap, seed, ci, monotone_tolerance))
    return out, ref


def analyse_pair(runs: list, source: str, target: str, ref: dict, n_bootstrap: int, seed: int = 0,
                 ci: float = 0.95, monotone_tolerance: float = 0.003) -> PairResult:
    """One source → target as its own study: `runs` are the target's from-scratch runs and the fine-tunes
    from that source (a corpus, or a mixture: analyze.py action=mix)."""
    result = PairResult(source=source, target=target, law="none")
    if not any(r.regime == "finetune" for r in runs):
        result.messages.append("no fine-tuned runs")
        return result
    res = run_analysis(collect.records_to_table(runs, f"{source}->{target}"), n_bootstrap=n_bootstrap, seed=seed,
                       ci=ci, monotone_tolerance=monotone_tolerance)
    ft = res.table[(res.table["regime"] == "finetune") & ~res.table["excluded"]]
    result.interpolated_points = int((ft["D_E_method"] == "interpolated").sum())
    result.model_based_points = int(ft["flags"].str.contains("model_based", na=False).sum())
    fit, law = res.fit("transfer"), "transfer"
    if fit is None:
        fit, law = res.fit("unified"), "unified"
    result.messages = [m for m in res.messages if "transfer-gap" not in m]
    result.measured, result.measured_ci, result.measured_method = measured_multiplier(res, ref["N"], ref["D_F"])
    if fit is not None:
        result.law, result.n_points = law, fit.n_points
        result.goodness = res.goodness.get((law, ""))
        result.params = {k: fit.params[k] for k in ("k", "alpha", "beta")}
        result.ci = {k: fit.ci.get(k, (float("nan"),) * 2) for k in ("k", "alpha", "beta")}
        result.at_bounds = [k for k in ("k", "alpha", "beta") if k in fit.at_bounds or f"log10_{k}" in fit.at_bounds]
        result.identified = {k: identified(*result.ci[k]) and k not in result.at_bounds for k in ("alpha", "beta")}
        result.multiplier, result.multiplier_ci, result.d_t, result.d_t_ci = _at_reference(fit, ref["N"], ref["D_F"], ci)
    return result


@dataclass
class AtlasStudy:
    sweep: str
    pairs: list[PairResult]
    ref: dict  # the reference N and D_F the multiplier is read at
    settings: dict
    chars_per_token: list[list]  # [corpus, characters per token] under the shared tokenizer


def load_atlas(root: Path, sweep: str, ref_n, ref_d_f, n_bootstrap: int, seed: int, ci: float,
               monotone_tolerance: float) -> AtlasStudy:
    runs, _ = collect.load_local(collect.sweep_dir(root, sweep))
    if not runs:
        raise ResultsError(f"no runs in sweep {sweep}; run it first: python train.py -m experiment=atlas")
    tokenizers = sorted({r.tokenizer for r in runs if r.regime in ("scratch", "finetune") and r.status == "done"})
    if len(tokenizers) > 1:
        raise ResultsError(f"sweep {sweep} mixes tokenizers ({', '.join(tokenizers[:3])}); an atlas compares pairs "
                           "only with one tokenizer for every corpus (tokenizer.train_on); split the sweep")
    pairs, ref = analyse_pairs(runs, sweep, ref_n, ref_d_f, n_bootstrap, seed, ci, monotone_tolerance)
    settings = {"n_bootstrap": n_bootstrap, "seed": seed, "ci": ci, "tokenizer": tokenizers[0] if tokenizers else None}
    return AtlasStudy(sweep, pairs, ref, settings, corpus_table(runs))

def corpus_table(runs: list) -> list[list]:
    """Characters per token of each corpus under the atlas tokenizer (from the runs' records)."""
    rows = {}
    for r in runs:
        if r.regime == "scratch" and r.status == "done" and r.finetune_tokens:
            rows.setdefault(r.target_corpus, r.finetune_chars / r.finetune_tokens)
    return [[name, f"{cpt:.2f}"] for name, cpt in sorted(rows.items())]

