"""What an analysis concludes once its laws are fitted: each law's misfit against the measured seed
noise, the measured answer per cell, whether the two transfer estimates agree, which exponents the data
cannot identify (and why), and the trade 10× N = 10^(β/α)× D_F."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import checks, effective_data
from transfer_lab.analysis.fit.fitting import FitResult
from transfer_lab.analysis.fit.goodness import goodness
from transfer_lab.analysis.fit.intervals import identified, why_not_identified
from transfer_lab.analysis.fit.result import AnalysisResult
from transfer_lab.analysis.fit.transfer_fit import measured_multiplier


def answer(res: AnalysisResult) -> None:
    """The measured answer, cell by cell: each (N, D_F)'s multiplier (D_F + D_T)/D_F with its own
    bootstrap interval (both regimes redrawn), at the main pre-training budget; seeds averaged."""
    t = res.table
    ft = t[(t["regime"] == "finetune") & ~t["excluded"] & t["D_E"].notna()]
    if res.budgets is not None:
        ft = ft[ft["pretrain_budget"] == res.main_budget]
    for (n, d_f), g in ft.groupby(["N", "D_F"]):
        best, (lo, hi), method = measured_multiplier(res, n, d_f)
        if np.isfinite(best):
            res.answer.append({"N": float(n), "D_F": float(d_f), "multiplier": best, "lo": lo, "hi": hi,
                               "method": method, "seeds": len(g), "identified": method == "interpolated" and lo > 1})


def test_goodness(res: AnalysisResult) -> None:
    """Every law of ln L or ln D_T against the seed noise of its own runs (fit/goodness.py)."""
    if res.noise is None:
        res.noise = checks.NoiseModel.measure(res.table[~res.table["excluded"] & res.table["regime"].isin(collect.FIT_REGIMES)])
    rows = res.table.set_index("run_key")
    curves = effective_data.scratch_curves(res.table)
    fits = list(res.fits.values()) + [f for name, group in res.group_fits.items() if name != "appc_fraction" for f in group]
    for fit in fits:
        if not fit.ok or fit.spec is None or fit.spec.target not in ("lnL", "lnDT") or not fit.run_keys:
            continue
        at = rows.loc[fit.run_keys]
        sigma, dof = _point_noise(res.noise, at, curves, fit.spec.target)
        res.goodness[(fit.law, fit.group)] = goodness(fit.predicted - fit.observed, sigma, fit.n_params, dof)


def _point_noise(noise: checks.NoiseModel, at: pd.DataFrame, curves, target: str) -> tuple[np.ndarray, int]:
    """σ of each point's target (one run's ln L, or ln D_T through its curve's slope) and the
    degrees of freedom of the noise estimate behind them (the least among the points)."""
    sigma, dofs = [], []
    for r in at.itertuples():
        ft, sc = noise.sigma("finetune", r.N), noise.sigma("scratch", r.N)
        if target == "lnL":
            s = noise.sigma(r.regime, r.N)
            dofs.append(noise.dof(r.regime, r.N))
        else:
            curve = curves.get(float(r.N))
            slope = abs(float(curve.log_slope(r.D_E))) if curve is not None else np.nan
            s = np.hypot(ft, sc) / slope if ft is not None and sc is not None and slope > 0 else None
            dofs.append(min(noise.dof("finetune", r.N), noise.dof("scratch", r.N)))
        sigma.append(np.nan if s is None else s)
    return np.array(sigma, float), min(dofs) if dofs else 0


def agreement(transfer: FitResult | None, unified: FitResult | None) -> dict:
    """Do the interpolated transfer law and the unified law agree on k, α, β within their intervals?"""
    if transfer is None or unified is None:
        return {}
    out = {}
    for name in ("k", "alpha", "beta"):
        a, b = transfer.ci.get(name), unified.ci.get(name)
        if a is None or b is None:
            continue
        out[name] = bool(max(a[0], b[0]) <= min(a[1], b[1]))
    return out


def identification(res: AnalysisResult) -> None:
    """Where the data cannot identify an exponent, say so and why (plan names the runs)."""
    n_sizes = res.table.loc[(res.table["regime"] == "finetune") & res.table["in_transfer_fit"], "N"].nunique()
    for law in ("transfer", "unified"):
        f = res.fit(law)
        if f is None:
            continue
        for name, why in (("alpha", "the fine-tune grid (D_F span)"), ("beta", "the model sizes (N span)")):
            lo, hi = f.ci.get(name, (np.nan, np.nan))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                continue
            estimate = f.params.get(name, np.nan)
            outside = np.isfinite(estimate) and not lo <= estimate <= hi
            if outside:  # percentile intervals of an unstable fit: resamples land far from the estimate
                res.unidentified.append(
                    f"{law} law: the fitted {name} = {estimate:.3g} lies outside its own interval [{lo:.3g}, {hi:.3g}]: "
                    "the fit moves a lot when runs are resampled (few points, or points far from the law); "
                    "read neither the estimate nor the interval as a measurement")
            if not identified(lo, hi):
                extra = f" over {n_sizes} size(s) in the interpolated fit" if name == "beta" and law == "transfer" else ""
                symbol = {"alpha": "α", "beta": "β"}[name]
                res.unidentified.append(
                    f"{law} law: {symbol} is not identified ({res.settings['ci']:.0%} interval [{lo:.3g}, {hi:.3g}] "
                    f"{why_not_identified(lo, hi)}); it is set by {why}{extra}; "
                    "analyze.py action=plan lists the runs that would narrow it")


def trade(res: AnalysisResult) -> None:
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
