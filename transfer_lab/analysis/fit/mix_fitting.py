"""The fitting machinery of the mixing laws (analysis/specs.py holds the laws): a table's mixture
weights, leave-one-out selection, the run noise pooled over cells, a parametric bootstrap, and the
best mixture on a grid of mixtures with its interval."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit.fitting import FitResult, fit_law

STEP = 0.05  # mixtures are trained at multiples of 5%


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


def weight_columns(table: pd.DataFrame) -> list[str]:
    return sorted(c[2:] for c in table.columns if c.startswith("w_"))


def simplex_grid(q: int, step: float = STEP) -> np.ndarray:
    """Every mixture of q sources at multiples of `step` (rows sum to 1)."""
    m = round(1 / step)
    rows = [c for c in itertools.product(range(m + 1), repeat=q - 1) if sum(c) <= m]
    return np.array([[m - sum(c), *c] for c in rows], float) / m


def mix_data(g: pd.DataFrame, columns: list[str] | None = None) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        data = {"lnDT": np.log(g["D_T"].to_numpy(float))}  # D_T ≤ 0: NaN, left out of the fit
    data["seeds"] = g["seeds"].to_numpy(float) if "seeds" in g else np.ones(len(g))  # runs behind each mean D_T
    if columns is None:
        data["r"] = g["r"].to_numpy(float)
    else:
        data["W"] = g[[f"w_{c}" for c in columns]].to_numpy(float)
    return data


def loo_rmse(builders: dict, groups: list[tuple[dict, np.ndarray]], ci: float, *spec_args) -> dict:
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


def pooled_noise(fits: list[FitResult]) -> float:
    fits = [f for f in fits if f.ok]
    dof = sum(f.n_points - f.n_params for f in fits)
    if dof <= 0:
        return float("nan")
    return float(np.sqrt(sum(np.sum((f.predicted - f.observed) ** 2) for f in fits) / dof))


def refit(build, data: dict, sigma: float, n_bootstrap: int, seed: int, ci: float, *spec_args) -> FitResult:
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


def best_on(fit: FitResult, grid: np.ndarray, sources: list[str], n: float, d_f: float, ci: float, data_key: str,
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


def prediction_interval(fit: FitResult, x: dict, sigma: float, ci: float, seed: int = 0) -> tuple[float, float, float]:
    """(predicted D_T, lo, hi) for a new run at x: the law's replicates plus a new run's noise."""
    rng = np.random.default_rng(seed)
    boot = fit.evaluate(x, boot=True)[:, 0]
    lo, hi = np.exp(np.percentile(boot + rng.normal(0.0, sigma, boot.shape), [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]))
    return float(np.exp(fit.evaluate(x)[0])), float(lo), float(hi)
