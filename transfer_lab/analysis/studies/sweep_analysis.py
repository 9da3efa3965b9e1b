"""run_analysis: table (or sweep folder) → effective data → every law fitted → AnalysisResult."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import checks, effective_data, specs
from transfer_lab.analysis.fit.fitting import fit_law
from transfer_lab.analysis.fit.result import AnalysisResult, FitSettings, data_of
from transfer_lab.analysis.fit.transfer_fit import (
    measure_noise,
    transfer_fit,
)
from transfer_lab.analysis.studies import budgets, plan, verdicts
from transfer_lab.errors import ResultsError


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
    budgets = ft["pretrain_budget"].dropna().unique() if len(ft) else []
    return float(np.max(budgets)) if len(budgets) else float("nan")


def run_analysis(source, settings: FitSettings | None = None, *, scope: str = "all", **fields) -> AnalysisResult:
    """Analyse a sweep: `source` is a Collection, a tidy DataFrame (collect.COLUMNS) or a sweep
    folder; `settings` (or its fields as keywords, e.g. n_bootstrap=200) say how to fit. Returns
    data only: report/sweep_report.write_report writes the files. scope="transfer" fits only what
    the transfer and unified laws' intervals need (the priced plan re-runs it per simulated sweep)."""
    settings = dataclasses.replace(settings or FitSettings(), **fields)
    t0 = time.perf_counter()
    sweep, table, notes = _table_from(source)
    if len(table) == 0:
        raise ResultsError(f"no runs at all in sweep {sweep}; run the sweep first")
    res = AnalysisResult(sweep=sweep, table=table, notes=notes, settings=dataclasses.asdict(settings))
    fit_kw = {"n_bootstrap": settings.n_bootstrap, "seed": settings.seed, "ci": settings.ci, "huber": settings.huber}
    _check_measurement(res, settings.monotone_tolerance)
    scratch, ft = _usable(res)
    _scratch_laws(res, scratch, fit_kw, with_chinchilla=scope == "all")
    t1 = time.perf_counter()
    other = _unified_law(res, scratch, ft, fit_kw)
    curves, law, ftm = _effective_data(res, other, settings)
    _transfer_laws(res, ftm, fit_kw, full=scope == "all")
    t2 = time.perf_counter()
    if scope == "all":
        _per_size_laws(res, ft, ftm, curves, law, fit_kw)
        verdicts.answer(res)
        res.next_runs = plan.plan_runs(res).commands  # what would close the gaps the report names
    t3 = time.perf_counter()
    if scope == "all":  # the goodness tests and verdicts: a report's, not an interval's (the plan's 50-odd re-fits)
        _summarise(res)
    res.timings = {"from_scratch_fits_s": t1 - t0, "transfer_fits_s": t2 - t1, "other_fits_s": t3 - t2,
                   "total_s": time.perf_counter() - t0}
    return res


def _usable(res: AnalysisResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    usable = res.table[~res.table["excluded"]]
    scratch, ft = usable[usable["regime"] == "scratch"], usable[usable["regime"] == "finetune"]
    if len(usable) == 0:
        res.messages.append("no usable runs: every run failed, is unfinished or has no loss (see the excluded list)")
    if len(scratch) == 0:
        res.messages.append("no from-scratch runs: D_E, D_T and the from-scratch laws cannot be computed")
    if len(ft) == 0:
        res.messages.append("no fine-tuned runs: nothing to measure transfer on")
    return scratch, ft


def _scratch_laws(res: AnalysisResult, scratch: pd.DataFrame, fit_kw: dict, with_chinchilla: bool = True) -> None:
    if len(scratch):
        xs, keys = data_of(scratch), list(scratch["run_key"])
        res.fits["kaplan"] = fit_law(specs.kaplan_spec(xs), xs, run_keys=keys, **fit_kw)
    if len(scratch) and with_chinchilla:
        res.fits["chinchilla"] = fit_law(specs.chinchilla_spec(xs), xs, run_keys=keys, **fit_kw)


def _unified_law(res: AnalysisResult, scratch: pd.DataFrame, ft: pd.DataFrame, fit_kw: dict) -> pd.Series:
    """The unified law, jointly on scratch and the fine-tuned runs at the main pre-training budget;
    returns the mask of fine-tunes at other budgets."""
    table = res.table
    res.main_budget = _main_budget(ft)
    other = (table["regime"] == "finetune") & table["pretrain_budget"].notna() & (table["pretrain_budget"] != res.main_budget)
    ftm = ft[~other.loc[ft.index]]
    if len(scratch) and len(ftm):
        both = pd.concat([scratch, ftm])
        xu = data_of(both)
        kap = res.fit("kaplan")
        spec = specs.unified_spec(xu, kap.theta if kap else None)
        res.fits["unified"] = fit_law(spec, xu, run_keys=list(both["run_key"]), **fit_kw)
    return other


def _effective_data(res: AnalysisResult, other: pd.Series, settings: FitSettings):
    """D_E interpolated inside each N's scratch range, model-based (unified law) outside; returns the
    curves, the inversion law and the fine-tunes at the main budget."""
    table = res.table
    curves = effective_data.scratch_curves(table)
    law = inversion_law(res, settings.method)
    table = effective_data.add_effective_data(table, curves, law, settings.method,
                                              settings.low_data_fraction if law else None, settings.ci)
    if (table["regime"] == "finetune").any() and law is None and settings.low_data_fraction is not None:
        res.notes.append("low-data regime not checked: no from-scratch law fitted (needed for D(N))")
    if np.isfinite(res.main_budget) and other.any():
        table.loc[other, "in_transfer_fit"] = False
        table.loc[other, "flags"] = table.loc[other, "flags"] + ";other_pretrain_budget"
    res.table = table
    ftm = table[(table["regime"] == "finetune") & ~table["excluded"] & ~other]
    missing_n = sorted(set(ftm["N"]) - {n for n, c in curves.items() if c.usable})
    if len(ftm) and missing_n:
        res.messages.append(f"no usable from-scratch curve (≥ 2 data sizes) for N = "
                            f"{', '.join(f'{n:.3g}' for n in missing_n)}: D_E cannot be interpolated there")
    _coverage(res, ftm)
    return curves, law, ftm


def _transfer_laws(res: AnalysisResult, ftm: pd.DataFrame, fit_kw: dict, full: bool = True) -> None:
    """The transfer law on the interpolated, flag-clean low-data points, and App. C."""
    if not len(ftm):
        return
    fit_rows = ftm[ftm["in_transfer_fit"]]
    counts = ftm["flags"].str.split(";").explode().value_counts()
    dropped = {k: int(v) for k, v in counts.items() if k != "ok"}
    res.notes.append(f"interpolated transfer law uses {len(fit_rows)} of {len(ftm)} fine-tuned points; flags "
                     f"among the rest: {dropped if dropped else 'none'}")
    if (ftm["D_T"] > 0).sum() == 0 and ftm["D_T"].notna().any():
        res.messages.append("every fine-tuned point has D_T ≤ 0 (ossification: pre-training hurt at "
                            "these sizes); the transfer law cannot be fitted")
    measure_noise(res, res.table)
    res.fits["transfer"] = transfer_fit(res, fit_rows, fit_kw)
    if full and res.noise.measured and res.fit("transfer") is not None:  # the same runs, the residual as noise
        before = transfer_fit(res, fit_rows, fit_kw, measured_noise=False)
        res.noise_effect = {name: (before.ci.get(name), res.fits["transfer"].ci.get(name))
                            for name in ("k", "alpha", "beta") if before.ok}
    if full:
        _fit_appc(res, fit_rows, fit_kw)


def _per_size_laws(res: AnalysisResult, ft: pd.DataFrame, ftm: pd.DataFrame, curves, law, fit_kw: dict) -> None:
    """Per N: the rectified law (main budget) and the transfer-gap law (several budgets)."""
    res.group_fits["rectified"] = [
        fit_law(specs.rectified_spec(data_of(g)), data_of(g), group=f"N={n:.3g}", run_keys=list(g["run_key"]), **fit_kw)
        for n, g in ftm.groupby("N")]
    kap = res.fit("kaplan")
    res.budgets = budgets.analyse(res, fit_kw, curves, law, kap.theta if kap else None) if len(ft) else None
    if res.budgets is None:
        n_budgets = ft["pretrain_budget"].nunique()
        res.messages.append(f"transfer-gap law not fitted: it needs fine-tuned runs at several pre-training budgets "
                            f"and this sweep has {n_budgets} (sweep pretrain.tokens=a,b,c)")
    else:
        res.messages += res.budgets.messages
    res.group_fits["gap"] = res.budgets.gap if res.budgets is not None else []
    res.group_fits["per_budget"] = [entry[law] for entry in (res.budgets.per_budget if res.budgets else [])
                                    for law in ("transfer", "unified") if law in entry]


def _summarise(res: AnalysisResult) -> None:
    res.agreement = verdicts.agreement(res.fit("transfer"), res.fit("unified"))
    verdicts.test_goodness(res)
    if res.budgets is not None and res.budgets.gap:
        budgets.decide_better_buy(res)  # needs the gap laws' goodness
    for f in res.fits.values():
        if not f.ok:
            res.messages.append(f"{f.title}: not fitted ({f.message})")
        elif not f.converged:
            res.messages.append(f"{f.title}: optimiser did not report convergence ({f.convergence})")
    verdicts.identification(res)
    verdicts.trade(res)


def _check_measurement(res: AnalysisResult, floor: float) -> None:
    """Runs that are not converged early-stopping points and curves that rise with data are
    left out of every curve and fit, each named with its fix."""
    t = res.table
    nc = t[t["excluded"] & t["reason"].str.startswith("not converged", na=False)]
    if len(nc):
        res.messages.append(f"{len(nc)} run(s) are not converged early-stopping points and are left out: "
                            + "; ".join(f"{r.run_key} ({r.not_converged_why})" for r in nc.head(6).itertuples())
                            + (" ..." if len(nc) > 6 else "") + f". {collect.NOT_CONVERGED_FIX}")
    rows = t[~t["excluded"] & t["regime"].isin(collect.FIT_REGIMES)]
    tol = checks.monotone_tolerance(rows, floor)
    found = checks.violations(rows, tol)
    res.violations = found
    res.table = checks.mark_violations(t, found)
    for v in found:
        res.messages.append(f"loss rises with data, a bug to explain rather than a point to fit: {v.describe()}; "
                            f"the run at D={v.d_high:.3g} is left out (check its schedule in results.json, or "
                            f"add seeds: analyze.py action=plan)")


def inversion_law(res: AnalysisResult, method: str) -> effective_data.KaplanBlock | None:
    """The law that inverts losses outside the scratch range: the unified law's from-scratch part
    (fitted with the fine-tuned runs), else the Kaplan fit; method=kaplan: the Kaplan fit."""
    fit = None if method == "kaplan" else res.fit("unified")
    source = "unified law"
    if fit is None:
        fit, source = res.fit("kaplan"), "Kaplan from-scratch fit"
    if fit is None:
        return None

    def block(theta):
        theta = np.atleast_2d(theta)
        return np.column_stack([10 ** theta[:, 0], 10 ** theta[:, 1], theta[:, 2], theta[:, 3]])

    boot = block(fit.boot_theta) if fit.boot_theta is not None and len(fit.boot_theta) else np.empty((0, 4))
    return effective_data.KaplanBlock(tuple(block(fit.theta)[0]), boot, source)


def _coverage(res: AnalysisResult, ftm: pd.DataFrame) -> None:
    """Interpolate, don't extrapolate: say where the scratch grid does not span the fine-tuned losses."""
    below = ftm[ftm["flags"].str.contains(effective_data.FLAG_BELOW, na=False)]
    if len(below):
        worst = below.sort_values("D_E", ascending=False).iloc[0]
        res.messages.append(
            f"{len(below)} of {len(ftm)} fine-tuned losses lie below every from-scratch run at their N: their D_E is "
            f"model-based (unified law), not interpolated (the largest: D_E ≈ {worst['D_E']:.3g} at N={worst['N']:.3g}, "
            f"D_F={worst['D_F']:.3g}); extend the from-scratch grid: analyze.py action=plan")


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

