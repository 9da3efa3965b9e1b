"""run_analysis: table (or sweep folder) → effective data → every law fitted → AnalysisResult."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect, effective_data, specs
from transfer_lab.analysis.fitting import FitResult, fit_law
from transfer_lab.errors import ResultsError

ANCHORS = {"text→python": {"k": 1.9e4, "alpha": 0.18, "beta": 0.38},
           "50% text + 50% code→python": {"k": 2.1e5, "alpha": 0.096, "beta": 0.38}}


@dataclass
class AnalysisResult:
    sweep: str
    table: pd.DataFrame  # every run, effective-data columns added
    fits: dict[str, FitResult] = field(default_factory=dict)  # one per global law
    group_fits: dict[str, list[FitResult]] = field(default_factory=dict)  # per-N / per-D_F laws
    messages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    appc: dict = field(default_factory=dict)
    trade: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    main_budget: float = float("nan")
    figures: list = field(default_factory=list)  # (title, png path) once the report is written

    def fit(self, name: str) -> FitResult | None:
        f = self.fits.get(name)
        return f if f is not None and f.ok else None


def data_of(rows: pd.DataFrame, target: str | None = None) -> dict[str, np.ndarray]:
    """The arrays the law specs read (see specs.py for the keys)."""
    n = rows["N"].to_numpy(float)
    d = rows["D_F"].to_numpy(float)
    p = rows["pretrain_chars"].to_numpy(float) if "pretrain_chars" in rows else np.full(len(rows), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = {"N": n, "D": d, "P": p, "N_m": n / 1e6, "D_m": d / 1e6, "P_m": p / 1e6,
             "lnN": np.log(n), "lnD": np.log(d), "lnL": np.log(rows["loss"].to_numpy(float)),
             "pre": (rows["regime"] == "finetune").to_numpy(float)}
        if "D_T" in rows:
            x["lnDT"] = np.log(rows["D_T"].to_numpy(float))
            frac = rows["fraction"].to_numpy(float)
            x["lnfrac"] = np.log(frac)
            x["logitfrac"] = np.log(frac / (1 - frac))
    return x


def _table_from(source) -> tuple[str, pd.DataFrame, list[str]]:
    if isinstance(source, collect.Collection):
        return source.sweep, source.table, list(source.notes)
    if isinstance(source, pd.DataFrame):
        sweep = str(source["sweep"].iloc[0]) if len(source) and "sweep" in source else "table"
        return sweep, source, []
    path = Path(source)
    c = collect.collect_local(path.parent.parent, path.name)
    return c.sweep, c.table, list(c.notes)


def _main_budget(ft: pd.DataFrame) -> float:
    budgets = ft["pretrain_chars"].dropna().unique() if len(ft) else []
    return float(np.max(budgets)) if len(budgets) else float("nan")


def run_analysis(source, n_bootstrap: int = 1000, make_plots: bool = False, *, seed: int = 0,
                 ci: float = 0.95, huber: float | None = None, method: str = "interp",
                 low_data_fraction: float | None = 0.1, report_dir: str | Path | None = None,
                 html: bool = True, loss: str = "per_char") -> AnalysisResult:
    """Analyse a sweep: `source` is a Collection, a tidy DataFrame (collect.COLUMNS) or a sweep
    folder. Writes the report only when `report_dir` is given (plots when make_plots)."""
    t0 = time.perf_counter()
    sweep, table, notes = _table_from(source)
    if len(table) == 0:
        raise ResultsError(f"no runs at all in sweep {sweep}; run the sweep first")
    fit_kw = {"n_bootstrap": n_bootstrap, "seed": seed, "ci": ci, "huber": huber}
    res = AnalysisResult(sweep=sweep, table=table, notes=notes,
                         settings={"n_bootstrap": n_bootstrap, "seed": seed, "ci": ci, "huber": huber,
                                   "method": method, "low_data_fraction": low_data_fraction, "loss": loss})
    usable = table[~table["excluded"]]
    scratch = usable[usable["regime"] == "scratch"]
    ft = usable[usable["regime"] == "finetune"]
    if len(usable) == 0:
        res.messages.append("no usable runs: every run failed, is unfinished or has no loss (see the excluded list)")
    if len(scratch) == 0:
        res.messages.append("no from-scratch runs: D_E, D_T and the from-scratch laws cannot be computed")
    if len(ft) == 0:
        res.messages.append("no fine-tuned runs: nothing to measure transfer on")

    # 1. from-scratch laws
    xs = data_of(scratch)
    keys = list(scratch["run_key"])
    if len(scratch):
        res.fits["kaplan"] = fit_law(specs.kaplan_spec(xs), xs, run_keys=keys, **fit_kw)
        res.fits["chinchilla"] = fit_law(specs.chinchilla_spec(xs), xs, run_keys=keys, **fit_kw)
    t1 = time.perf_counter()

    # 2. effective data at the main pre-training budget
    res.main_budget = _main_budget(ft)
    kap = res.fit("kaplan")
    curves = effective_data.scratch_curves(table)
    table = effective_data.add_effective_data(table, curves, kap.params if kap else None, method,
                                              low_data_fraction if kap else None)
    if len(ft) and kap is None and low_data_fraction is not None:
        res.notes.append("low-data regime not checked: the Kaplan fit (needed for D(N)) is unavailable")
    other = (table["regime"] == "finetune") & table["pretrain_chars"].notna() & (table["pretrain_chars"] != res.main_budget)
    if np.isfinite(res.main_budget) and other.any():
        table.loc[other, "in_transfer_fit"] = False
        table.loc[other, "flags"] = table.loc[other, "flags"] + ";other_pretrain_budget"
    res.table = table
    ftm = table[(table["regime"] == "finetune") & ~table["excluded"] & ~other]
    missing_n = sorted(set(ftm["N"]) - {n for n, c in curves.items() if c.usable})
    if len(ftm) and missing_n:
        res.messages.append(f"no usable from-scratch curve (≥ 2 data sizes) for N = "
                            f"{', '.join(f'{n:.3g}' for n in missing_n)}: D_E cannot be interpolated there")

    # 3. transfer law on the flagged-clean low-data points, and App. C
    fit_rows = ftm[ftm["in_transfer_fit"]]
    if len(ftm):
        counts = ftm["flags"].str.split(";").explode().value_counts()
        dropped = {k: int(v) for k, v in counts.items() if k != "ok"}
        res.notes.append(f"transfer law uses {len(fit_rows)} of {len(ftm)} fine-tuned points; flags among the "
                         f"rest: {dropped if dropped else 'none'}")
        if (ftm["D_T"] > 0).sum() == 0 and ftm["D_T"].notna().any():
            res.messages.append("every fine-tuned point has D_T ≤ 0 (ossification: pre-training hurt at "
                                "these sizes); the transfer law cannot be fitted")
        xt = data_of(fit_rows)
        res.fits["transfer"] = fit_law(specs.transfer_spec(), xt, run_keys=list(fit_rows["run_key"]), **fit_kw)
        _fit_appc(res, fit_rows, fit_kw)
    t2 = time.perf_counter()

    # 4. unified law (scratch + fine-tuned at the main budget)
    if len(scratch) and len(ftm):
        both = pd.concat([scratch, ftm])
        xu = data_of(both)
        tr = res.fit("transfer")
        spec = specs.unified_spec(xu, kap.theta if kap else None, tr.theta if tr else None)
        res.fits["unified"] = fit_law(spec, xu, run_keys=list(both["run_key"]), **fit_kw)

    # 5. per-N laws: rectified (main budget) and transfer gap (several budgets)
    res.group_fits["rectified"] = [
        fit_law(specs.rectified_spec(data_of(g)), data_of(g), group=f"N={n:.3g}", run_keys=list(g["run_key"]), **fit_kw)
        for n, g in ftm.groupby("N")]
    ftall = table[(table["regime"] == "finetune") & ~table["excluded"]]
    budgets = ftall["pretrain_chars"].dropna().unique()
    if len(budgets) < 2:
        res.messages.append(f"transfer-gap law not fitted: it needs fine-tuned runs from several pre-training "
                            f"budgets and this sweep has {len(budgets)} (add pre-training budgets to the sweep)")
        res.group_fits["gap"] = []
    else:
        res.group_fits["gap"] = [
            fit_law(specs.gap_spec(data_of(g)), data_of(g), group=f"N={n:.3g}", run_keys=list(g["run_key"]), **fit_kw)
            for n, g in ftall[ftall["pretrain_chars"].notna()].groupby("N")]
    t3 = time.perf_counter()

    for name, f in res.fits.items():
        if not f.ok:
            res.messages.append(f"{f.title}: not fitted ({f.message})")
        elif not f.converged:
            res.messages.append(f"{f.title}: optimiser did not report convergence ({f.convergence})")
    _trade(res)
    res.timings = {"from_scratch_fits_s": t1 - t0, "transfer_fits_s": t2 - t1, "other_fits_s": t3 - t2}
    if report_dir is not None:
        from transfer_lab.analysis import report
        report.write_report(res, Path(report_dir), make_plots=make_plots, html=html)
    res.timings["total_s"] = time.perf_counter() - t0
    return res


def _fit_appc(res: AnalysisResult, rows: pd.DataFrame, fit_kw: dict) -> None:
    """Hernandez et al. App. C: per D_F a logistic fraction in N, then a power law N*(D_F)."""
    per = []
    for d_f, g in rows.groupby("D_F"):
        x = data_of(g)
        per.append(fit_law(specs.fraction_spec(x), x, group=f"D_F={d_f:.3g}", run_keys=list(g["run_key"]), **fit_kw))
    res.group_fits["appc_fraction"] = per
    good = [(float(f.group.split("=")[1]), f) for f in per if f.ok]
    if len(good) < 2:
        res.appc = {"message": f"App. C cross-check needs ≥ 2 D_F values with a per-D_F fit; got {len(good)}"}
        return
    d = np.array([g[0] for g in good])
    nstar = np.array([g[1].params["N_star"] for g in good])
    x = {"D": d, "lnD": np.log(d), "lnNstar": np.log(nstar)}
    fit = fit_law(specs.nstar_spec(), x, **fit_kw)
    res.fits["appc_nstar"] = fit
    if not fit.ok:
        res.appc = {"message": f"N*(D_F) power law not fitted: {fit.message}"}
        return
    beta = float(np.median([g[1].params["beta"] for g in good]))
    gamma, c = fit.params["gamma"], 10 ** fit.params["log10_c"]
    res.appc = {"beta": beta, "gamma": gamma, "alpha_implied": 1 - gamma * beta, "k_implied": c ** (-beta),
                "n_dfs": len(good)}


def _trade(res: AnalysisResult) -> None:
    """10× N is worth 10^(β/α)× D_F (from the fitted transfer law, with its bootstrap interval)."""
    tr = res.fit("transfer")
    if tr is None:
        return
    a, b = tr.params["alpha"], tr.params["beta"]
    out = {"alpha": a, "beta": b, "factor": float(10 ** (b / a)) if a > 0 else float("nan")}
    if tr.boot_theta is not None and len(tr.boot_theta):
        with np.errstate(all="ignore"):
            ratio = tr.boot_theta[:, 2] / tr.boot_theta[:, 1]
        ratio = ratio[np.isfinite(ratio) & (tr.boot_theta[:, 1] > 0)]
        if len(ratio):
            lo, hi = np.percentile(ratio, [(1 - res.settings["ci"]) / 2 * 100, (1 + res.settings["ci"]) / 2 * 100])
            out["factor_ci"] = (float(10 ** lo), float(10 ** hi))
    res.trade = out
