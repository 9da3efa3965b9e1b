"""Effective data: D_E by inverting the from-scratch curve at the same N, then D_T, multiplier,
fraction and the flags that keep a point out of the transfer-law fit.

Interpolated (the paper's way, flag ok): the from-scratch losses at one N, averaged over seeds
at equal D, made non-increasing in D (isotonic regression), then a monotone PCHIP interpolant of
loss against ln D, inverted exactly. Only a fine-tuned loss inside the curve's measured range is
inverted this way.

Model-based (flag model_based): a loss outside that range is inverted through the from-scratch
part of the unified law, fitted jointly on the scratch and fine-tuned runs; its interval comes
from the same law's bootstrap refits. It is labelled, and never enters the interpolated transfer
law. method="kaplan" inverts the from-scratch Kaplan fit at every point instead (D_E_method says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq, isotonic_regression

from transfer_lab.analysis.fit import laws

FLAG_OK = "ok"
FLAG_NO_CURVE = "no_scratch_curve"
FLAG_BELOW = "below_scratch_range"  # fine-tuned loss lower than every from-scratch run at this N
FLAG_ABOVE = "above_scratch_range"
FLAG_MODEL = "model_based"
FLAG_OSSIFIED = "ossified"
FLAG_HIGH_DATA = "not_low_data"
FLAG_NO_DE = "no_D_E"
FLAG_BEYOND_FLOOR = "below_law_floor"  # below L(N, ∞) of the law: no amount of scratch data matches it


@dataclass
class ScratchCurve:
    n: float
    log_d: np.ndarray  # increasing
    loss: np.ndarray  # non-increasing
    raw_loss: np.ndarray

    def __post_init__(self):
        self._f = PchipInterpolator(self.log_d, self.loss, extrapolate=False) if self.log_d.size >= 2 else None

    @property
    def usable(self) -> bool:
        return self._f is not None and self.loss[0] > self.loss[-1]

    @property
    def d_max(self) -> float:
        return float(np.exp(self.log_d[-1]))

    def covers(self, loss: float) -> bool:
        return self.usable and self.loss[-1] <= loss <= self.loss[0]

    def loss_at(self, d) -> np.ndarray:
        return self._f(np.log(d)) if self._f is not None else np.full(np.shape(d), np.nan)

    def log_slope(self, d) -> np.ndarray:
        """d ln L / d ln D of the curve at D (negative where the loss falls; NaN outside the range)."""
        if self._f is None:
            return np.full(np.shape(d), np.nan)
        return self._f.derivative()(np.log(d)) / self._f(np.log(d))

    def invert(self, loss: float) -> float:
        """D with curve(D) = loss; NaN when `loss` is outside the measured range."""
        if not self.covers(loss):
            return np.nan
        # the first knot at or below `loss`: a flat (pooled) stretch maps to its smallest D
        i = int(np.argmax(self.loss <= loss))
        if self.loss[i] == loss or i == 0:
            return float(np.exp(self.log_d[i]))
        lo, hi = self.log_d[i - 1], self.log_d[i]
        return float(np.exp(brentq(lambda x: float(self._f(x)) - loss, lo, hi, xtol=1e-13, rtol=1e-14)))


def scratch_curves(table: pd.DataFrame) -> dict[float, ScratchCurve]:
    """One monotone curve per N from the usable from-scratch rows of `table`."""
    out = {}
    scratch = table[(table["regime"] == "scratch") & ~table["excluded"]]
    for n, grp in scratch.groupby("N"):
        g = grp.groupby("D_F")["loss"].agg(["mean", "count"]).sort_index()
        mean = g["mean"].to_numpy(float)
        fitted = isotonic_regression(mean, weights=g["count"].to_numpy(float), increasing=False).x
        out[float(n)] = ScratchCurve(float(n), np.log(g.index.to_numpy(float)), fitted, mean)
    return out


@dataclass
class KaplanBlock:
    """The from-scratch law used to invert out-of-range losses: its best parameters and its
    bootstrap refits, each (N_c, D_c, α_N, α_D); `source` names the fit they come from."""

    best: tuple[float, float, float, float]
    boot: np.ndarray  # (B, 4), may be empty
    source: str

    def invert(self, loss: float, n: float) -> tuple[float, np.ndarray]:
        d_e = float(laws.kaplan_invert(loss, n, *self.best))
        if not len(self.boot):
            return d_e, np.array([])
        b = self.boot
        return d_e, laws.kaplan_invert(loss, n, b[:, 0], b[:, 1], b[:, 2], b[:, 3])

    def data_needed(self, n: float) -> float:
        return float(laws.kaplan_data_needed(n, *self.best))


def add_effective_data(table: pd.DataFrame, curves: dict[float, ScratchCurve], law: KaplanBlock | None = None,
                       method: str = "interp", low_data_fraction: float | None = 0.1, ci: float = 0.95) -> pd.DataFrame:
    """Return a copy of `table` with D_E, D_T (and its interval where model-based), multiplier,
    fraction, D_N (data for 99% of the infinite-data loss), D_E_method, flags and in_transfer_fit
    for the usable fine-tuned rows."""
    t = table.copy()
    for col in ("D_E", "D_T", "D_T_lo", "D_T_hi", "multiplier", "fraction", "D_N", "scratch_loss_at_D_F"):
        t[col] = np.nan
    t["flags"] = ""
    t["D_E_method"] = ""
    t["in_transfer_fit"] = False
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    for i in t.index[(t["regime"] == "finetune") & ~t["excluded"]]:
        n, d_f, loss = float(t.at[i, "N"]), float(t.at[i, "D_F"]), float(t.at[i, "loss"])
        flags, d_e, boot = [], np.nan, np.array([])
        curve = curves.get(n)
        if method == "kaplan" and law is not None:  # the user's choice for every point: not a fallback
            d_e, boot = law.invert(loss, n)
            t.at[i, "D_E_method"] = law.source
        elif curve is None or not curve.usable:
            flags.append(FLAG_NO_CURVE)
        elif not curve.covers(loss):
            flags.append(FLAG_BELOW if loss < curve.loss[-1] else FLAG_ABOVE)
        else:
            d_e = curve.invert(loss)
            t.at[i, "D_E_method"] = "interpolated"
        if curve is not None and curve.usable and curve.log_d[0] <= np.log(d_f) <= curve.log_d[-1]:
            t.at[i, "scratch_loss_at_D_F"] = float(curve.loss_at(d_f))
        if method != "kaplan" and np.isnan(d_e) and law is not None:
            d_e, boot = law.invert(loss, n)
            flags.append(FLAG_MODEL)
            t.at[i, "D_E_method"] = law.source
        if law is not None and np.isnan(d_e) and t.at[i, "D_E_method"] != "interpolated":
            flags.append(FLAG_BEYOND_FLOOR)
        if law is not None:
            t.at[i, "D_N"] = law.data_needed(n)
        t.at[i, "D_E"] = d_e
        if np.isfinite(d_e):
            d_t = d_e - d_f
            t.at[i, "D_T"] = d_t
            t.at[i, "multiplier"] = laws.effective_multiplier(d_f, d_t)
            t.at[i, "fraction"] = laws.transfer_fraction(d_f, d_t)
            finite = boot[np.isfinite(boot)]
            if len(finite) >= 0.5 * len(boot) > 0:  # most refits give a D_E: an interval means something
                t.at[i, "D_T_lo"], t.at[i, "D_T_hi"] = np.percentile(finite - d_f, q)
            if d_t <= 0:
                flags.append(FLAG_OSSIFIED)
        else:
            at_df = t.at[i, "scratch_loss_at_D_F"]
            if np.isfinite(at_df) and loss >= at_df:
                flags.append(FLAG_OSSIFIED)  # worse than from scratch at the same data: D_T ≤ 0
            flags.append(FLAG_NO_DE)
        d_n = t.at[i, "D_N"]
        if low_data_fraction is not None and np.isfinite(d_n) and d_f > low_data_fraction * d_n:
            flags.append(FLAG_HIGH_DATA)
        t.at[i, "flags"] = ";".join(dict.fromkeys(flags)) or FLAG_OK
        t.at[i, "in_transfer_fit"] = not flags
    return t


def bootstrap_effective_data(table: pd.DataFrame, rows: pd.DataFrame, n_boot: int, seed: int,
                             scratch_sigma: Callable[[float], float],
                             finetune_sigma: Callable[[float], float | None] | None = None,
                             grid: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """D_E of `rows` (fine-tuned runs) in `n_boot` replicates that redraw both regimes.

    Fine-tuned runs: resampled whole (multinomial weights), and their ln loss perturbed by
    `finetune_sigma(N)` where seed noise was measured (None: left as measured). From-scratch runs:
    their D grid is a fixed design, so each N's curve keeps its D values; at a D with several seeds
    the seeds are resampled, a single run's ln loss is perturbed by `scratch_sigma(N)`; the curve is
    rebuilt (isotonic, PCHIP) and every loss inverted again. A noisy scratch curve moves every D_E at
    its N together, which the exponent β reads; holding the curve fixed would hide that.
    Returns (D_E, counts), each (n_boot, len(rows)); D_E is NaN where a replicate cannot invert."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), rng.integers(0, n, (n_boot, n)).ravel()), 1.0)
    d_e = np.full((n_boot, n), np.nan)
    scratch = table[(table["regime"] == "scratch") & ~table["excluded"]]
    measured, sizes = rows["loss"].to_numpy(float), rows["N"].to_numpy(float)
    spread = np.array([(finetune_sigma(s) or 0.0) if finetune_sigma is not None else 0.0 for s in sizes])
    loss = measured[None, :] * np.exp(rng.normal(0.0, 1.0, (n_boot, n)) * spread[None, :])
    for size, grp in scratch.groupby("N"):
        at = np.flatnonzero(sizes == float(size))
        by_d = [np.log(g["loss"].to_numpy(float)) for _, g in grp.groupby("D_F")]
        if not len(at) or len(by_d) < 2:
            continue
        sigma = scratch_sigma(float(size))
        log_d = np.log(np.sort(grp["D_F"].unique().astype(float)))
        draws = np.column_stack([
            runs[rng.integers(0, len(runs), n_boot)] if len(runs) > 1 else runs[0] + rng.normal(0, sigma, n_boot)
            for runs in by_d])  # (n_boot, number of D): one redrawn ln loss per D
        dense = np.linspace(log_d[0], log_d[-1], grid)
        for b in range(n_boot):
            fitted = isotonic_regression(np.exp(draws[b]), increasing=False).x
            if fitted[0] <= fitted[-1]:
                continue
            values = PchipInterpolator(log_d, fitted)(dense)
            lb = loss[b, at]
            inside = (lb >= fitted[-1]) & (lb <= fitted[0])
            d_e[b, at[inside]] = np.exp(np.interp(-lb[inside], -values, dense))
    return d_e, counts


def bootstrap_transferred(table: pd.DataFrame, rows: pd.DataFrame, n_boot: int, seed: int,
                          scratch_sigma: Callable[[float], float],
                          finetune_sigma: Callable[[float], float | None] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """ln D_T of `rows` in the replicates of bootstrap_effective_data, as (Y, W) for fit_law's
    bootstrap_targets: W = 0 where a replicate cannot invert the loss (or D_T ≤ 0)."""
    d_e, counts = bootstrap_effective_data(table, rows, n_boot, seed, scratch_sigma, finetune_sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(d_e - rows["D_F"].to_numpy(float)[None, :])
    return y, np.where(np.isfinite(y), counts, 0.0)
