"""The interpolated transfer law's fit and the noise its bootstrap perturbs runs by (shared by the
sweep analysis and the per-budget fits)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import checks, effective_data, specs
from transfer_lab.analysis.fit.fitting import FitResult, fit_law
from transfer_lab.analysis.fit.result import AnalysisResult, data_of


def measure_noise(res: AnalysisResult, table: pd.DataFrame) -> None:
    """The seed noise measured per regime and N, and what each N's from-scratch runs are perturbed
    by in the bootstrap (measured, else the smooth law's residual, else a floor)."""
    res.noise = checks.NoiseModel.measure(table[~table["excluded"] & table["regime"].isin(collect.FIT_REGIMES)])
    smooth = [f.rms_log * np.sqrt(f.n_points / (f.n_points - f.n_params))
              for f in (res.fit("kaplan"), res.fit("chinchilla")) if f is not None and f.n_points > f.n_params]
    res.residual_noise = min(smooth) if smooth else None
    sizes = sorted(table.loc[table["regime"] == "finetune", "N"].dropna().unique())
    used = [checks.scratch_noise(res.noise, res.residual_noise)(n) for n in sizes] or [(float("nan"), "")]
    res.settings["scratch_run_noise"] = float(np.median([s for s, _ in used]))
    res.settings["scratch_run_noise_from"] = "; ".join(dict.fromkeys(why for _, why in used))


def transfer_fit(res: AnalysisResult, rows: pd.DataFrame, fit_kw: dict, measured_noise: bool = True) -> FitResult:
    """The interpolated transfer law on `rows`, its intervals from the bootstrap that redraws both
    regimes (bootstrap_transferred) with the measured seed noise, or (measured_noise=False) the
    from-scratch law's residual alone: the interval a single-seed sweep would get."""
    noise = res.noise if measured_noise else checks.NoiseModel()
    scratch_sigma = checks.scratch_noise(noise, res.residual_noise)
    n_boot, method = res.settings["n_bootstrap"], res.settings["method"]
    boot = (effective_data.bootstrap_transferred(res.table, rows, n_boot, res.settings["seed"],
                                                 lambda n: scratch_sigma(n)[0], lambda n: noise.sigma("finetune", n))
            if n_boot > 0 and method == "interp" and len(rows) else None)
    return fit_law(specs.transfer_spec(), data_of(rows), run_keys=list(rows["run_key"]), bootstrap_targets=boot,
                   **fit_kw)


def measured_multiplier(res: AnalysisResult, n: float, d_f: float) -> tuple[float, tuple[float, float], str]:
    """The multiplier (D_F + D_T)/D_F measured at one cell (N, D_F; seeds averaged), with its own
    interval: the D_E bootstrap (both regimes redrawn) where D_E is interpolated, else the law's
    bootstrap (model-based). (nan, (nan, nan), "") where the cell has no D_E."""
    t = res.table
    rows = t[(t["regime"] == "finetune") & ~t["excluded"] & np.isclose(t["N"], n) & np.isclose(t["D_F"], d_f)]
    if res.budgets is not None and len(rows):
        rows = rows[rows["pretrain_budget"] == res.main_budget]
    rows = rows[rows["D_E"].notna()]
    if not len(rows):
        return float("nan"), (float("nan"), float("nan")), ""
    ci = res.settings["ci"]
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    best = float(rows["D_E"].mean() / d_f)
    if (rows["D_E_method"] == "interpolated").all():
        noise = res.noise if res.noise is not None else checks.NoiseModel()
        scratch_sigma = checks.scratch_noise(noise, res.residual_noise)
        d_e, _ = effective_data.bootstrap_effective_data(t, rows, max(res.settings["n_bootstrap"], 200),
                                                         res.settings["seed"], lambda size: scratch_sigma(size)[0],
                                                         lambda size: noise.sigma("finetune", size))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate that inverts none of the cell's runs
            draws = np.nanmean(d_e, axis=1) / d_f
        draws = draws[np.isfinite(draws)]
        lo, hi = np.percentile(draws, q) if len(draws) else (np.nan, np.nan)
        return best, (float(lo), float(hi)), "interpolated"
    lo = float((d_f + rows["D_T_lo"].mean()) / d_f)
    hi = float((d_f + rows["D_T_hi"].mean()) / d_f)
    return best, (lo, hi), "model-based"
