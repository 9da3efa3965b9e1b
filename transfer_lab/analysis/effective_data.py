"""Effective data: D_E by inverting the from-scratch curve at the same N, then D_T, multiplier,
fraction and the flags that keep a point out of the transfer-law fit.

Per-N curve (the paper's way): the from-scratch losses at one N, averaged over seeds at equal D,
made non-increasing in D (pool-adjacent-violators), then a monotone PCHIP interpolant of loss
against ln D. Inside the measured loss range the inversion is exact (root of the interpolant).
Outside it, or with method="kaplan", the joint Kaplan fit is inverted instead — flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq

from transfer_lab.analysis import laws

FLAG_OK = "ok"
FLAG_NO_CURVE = "no_scratch_curve"
FLAG_EXTRAP = "extrapolated"
FLAG_OSSIFIED = "ossified"
FLAG_HIGH_DATA = "not_low_data"
FLAG_NO_DE = "no_D_E"


def _decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-increasing fit (pool adjacent violators)."""
    blocks = []  # [mean, weight, count]
    for yi, wi in zip(y, w):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([[m] * c for m, _, c in blocks])


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

    def loss_at(self, d) -> np.ndarray:
        return self._f(np.log(d)) if self._f is not None else np.full(np.shape(d), np.nan)

    def invert(self, loss: float) -> float:
        """D with curve(D) = loss; NaN when `loss` is outside the measured range."""
        if not self.usable or not (self.loss[-1] <= loss <= self.loss[0]):
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
        d = g.index.to_numpy(float)
        out[float(n)] = ScratchCurve(float(n), np.log(d), _decreasing(g["mean"].to_numpy(), g["count"].to_numpy()),
                                     g["mean"].to_numpy())
    return out


def add_effective_data(table: pd.DataFrame, curves: dict[float, ScratchCurve], kaplan: dict | None = None,
                       method: str = "interp", low_data_fraction: float | None = 0.1) -> pd.DataFrame:
    """Return a copy of `table` with D_E, D_T, multiplier, fraction, D_N (data for 99% of the
    infinite-data loss), flags and in_transfer_fit for the usable fine-tuned rows.
    `kaplan`: reported Kaplan parameters {N_c, D_c, alpha_N, alpha_D} or None."""
    t = table.copy()
    for col in ("D_E", "D_T", "multiplier", "fraction", "D_N", "scratch_loss_at_D_F"):
        t[col] = np.nan
    t["flags"] = ""
    t["in_transfer_fit"] = False
    kp = None if kaplan is None else (kaplan["N_c"], kaplan["D_c"], kaplan["alpha_N"], kaplan["alpha_D"])
    rows = t.index[(t["regime"] == "finetune") & ~t["excluded"]]
    for i in rows:
        n, d_f, loss = float(t.at[i, "N"]), float(t.at[i, "D_F"]), float(t.at[i, "loss"])
        flags = []
        curve = curves.get(n)
        d_e = np.nan
        if curve is None or not curve.usable:
            flags.append(FLAG_NO_CURVE)
        else:
            inside = curve.loss[-1] <= loss <= curve.loss[0]
            if not inside:
                flags.append(FLAG_EXTRAP)
            if method == "interp" and inside:
                d_e = curve.invert(loss)
            at_df = float(curve.loss_at(d_f)) if curve.log_d[0] <= np.log(d_f) <= curve.log_d[-1] else np.nan
            t.at[i, "scratch_loss_at_D_F"] = at_df
        if np.isnan(d_e) and kp is not None:
            d_e = float(laws.kaplan_invert(loss, n, *kp))
        if kp is not None:
            t.at[i, "D_N"] = float(laws.kaplan_data_needed(n, *kp))
        t.at[i, "D_E"] = d_e
        if np.isfinite(d_e):
            d_t = d_e - d_f
            t.at[i, "D_T"] = d_t
            t.at[i, "multiplier"] = laws.effective_multiplier(d_f, d_t)
            t.at[i, "fraction"] = laws.transfer_fraction(d_f, d_t)
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
