"""analyze.py action=mix: the best pre-training mixture for a target, predicted from a mix sweep, then verified.

A mix sweep (experiment=mix_text_code_python, + mix_simplex_python) holds the target's from-scratch
curve and fine-tunes from models pre-trained on mixtures of sources (each record's source_weights).

1. Measured: every fine-tuned cell's D_E through the shared from-scratch curve (interpolated, or
   model-based through the Kaplan fit outside its range, flagged), D_T and the multiplier with
   intervals; per two-source mixture, the transfer law (k, α, β) as an atlas pair is fitted.
2. Two sources (the axis: mixtures of two corpora, r = the second's weight): at every (N, D_F),
   candidate mixing laws of ln D_T over r, chosen by leave-one-ratio-out error on the interior ratios
   (predicting an end would extrapolate). D_T, not the loss: the transfer law makes the mixture's
   effect a factor k(r) of D_T, while the loss saturates near its floor. The chosen law predicts
   r* = argmax D_T; a parametric bootstrap (the law's pooled residual as run noise) gives r*'s interval
   and the gain D_T(r*)/D_T(0). Cells with D_T ≤ 0 (ossified) cannot enter a log-space law.
3. Held out: runs launched with experiment=mix_verify enter no fit; each is compared with the
   interval the law predicted for it.
4. Three or more sources, RegMix-style (analysis/mix_simplex.py): mixtures on the simplex at the
   smallest size; mixing models chosen by leave-one-out; the predicted best mixture, and whether the
   small-size ranking holds at a larger size (held-out runs there).
5. The atlas as a prior: a mixture's D_T predicted from its pure sources' D_T alone.

The fitting machinery the two-source and simplex laws share is analysis/mix_fitting.py.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import effective_data, laws, specs
from transfer_lab.analysis.fit.fitting import fit_law
from transfer_lab.analysis.fit.mix_fitting import (
    MixLaw,
    best_on,
    loo_rmse,
    mix_data,
    pooled_noise,
    prediction_interval,
    refit,
    weight_columns,
)
from transfer_lab.analysis.studies.atlas import PairResult, analyse_pair
from transfer_lab.analysis.studies.mix_checks import (
    measure_seed_noise,
    noise_and_goodness,
    raw_best,
    spread,
)
from transfer_lab.analysis.studies.mix_simplex import fit_simplex
from transfer_lab.analysis.studies.sweep_analysis import inversion_law, run_analysis
from transfer_lab.errors import ResultsError

VERIFY_EXPERIMENT = "mix_verify"  # conf/experiment/mix_verify.yaml: runs that test a prediction, never fitted
R_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # r* is read on this grid
TWO_SOURCE_LAWS = {"mix_exponential": specs.mix_exponential_spec, "mix_quadratic": specs.mix_quadratic_spec,
                   "mix_line": specs.mix_line_spec}


@dataclass
class MixStudy:
    sweep: str
    target: str
    axis: tuple[str, str] | None  # the two-source axis: r is the weight of axis[1]
    table: pd.DataFrame  # one row per fine-tuned cell
    ref: dict  # the reference (N, D_F) of the recommendation
    noise: dict = field(default_factory=dict)  # law -> the run noise (ln D_T) its bootstrap uses: seeds where measured
    residual: dict = field(default_factory=dict)  # law -> its pooled residual (ln D_T): the misfit, never the noise
    seed_noise: dict = field(default_factory=dict)  # sigma, dof, cells: ln D_T between seeds of one cell on the grid
    goodness: dict = field(default_factory=dict)  # law -> goodness.Goodness of its misfit against the seed noise
    spread: list = field(default_factory=list)  # per (N, D_F): the ratios' D_T against each other, in seed noise
    raw_best: dict = field(default_factory=dict)  # (N, D_F) -> (best grid ratio, lo, hi): the measured best, model-free
    selection: dict = field(default_factory=dict)  # two-source law -> leave-one-ratio-out RMSE (ln D_T)
    law: str = ""
    cells: list[MixLaw] = field(default_factory=list)
    moves: list[dict] = field(default_factory=list)
    verified: list[dict] = field(default_factory=list)
    transfer_laws: list[PairResult] = field(default_factory=list)
    simplex: dict = field(default_factory=dict)
    prior: pd.DataFrame | None = None
    shapes: dict = field(default_factory=dict)  # N -> (n_layer, n_embd, n_head)
    experiment: str = ""  # the grid's experiment=, for the commands
    messages: list[str] = field(default_factory=list)
    scratch_table: pd.DataFrame | None = None
    scratch_noise: float = float("nan")  # the Kaplan fit's residual: a from-scratch run's noise in ln L

    def cell(self, n: float, d_f: float) -> MixLaw | None:
        return next((c for c in self.cells if np.isclose(c.n, n) and np.isclose(c.d_f, d_f)), None)


def load_mix(root, sweep: str, n_bootstrap: int, seed: int, ci: float, monotone_tolerance: float,
             ref_n: float | None = None, ref_d_f: float | None = None) -> MixStudy:
    runs, _ = collect.load_local(collect.sweep_dir(Path(root), sweep))
    fine = [r for r in runs if r.regime == "finetune" and r.status == "done"]
    if not fine:
        raise ResultsError(f"sweep {sweep} has no finished fine-tuned runs; run it first "
                           "(python train.py -m experiment=mix_text_code_python)")
    targets = sorted({r.target_corpus for r in fine})
    if len(targets) != 1:
        raise ResultsError(f"sweep {sweep} fine-tunes on {len(targets)} targets ({', '.join(targets)}); a mix study "
                           "has one: split it into one sweep per target (sweep=...)")
    target = targets[0]
    scratch = [r for r in runs if r.regime == "scratch" and r.target_corpus == target]
    table = collect.records_to_table(scratch + fine, sweep).table
    left_out = table[table["excluded"] & (table["regime"] == "finetune")]
    if len(left_out):
        why = Counter(str(r).split(" (")[0].split(" by ")[0] for r in left_out["reason"])
        study_note = (f"{len(left_out)} fine-tuned runs left out ({', '.join(f'{n} {w}' for w, n in why.items())}): "
                      f"python analyze.py action=collect sweep={sweep} lists them")
    table = table[~table["excluded"]]
    weights = {r.run_key: collect.source_weights_of(r) for r in fine}
    sources = sorted({s for w in weights.values() for s in w})
    for s in sources:
        table[f"w_{s}"] = [weights.get(k, {}).get(s, 0.0) if g == "finetune" else np.nan
                           for k, g in zip(table["run_key"], table["regime"])]
    table["held_out"] = table["experiment"].eq(VERIFY_EXPERIMENT)
    study = _measure(table, sweep, target, n_bootstrap, seed, ci)
    if len(left_out):
        study.messages.append(study_note)
    ft = study.table
    study.ref = {"N": ref_n or float(ft["N"].max()), "D_F": ref_d_f or float(ft["D_F"].min())}
    grid = ft[~ft["held_out"]]
    study.experiment = str(grid["experiment"].mode().iloc[0]) if grid["experiment"].notna().any() else ""
    study.shapes = {float(n): tuple(int(v) for v in g[["n_layer", "n_embd", "n_head"]].iloc[0])
                    for n, g in ft.groupby("N")}
    study.axis = _axis(grid, sources)
    if study.axis is None:
        study.messages.append("no two sources are mixed at ≥ 3 ratios: the ratio curve needs mixtures of two corpora "
                              "(python train.py -m experiment=mix_text_code_python)")
    else:
        _two_sources(study, scratch + fine, n_bootstrap, seed, ci, monotone_tolerance)
    study.simplex = fit_simplex(study.table, n_bootstrap, seed, ci)
    if study.simplex:
        study.noise[study.simplex["law"]] = study.simplex["noise"]
    _intervals(study, n_bootstrap, seed, ci)
    study.prior = _atlas_prior(study.table)
    return study


def _measure(table: pd.DataFrame, sweep: str, target: str, n_bootstrap: int, seed: int, ci: float) -> MixStudy:
    """D_E, D_T and the multiplier of every fine-tuned cell, through the one from-scratch curve."""
    scratch = table[table["regime"] == "scratch"]
    if scratch.empty:
        raise ResultsError(f"sweep {sweep} has no from-scratch runs on {target}: D_E cannot be measured; run the "
                           f"sweep's scratch grid (regime=scratch)")
    base = run_analysis(scratch, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    curves = effective_data.scratch_curves(base.table)
    law = inversion_law(base, "kaplan")
    t = effective_data.add_effective_data(pd.concat([base.table, table[table["regime"] == "finetune"]]), curves, law,
                                          low_data_fraction=None, ci=ci)
    kap = base.fit("kaplan")
    return MixStudy(sweep=sweep, target=target, axis=None, table=t[t["regime"] == "finetune"].copy(), ref={},
                    scratch_table=t[t["regime"] == "scratch"],
                    scratch_noise=kap.rms_log * np.sqrt(kap.n_points / max(kap.n_points - kap.n_params, 1))
                    if kap else float("nan"))


def _intervals(study: MixStudy, n_bootstrap: int, seed: int, ci: float) -> None:
    """Each interpolated cell's D_T interval: the from-scratch curve redrawn by its noise (a single fine-tune
    per cell: its own noise is not measured here, and is in the mixing law's residual instead)."""
    t = study.table
    rows = t[t["D_E_method"] == "interpolated"]
    if rows.empty or not n_bootstrap or not np.isfinite(study.scratch_noise):
        return
    d_e, _ = effective_data.bootstrap_effective_data(pd.concat([study.scratch_table, rows]), rows, n_bootstrap, seed,
                                                     lambda n: study.scratch_noise)
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanpercentile(d_e, q, axis=0)
    t.loc[rows.index, "D_T_lo"] = lo - rows["D_F"].to_numpy(float)
    t.loc[rows.index, "D_T_hi"] = hi - rows["D_F"].to_numpy(float)


def _axis(ft: pd.DataFrame, sources: list[str]) -> tuple[str, str] | None:
    """The two corpora mixed at the most distinct ratios (≥ 3, ends included); english first if it is one
    (r = 0 is then the paper's text-only pre-training)."""
    best, count = None, 2
    for a, b in itertools.combinations(sources, 2):
        others = [c for c in sources if c not in (a, b)]
        on = (ft[[f"w_{c}" for c in others]].sum(axis=1) == 0) if others else pd.Series(True, index=ft.index)
        ratios = ft.loc[on, f"w_{b}"].round(4).nunique()
        if ratios > count:
            best, count = ((b, a) if b == "english" else (a, b)), ratios
    return best


def on_axis(t: pd.DataFrame, axis: tuple[str, str]) -> pd.DataFrame:
    """The cells mixed from the axis's two sources only, with r = the second's weight."""
    others = [c for c in weight_columns(t) if c not in axis]
    on = t[[f"w_{c}" for c in others]].sum(axis=1) == 0 if others else pd.Series(True, index=t.index)
    return t[on].assign(r=t.loc[on, f"w_{axis[1]}"].round(4))


def _cells(rows: pd.DataFrame):
    for (n, d_f), g in rows.groupby(["N", "D_F"]):
        yield float(n), float(d_f), g.groupby("r" if "r" in g else "source_mix")


def _two_sources(study: MixStudy, records: list, n_bootstrap: int, seed: int, ci: float, tolerance: float) -> None:
    a, b = study.axis
    on = on_axis(study.table, study.axis)
    fit_rows = on[~on["held_out"]]
    groups = []
    study.seed_noise = measure_seed_noise(fit_rows)
    for n, d_f, by_r in _cells(fit_rows):
        g = by_r.agg(D_T=("D_T", "mean"), seeds=("D_T", "size"),
                     model_based=("D_E_method", lambda m: int((m != "interpolated").sum())))
        g = g.reset_index()
        study.raw_best[(n, d_f)] = raw_best(g, study.seed_noise.get("sigma", 0.0))
        study.spread.append(spread(n, d_f, g, study.seed_noise))
        if (g["D_T"] > 0).sum() >= 4:
            groups.append(((n, d_f), mix_data(g), ((g["r"] > 0) & (g["r"] < 1)).to_numpy(), int(g["model_based"].sum())))
    if not groups:
        study.messages.append(f"no (N, D_F) has ≥ 4 ratios of {a} and {b} with D_T > 0: the ratio curve cannot be "
                              "fitted")
        return
    study.selection = loo_rmse(TWO_SOURCE_LAWS, [(d, h) for _, d, h, _ in groups], ci)
    study.law = min(study.selection, key=lambda k: (np.nan_to_num(study.selection[k], nan=np.inf)))
    build = TWO_SOURCE_LAWS[study.law]
    plain = [fit_law(build(d), d, n_bootstrap=0, ci=ci) for _, d, _, _ in groups]
    study.residual[study.law] = pooled_noise(plain)
    sigma = noise_and_goodness(study, plain, [d for _, d, _, _ in groups])
    grid = np.column_stack([1 - R_GRID, R_GRID])
    for i, ((n, d_f), data, _, model_based) in enumerate(groups):
        fit = refit(build, data, sigma, n_bootstrap, seed + i, ci)
        if fit.ok:
            study.cells.append(best_on(fit, grid, [a, b], n, d_f, ci, "r", model_based))
    study.moves = _moves(study)
    study.verified = _verify_two(study, on[on["held_out"]], sigma, ci)
    pairs = {}
    for r in records:
        if r.regime == "finetune" and r.experiment != VERIFY_EXPERIMENT:
            w = collect.source_weights_of(r)
            if set(w) <= {a, b}:
                pairs.setdefault(round(w.get(b, 0.0), 4), []).append(r)
    scratch = [r for r in records if r.regime == "scratch"]
    for r_b, fine in sorted(pairs.items()):
        label = collect.mix_label(collect.source_weights_of(fine[0]))
        study.transfer_laws.append(analyse_pair(scratch + fine, label, study.target, study.ref, n_bootstrap, seed,
                                                ci, tolerance))


def _moves(study: MixStudy) -> list[dict]:
    """Does r* move with N (at each D_F) or with D_F (at each N)? Replicate-paired differences."""
    out = []
    q = [2.5, 97.5]
    for along, fixed in (("N", "d_f"), ("D_F", "n")):
        by_fixed: dict = {}
        for c in study.cells:
            by_fixed.setdefault(getattr(c, fixed), []).append(c)
        for value, cells in sorted(by_fixed.items()):
            if len(cells) < 2:
                continue
            lo, hi = sorted(cells, key=lambda c: c.n if along == "N" else c.d_f)[::len(cells) - 1]
            m = min(len(lo.boot_best), len(hi.boot_best))
            diff = hi.boot_best[:m, 1] - lo.boot_best[:m, 1]
            ci = tuple(float(v) for v in np.percentile(diff, q))
            out.append({"along": along, "at": value, "from": lo.n if along == "N" else lo.d_f,
                        "to": hi.n if along == "N" else hi.d_f, "shift": hi.best[study.axis[1]] - lo.best[study.axis[1]],
                        "ci": ci, "moves": not (ci[0] <= 0 <= ci[1])})
    return out


def _verify_two(study: MixStudy, held: pd.DataFrame, sigma: float, ci: float) -> list[dict]:
    out = []
    for _, row in held.iterrows():
        cell = study.cell(row["N"], row["D_F"])
        if cell is None:
            continue
        d_t, lo, hi = prediction_interval(cell.fit, {"r": np.array([row["r"]])}, sigma, ci)
        grid = study.table[~study.table["held_out"] & np.isclose(study.table["N"], row["N"])
                           & np.isclose(study.table["D_F"], row["D_F"])]
        best = grid.loc[grid["D_T"].idxmax()] if grid["D_T"].notna().any() else None
        out.append({"N": row["N"], "D_F": row["D_F"], "r": row["r"], "D_T": row["D_T"], "method": row["D_E_method"],
                    "predicted": d_t, "interval": (lo, hi), "inside": bool(lo <= row["D_T"] <= hi),
                    "grid_best": None if best is None else best["source_mix"],
                    "grid_best_D_T": None if best is None else float(best["D_T"])})
    return out


def _atlas_prior(t: pd.DataFrame) -> pd.DataFrame:
    """Each mixture's D_T predicted from its pure sources' measured D_T at the same (N, D_F)."""
    cols = weight_columns(t)
    rows = []
    for (n, d_f), g in t.groupby(["N", "D_F"]):
        pure = {c: g.loc[g[f"w_{c}"] == 1, "D_T"].mean() for c in cols if (g[f"w_{c}"] == 1).any()}
        for _, row in g[(g[[f"w_{c}" for c in cols]] > 0).sum(axis=1) >= 2].iterrows():
            w = {c: row[f"w_{c}"] for c in cols if row[f"w_{c}"] > 0}
            if not all(c in pure and np.isfinite(pure[c]) for c in w):
                continue
            weights, dts = np.array(list(w.values())), np.array([pure[c] for c in w])
            rows.append({"N": n, "D_F": d_f, "mixture": row["source_mix"], "sources": len(w), "D_T": row["D_T"],
                         "D_T_lo": row["D_T_lo"], "D_T_hi": row["D_T_hi"], "D_E_method": row["D_E_method"],
                         "held_out": bool(row["held_out"]),
                         "arithmetic": float(laws.mixture_dt_arithmetic(weights, dts)),
                         "geometric": float(laws.mixture_dt_geometric(weights, dts)) if (dts > 0).all() else np.nan})
    return pd.DataFrame(rows)
