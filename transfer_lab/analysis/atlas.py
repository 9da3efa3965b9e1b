"""analyze.py action=atlas: directed transfer coefficients for every ordered pair of a sweep's corpora.

One atlas sweep holds, per size N, one pre-training per source, one from-scratch curve per target
and the fine-tunes of every ordered pair (source ≠ target): what is shared was trained once
(study/protocol.py). Each pair is then analysed as its own study (run_analysis on the target's scratch
runs and that source's fine-tunes), giving D_T, k, α, β with bootstrap intervals: from the
interpolated transfer law where it is fitted, from the unified law (flagged model-based) where it
is not. The effective data multiplier is read at a reference (N, D_F) from the same law.

Writes atlas.md (+ .html), atlas.json, pairs.csv and heatmaps of α and of the multiplier
(rows: sources, columns: targets) with each cell's interval; unidentified cells are hatched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.report import markdown_to_html
from transfer_lab.analysis.report_format import md_table
from transfer_lab.analysis.sweep_analysis import run_analysis
from transfer_lab.analysis.transfer_fit import measured_multiplier
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


def _identified(ci: tuple) -> bool:
    lo, hi = ci
    return bool(np.isfinite(lo) and np.isfinite(hi) and not (lo <= 0 <= hi) and hi - lo <= 0.5)


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
        result.params = {k: fit.params[k] for k in ("k", "alpha", "beta")}
        result.ci = {k: fit.ci.get(k, (float("nan"),) * 2) for k in ("k", "alpha", "beta")}
        result.at_bounds = [k for k in ("k", "alpha", "beta") if k in fit.at_bounds or f"log10_{k}" in fit.at_bounds]
        result.identified = {k: _identified(result.ci[k]) and k not in result.at_bounds for k in ("alpha", "beta")}
        result.multiplier, result.multiplier_ci, result.d_t, result.d_t_ci = _at_reference(fit, ref["N"], ref["D_F"], ci)
    return result


def _matrix(pairs: list[PairResult], corpora: list[str], value) -> pd.DataFrame:
    m = pd.DataFrame(np.nan, index=corpora, columns=corpora)
    for p in pairs:
        m.loc[p.source, p.target] = value(p)
    return m


def heatmap(pairs, corpora, value, interval, unidentified, title: str, out: Path, name: str, log: bool = False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = _matrix(pairs, corpora, value)
    data = np.log10(m.to_numpy(float)) if log else m.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.35 * len(corpora) + 2, 1.1 * len(corpora) + 1.2))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis")
    fig.colorbar(image, ax=ax, label=("log10 " if log else "") + title.split(":")[0])
    by = {(p.source, p.target): p for p in pairs}
    for i, s in enumerate(corpora):
        for j, t in enumerate(corpora):
            p = by.get((s, t))
            if p is None:
                ax.text(j, i, "—", ha="center", va="center", color="grey")
                continue
            v, (lo, hi) = value(p), interval(p)
            label = "n/a" if not np.isfinite(v) else f"{v:.2g}\n[{lo:.2g}, {hi:.2g}]"
            ax.text(j, i, label, ha="center", va="center", fontsize=6.5, color="white" if np.isfinite(v) else "grey")
            if unidentified(p):
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85", lw=0))
    ax.set_xticks(range(len(corpora)), corpora, rotation=35, ha="right")
    ax.set_yticks(range(len(corpora)), corpora)
    ax.set(xlabel="target (fine-tuned on)", ylabel="source (pre-trained on)", title=title)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)
    return png


def _g(x, digits=3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _iv(ci) -> str:
    return f"[{_g(ci[0])}, {_g(ci[1])}]"


def literature_checks(pairs: list[PairResult]) -> list[str]:
    """Kim 2021: English→German transfers more than English→Spanish and English→Chinese.
    Hernandez et al.: β depends on the target alone (roughly constant over sources)."""
    by = {(p.source, p.target): p for p in pairs}
    lines = []
    de, es, zh = by.get(("english", "german")), by.get(("english", "spanish")), by.get(("english", "chinese"))
    if de and es and zh and all(np.isfinite(p.multiplier) for p in (de, es, zh)):
        def cmp(a, b):
            if a.multiplier_ci[0] > b.multiplier_ci[1]:
                return "more than"
            if a.multiplier_ci[1] < b.multiplier_ci[0]:
                return "less than"
            return "not distinguishable from"
        lines.append(f"- Kim 2021 (English→German > English→Spanish, > English→Chinese): the multiplier of English→German "
                     f"({_g(de.multiplier)} {_iv(de.multiplier_ci)}) is {cmp(de, es)} English→Spanish "
                     f"({_g(es.multiplier)} {_iv(es.multiplier_ci)}) and {cmp(de, zh)} English→Chinese "
                     f"({_g(zh.multiplier)} {_iv(zh.multiplier_ci)}), at the reference (N, D_F), 95% intervals.")
    else:
        lines.append("- Kim 2021 check not possible: English→German, →Spanish and →Chinese are not all measured.")
    for t in sorted({p.target for p in pairs}):
        betas = [p for p in pairs if p.target == t and "beta" in p.params and "beta" not in p.at_bounds]
        if len(betas) < 2:
            continue
        los, his = [p.ci["beta"][0] for p in betas], [p.ci["beta"][1] for p in betas]
        overlap = max(los) <= min(his)
        values = ", ".join(f"{p.source}: {_g(p.params['beta'])} {_iv(p.ci['beta'])}" for p in betas)
        lines.append(f"- β for target {t} ({'intervals share a common value' if overlap else 'intervals do NOT overlap'}"
                     f" across sources; Hernandez et al. read β as a property of the target): {values}")
    return lines


def measured_cells(pairs: list[PairResult], ref: dict) -> list[str]:
    """The reference cell measured, pair by pair: its own interval says whether transfer is there,
    whatever the law's exponents."""
    have = [p for p in pairs if np.isfinite(p.measured)]
    above = [p for p in have if p.measured_ci[0] > 1]
    out = [f"## The reference cell, measured (N = {ref['N']:.3g}, D_F = {ref['D_F']:.3g})", "",
           f"The multiplier measured at the reference cell (its D_E inverted through the target's from-scratch curve), "
           f"with its own interval from the D_E bootstrap (both regimes redrawn), beside the law's prediction. In "
           f"{len(above)} of {len(have)} pairs the measured interval excludes 1: transfer is measured there, even "
           "where the law's exponents are not identified.", ""]
    rows = [[f"{p.source} → {p.target}", f"{_g(p.measured)} {_iv(p.measured_ci)}", p.measured_method,
             "yes" if p.measured_ci[0] > 1 else "no", f"{_g(p.multiplier)} {_iv(p.multiplier_ci)}",
             "yes" if p.identified.get("alpha") and p.identified.get("beta") else "no"]
            for p in sorted(have, key=lambda p: -p.measured)]
    return out + md_table(["source → target", "measured multiplier", "D_E", "excludes 1", "law's multiplier",
                           "α and β identified"], rows)


def _estimate(p: PairResult, name: str) -> str:
    if name in p.at_bounds:  # the fit ran into the edge of the allowed range: the data do not hold it
        return f"at its bound ({_g(p.params.get(name))}): not estimated"
    return f"{_g(p.params.get(name))} {_iv(p.ci.get(name, (np.nan,) * 2))}"


def write_atlas(pairs: list[PairResult], ref: dict, sweep: str, out: Path, settings: dict,
                chars_per_token: list[list] | None = None, html: bool = True) -> Path:
    corpora = sorted({p.source for p in pairs} | {p.target for p in pairs})
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in pairs:
        rows.append({"source": p.source, "target": p.target, "law": p.law, "points": p.n_points,
                     "interpolated_points": p.interpolated_points, "model_based_points": p.model_based_points,
                     **{k: p.params.get(k, np.nan) for k in ("k", "alpha", "beta")},
                     **{f"{k}_lo": p.ci.get(k, (np.nan, np.nan))[0] for k in ("k", "alpha", "beta")},
                     **{f"{k}_hi": p.ci.get(k, (np.nan, np.nan))[1] for k in ("k", "alpha", "beta")},
                     "multiplier": p.multiplier, "multiplier_lo": p.multiplier_ci[0], "multiplier_hi": p.multiplier_ci[1],
                     "measured_multiplier": p.measured, "measured_lo": p.measured_ci[0],
                     "measured_hi": p.measured_ci[1], "measured_method": p.measured_method,
                     "D_T": p.d_t, "D_T_lo": p.d_t_ci[0], "D_T_hi": p.d_t_ci[1],
                     "alpha_identified": p.identified.get("alpha", False),
                     "beta_identified": p.identified.get("beta", False), "at_bounds": ";".join(p.at_bounds)})
    table = pd.DataFrame(rows)
    table.to_csv(out / "pairs.csv", index=False)
    plots = out / "plots"
    figs = [("α (directed proximity of source to target)",
             heatmap(pairs, corpora, lambda p: p.params.get("alpha", np.nan), lambda p: p.ci.get("alpha", (np.nan,) * 2),
                     lambda p: not p.identified.get("alpha", False),
                     "α: D_T ∝ D_F^α (hatched: interval covers 0 or is wider than 0.5)", plots, "alpha")),
            (f"Effective data multiplier at N = {ref['N']:.3g}, D_F = {ref['D_F']:.3g}",
             heatmap(pairs, corpora, lambda p: p.multiplier, lambda p: p.multiplier_ci,
                     lambda p: not p.identified.get("alpha", False) or not p.identified.get("beta", False),
                     f"multiplier (D_F+D_T)/D_F at N={ref['N']:.3g}, D_F={ref['D_F']:.3g} (hatched: α or β unidentified)",
                     plots, "multiplier", log=True))]
    L = [f"# Transfer atlas: sweep `{sweep}`", "",
         f"{len(pairs)} ordered pairs of {len(corpora)} corpora ({', '.join(corpora)}). Per pair: the transfer law "
         "D_T = k·D_F^α·N^β fitted on interpolated D_E where it can be (law `transfer`), else the unified law fitted "
         "jointly on scratch and fine-tuned losses (law `unified`, model-based). Intervals: "
         f"{settings['n_bootstrap']} bootstrap resamples of whole runs, {settings['ci']:.0%} percentile. Multiplier and "
         f"D_T at the reference N = {ref['N']:.3g}, D_F = {ref['D_F']:.3g} characters.", ""]
    if chars_per_token:
        L += [f"One tokenizer serves every corpus: `{settings.get('tokenizer')}`. Losses are nats per character, so "
              "pairs compare whatever the tokenizer does to each corpus:", ""]
        L += md_table(["corpus", "characters per token"], chars_per_token)
    L += ["## Checks against the literature", ""] + literature_checks(pairs) + [""]
    L += measured_cells(pairs, ref)
    L += ["## Pairs", ""]
    L += md_table(["source → target", "law", "points (interp./model)", "k", "α", "β", "multiplier (law)",
                   "multiplier (measured)", "D_T (law)"],
                  [[f"{p.source} → {p.target}", p.law, f"{p.n_points} ({p.interpolated_points}/{p.model_based_points})",
                    *[_estimate(p, name) for name in ("k", "alpha", "beta")],
                    f"{_g(p.multiplier)} {_iv(p.multiplier_ci)}", f"{_g(p.measured)} {_iv(p.measured_ci)}",
                    f"{_g(p.d_t)} {_iv(p.d_t_ci)}"] for p in pairs])
    L += ["## Asymmetry (A → B against B → A)", "",
          "Transfer is directed: the multiplier of A → B over that of B → A, and the difference of α.", ""]
    by = {(p.source, p.target): p for p in pairs}
    asym = []
    for i, a in enumerate(corpora):
        for b in corpora[i + 1:]:
            ab, ba = by.get((a, b)), by.get((b, a))
            if ab is None or ba is None:
                continue
            ratio = ab.multiplier / ba.multiplier if np.isfinite(ab.multiplier) and np.isfinite(ba.multiplier) else np.nan
            dalpha = ab.params.get("alpha", np.nan) - ba.params.get("alpha", np.nan)
            apart = ab.multiplier_ci[0] > ba.multiplier_ci[1] or ab.multiplier_ci[1] < ba.multiplier_ci[0]
            asym.append([f"{a} ↔ {b}", f"{_g(ab.multiplier)} / {_g(ba.multiplier)}", _g(ratio), _g(dalpha),
                         "yes" if apart else "no"])
    L += md_table(["pair", "multiplier A→B / B→A", "ratio", "α(A→B) − α(B→A)", "intervals apart"], asym)
    L += ["## Heatmaps", ""]
    for title, png in figs:
        L += [f"### {title}", "", f"![{title}]({png.relative_to(out).as_posix()})", ""]
    notes = sorted({m for p in pairs for m in p.messages})
    if notes:
        L += ["## Messages from the pair analyses", ""] + [f"- {m}" for m in notes[:40]] + [""]
    md = "\n".join(L) + "\n"
    (out / "atlas.md").write_text(md, encoding="utf-8")
    if html:  # images inline (~330 kB for 6 corpora): html=false for reports committed to docs/
        (out / "atlas.html").write_text(markdown_to_html(md, out), encoding="utf-8")
    (out / "atlas.json").write_text(json.dumps({"sweep": sweep, "reference": ref, "settings": settings,
                                                "pairs": table.replace({np.nan: None}).to_dict("records")},
                                               indent=2), encoding="utf-8")
    return out / "atlas.md"


def run_atlas(root: Path, sweep: str, out: Path, ref_n, ref_d_f, n_bootstrap: int, seed: int, ci: float,
              monotone_tolerance: float, html: bool = True) -> tuple[Path, list[PairResult]]:
    runs, _ = collect.load_local(collect.sweep_dir(root, sweep))
    if not runs:
        raise ResultsError(f"no runs in sweep {sweep}; run it first: python train.py -m experiment=atlas")
    tokenizers = sorted({r.tokenizer for r in runs if r.regime in ("scratch", "finetune") and r.status == "done"})
    if len(tokenizers) > 1:
        raise ResultsError(f"sweep {sweep} mixes tokenizers ({', '.join(tokenizers[:3])}); an atlas compares pairs "
                           "only with one tokenizer for every corpus (tokenizer.train_on); split the sweep")
    pairs, ref = analyse_pairs(runs, sweep, ref_n, ref_d_f, n_bootstrap, seed, ci, monotone_tolerance)
    settings = {"n_bootstrap": n_bootstrap, "seed": seed, "ci": ci, "tokenizer": tokenizers[0] if tokenizers else None}
    return write_atlas(pairs, ref, sweep, out, settings, corpus_table(runs), html=html), pairs


def corpus_table(runs: list) -> list[list]:
    """Characters per token of each corpus under the atlas tokenizer (from the runs' records)."""
    rows = {}
    for r in runs:
        if r.regime == "scratch" and r.status == "done" and r.finetune_tokens:
            rows.setdefault(r.target_corpus, r.finetune_chars / r.finetune_tokens)
    return [[name, f"{cpt:.2f}"] for name, cpt in sorted(rows.items())]

