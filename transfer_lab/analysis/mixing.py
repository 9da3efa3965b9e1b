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
4. Three or more sources, RegMix-style: mixtures on the simplex at the smallest size; mixing models
   chosen by leave-one-out; the predicted best mixture, and whether the small-size ranking holds at a
   larger size (held-out runs there).
5. The atlas as a prior: a mixture's D_T predicted from its pure sources' D_T alone.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from transfer_lab.analysis import collect, effective_data, laws, specs
from transfer_lab.analysis.atlas import PairResult, analyse_pair
from transfer_lab.analysis.fitting import FitResult, fit_law
from transfer_lab.analysis.sweep_analysis import inversion_law, run_analysis
from transfer_lab.errors import ResultsError

VERIFY_EXPERIMENT = "mix_verify"  # conf/experiment/mix_verify.yaml: runs that test a prediction, never fitted
R_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # r* is read on this grid
STEP = 0.05  # mixtures are trained at multiples of 5%
TWO_SOURCE_LAWS = {"mix_exponential": specs.mix_exponential_spec, "mix_quadratic": specs.mix_quadratic_spec,
                   "mix_line": specs.mix_line_spec}
SIMPLEX_LAWS = {"simplex_exponential": specs.simplex_exponential_spec,
                "simplex_quadratic": specs.simplex_quadratic_spec, "simplex_linear": specs.simplex_linear_spec}


@dataclass
class MixLaw:
    """The chosen mixing law at one (N, D_F): its fit, r* (or the best mixture) and D_T there."""

    n: float
    d_f: float
    fit: FitResult
    best: dict  # {source: weight} of the predicted best mixture
    best_ci: dict  # {source: (lo, hi)}
    at_edge: float  # share of bootstrap replicates whose best lies on the simplex's boundary
    d_t: float
    d_t_ci: tuple
    model_based: int  # of the fit's points, how many D_E were model-based (outside the from-scratch curve)
    gain: float = float("nan")  # D_T(best)/D_T(first source alone)
    gain_ci: tuple = (float("nan"), float("nan"))
    boot_best: np.ndarray | None = None  # (B, q) replicate best mixtures


@dataclass
class MixStudy:
    sweep: str
    target: str
    axis: tuple[str, str] | None  # the two-source axis: r is the weight of axis[1]
    table: pd.DataFrame  # one row per fine-tuned cell
    ref: dict  # the reference (N, D_F) of the recommendation
    noise: dict = field(default_factory=dict)  # law -> pooled residual (ln D_T) used as run noise
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


def weight_columns(table: pd.DataFrame) -> list[str]:
    return sorted(c[2:] for c in table.columns if c.startswith("w_"))


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
    _simplex(study, n_bootstrap, seed, ci)
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


def _on_axis(t: pd.DataFrame, axis: tuple[str, str]) -> pd.DataFrame:
    others = [c for c in weight_columns(t) if c not in axis]
    on = t[[f"w_{c}" for c in others]].sum(axis=1) == 0 if others else pd.Series(True, index=t.index)
    return t[on].assign(r=t.loc[on, f"w_{axis[1]}"].round(4))


def _cells(rows: pd.DataFrame):
    for (n, d_f), g in rows.groupby(["N", "D_F"]):
        yield float(n), float(d_f), g.groupby("r" if "r" in g else "source_mix")


def _data(g: pd.DataFrame, columns: list[str] | None = None) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        data = {"lnDT": np.log(g["D_T"].to_numpy(float))}  # D_T ≤ 0: NaN, left out of the fit
    if columns is None:
        data["r"] = g["r"].to_numpy(float)
    else:
        data["W"] = g[[f"w_{c}" for c in columns]].to_numpy(float)
    return data


def _loo_rmse(builders: dict, groups: list[tuple[dict, np.ndarray]], ci: float, *spec_args) -> dict:
    """Leave one point out (the `held` mask's points, one at a time) of every group, per law: RMSE of ln D_T."""
    errors = {name: [] for name in builders}
    for data, held in groups:
        for i in np.flatnonzero(held):
            if not np.isfinite(data["lnDT"][i]):
                continue
            keep = np.arange(len(data["lnDT"])) != i
            train = {k: v[keep] for k, v in data.items()}
            test = {k: v[i:i + 1] for k, v in data.items()}
            for name, build in builders.items():
                fit = fit_law(build(train, *spec_args), train, n_bootstrap=0, ci=ci)
                errors[name].append(fit.evaluate(test)[0] - test["lnDT"][0] if fit.ok else np.nan)
    return {name: float(np.sqrt(np.nanmean(np.square(e)))) if np.isfinite(e).any() else float("nan")
            for name, e in ((k, np.array(v, float)) for k, v in errors.items())}


def _pooled_noise(fits: list[FitResult]) -> float:
    fits = [f for f in fits if f.ok]
    dof = sum(f.n_points - f.n_params for f in fits)
    if dof <= 0:
        return float("nan")
    return float(np.sqrt(sum(np.sum((f.predicted - f.observed) ** 2) for f in fits) / dof))


def _refit(build, data: dict, sigma: float, n_bootstrap: int, seed: int, ci: float, *spec_args) -> FitResult:
    """The law with a parametric bootstrap: replicates redraw every point's ln D_T around the fit by `sigma`."""
    spec = build(data, *spec_args)
    fit = fit_law(spec, data, n_bootstrap=0, ci=ci)
    if not fit.ok or not n_bootstrap:
        return fit
    rng = np.random.default_rng(seed)
    keep = np.isfinite(data[spec.target])
    y = np.full((n_bootstrap, keep.size), np.nan)
    y[:, keep] = fit.predicted[None, :] + rng.normal(0.0, sigma, (n_bootstrap, int(keep.sum())))
    return fit_law(spec, data, ci=ci, bootstrap_targets=(y, np.ones_like(y)))


def _best_on(fit: FitResult, grid: np.ndarray, sources: list[str], n: float, d_f: float, ci: float, data_key: str,
             model_based: int) -> MixLaw:
    """The grid mixture of most predicted D_T, its interval from the replicates, and the gain over the
    first source alone."""
    x = {data_key: grid[:, 1] if data_key == "r" else grid}
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    pred = fit.evaluate(x)
    best = int(np.argmax(pred))
    boot = fit.evaluate(x, boot=True) if fit.boot_theta is not None and len(fit.boot_theta) else pred[None]
    picks = np.argmax(np.where(np.isfinite(boot), boot, -np.inf), axis=1)
    boot_best = grid[picks]
    first = 0  # grid row 0 is the first source alone
    gain = np.exp(boot[np.arange(len(boot)), picks] - boot[:, first])
    return MixLaw(n=n, d_f=d_f, fit=fit, best=dict(zip(sources, map(float, grid[best]))),
                  best_ci={s: tuple(float(v) for v in np.percentile(boot_best[:, j], q)) for j, s in enumerate(sources)},
                  at_edge=float(np.mean((boot_best <= 1e-9).any(axis=1))), d_t=float(np.exp(pred[best])),
                  d_t_ci=tuple(float(v) for v in np.exp(np.percentile(boot[np.arange(len(boot)), picks], q))),
                  model_based=model_based, gain=float(np.exp(pred[best] - pred[first])),
                  gain_ci=tuple(float(v) for v in np.percentile(gain, q)), boot_best=boot_best)


def _two_sources(study: MixStudy, records: list, n_bootstrap: int, seed: int, ci: float, tolerance: float) -> None:
    a, b = study.axis
    on = _on_axis(study.table, study.axis)
    fit_rows = on[~on["held_out"]]
    groups = []
    for n, d_f, by_r in _cells(fit_rows):
        g = by_r.agg(D_T=("D_T", "mean"), model_based=("D_E_method", lambda m: int((m != "interpolated").sum())))
        g = g.reset_index()
        if (g["D_T"] > 0).sum() >= 4:
            groups.append(((n, d_f), _data(g), ((g["r"] > 0) & (g["r"] < 1)).to_numpy(), int(g["model_based"].sum())))
    if not groups:
        study.messages.append(f"no (N, D_F) has ≥ 4 ratios of {a} and {b} with D_T > 0: the ratio curve cannot be "
                              "fitted")
        return
    study.selection = _loo_rmse(TWO_SOURCE_LAWS, [(d, h) for _, d, h, _ in groups], ci)
    study.law = min(study.selection, key=lambda k: (np.nan_to_num(study.selection[k], nan=np.inf)))
    build = TWO_SOURCE_LAWS[study.law]
    plain = [fit_law(build(d), d, n_bootstrap=0, ci=ci) for _, d, _, _ in groups]
    study.noise[study.law] = sigma = _pooled_noise(plain)
    grid = np.column_stack([1 - R_GRID, R_GRID])
    for i, ((n, d_f), data, _, model_based) in enumerate(groups):
        fit = _refit(build, data, sigma, n_bootstrap, seed + i, ci)
        if fit.ok:
            study.cells.append(_best_on(fit, grid, [a, b], n, d_f, ci, "r", model_based))
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


def _prediction_interval(fit: FitResult, x: dict, sigma: float, ci: float, seed: int = 0) -> tuple[float, float, float]:
    """(predicted D_T, lo, hi) for a new run at x: the law's replicates plus a new run's noise."""
    rng = np.random.default_rng(seed)
    boot = fit.evaluate(x, boot=True)[:, 0]
    lo, hi = np.exp(np.percentile(boot + rng.normal(0.0, sigma, boot.shape), [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]))
    return float(np.exp(fit.evaluate(x)[0])), float(lo), float(hi)


def _verify_two(study: MixStudy, held: pd.DataFrame, sigma: float, ci: float) -> list[dict]:
    out = []
    for _, row in held.iterrows():
        cell = study.cell(row["N"], row["D_F"])
        if cell is None:
            continue
        d_t, lo, hi = _prediction_interval(cell.fit, {"r": np.array([row["r"]])}, sigma, ci)
        grid = study.table[~study.table["held_out"] & np.isclose(study.table["N"], row["N"])
                           & np.isclose(study.table["D_F"], row["D_F"])]
        best = grid.loc[grid["D_T"].idxmax()] if grid["D_T"].notna().any() else None
        out.append({"N": row["N"], "D_F": row["D_F"], "r": row["r"], "D_T": row["D_T"], "method": row["D_E_method"],
                    "predicted": d_t, "interval": (lo, hi), "inside": bool(lo <= row["D_T"] <= hi),
                    "grid_best": None if best is None else best["source_mix"],
                    "grid_best_D_T": None if best is None else float(best["D_T"])})
    return out


def simplex_grid(q: int, step: float = STEP) -> np.ndarray:
    """Every mixture of q sources at multiples of `step` (rows sum to 1)."""
    m = round(1 / step)
    rows = [c for c in itertools.product(range(m + 1), repeat=q - 1) if sum(c) <= m]
    return np.array([[m - sum(c), *c] for c in rows], float) / m


def _simplex(study: MixStudy, n_bootstrap: int, seed: int, ci: float) -> None:
    t = study.table
    cols = weight_columns(t)
    support = (t[[f"w_{c}" for c in cols]] > 0).sum(axis=1)
    wide = t[(support >= 3) & ~t["held_out"]]
    if wide.empty:
        return
    n_small = float(wide["N"].min())
    at = t[np.isclose(t["N"], n_small) & ~t["held_out"]]
    # every source mixed at that size; english (the reference) first
    sources = sorted((c for c in cols if (at[f"w_{c}"] > 0).any()), key=lambda s: (s != "english", s))
    groups = []
    for d_f, g in at.groupby("D_F"):
        g = g.groupby("source_mix").agg(D_T=("D_T", "mean"), **{f"w_{c}": (f"w_{c}", "first") for c in sources},
                                        model_based=("D_E_method", lambda m: int((m != "interpolated").sum())))
        g = g.reset_index()
        groups.append((float(d_f), _data(g, sources), (g[[f"w_{c}" for c in sources]].max(axis=1) < 1).to_numpy(),
                       int(g["model_based"].sum())))
    selection = _loo_rmse(SIMPLEX_LAWS, [(d, h) for _, d, h, _ in groups], ci, sources)
    law = min(selection, key=lambda k: np.nan_to_num(selection[k], nan=np.inf))
    build = SIMPLEX_LAWS[law]
    sigma = _pooled_noise([fit_law(build(d, sources), d, n_bootstrap=0, ci=ci) for _, d, _, _ in groups])
    grid = simplex_grid(len(sources))
    best = {}
    for i, (d_f, data, _, model_based) in enumerate(groups):
        fit = _refit(build, data, sigma, n_bootstrap, seed + 100 + i, ci, sources)
        if fit.ok:
            best[d_f] = _best_on(fit, grid, sources, n_small, d_f, ci, "W", model_based)
    study.noise[law] = sigma
    study.simplex = {"N": n_small, "sources": sources, "selection": selection, "law": law, "best": best,
                     "mixtures": int(at["source_mix"].nunique()), "ranking": _ranking(t, n_small, best)}


def _ranking(t: pd.DataFrame, n_small: float, best: dict) -> list[dict]:
    """Mixtures measured at the small size and at a larger one (held-out runs there): does the order of
    their D_T hold, and where does the predicted best land?"""
    out = []
    for n_big in sorted(t.loc[t["N"] > n_small, "N"].unique()):
        for d_f in sorted(best):
            small = t[np.isclose(t["N"], n_small) & np.isclose(t["D_F"], d_f)].groupby("source_mix")["D_T"].mean()
            big_rows = t[np.isclose(t["N"], n_big) & np.isclose(t["D_F"], d_f)]
            big = big_rows.groupby("source_mix")["D_T"].mean()
            both = small.index.intersection(big.index)
            if len(both) < 4 or not big_rows["held_out"].any():
                continue
            rho = spearmanr(small[both], big[both])
            predicted = collect.mix_label({s: w for s, w in sorted(best[d_f].best.items()) if w > 0})
            out.append({"N_small": n_small, "N": float(n_big), "D_F": d_f, "mixtures": len(both),
                        "spearman": float(rho.statistic), "p_value": float(rho.pvalue), "predicted_best": predicted,
                        "predicted_best_rank": int((big > big[predicted]).sum()) + 1 if predicted in big.index else None,
                        "of": len(big), "best_at_N": big.idxmax(), "best_D_T": float(big.max()),
                        "predicted_best_D_T": float(big[predicted]) if predicted in big.index else float("nan")})
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
