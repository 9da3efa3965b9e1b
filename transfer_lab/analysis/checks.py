"""Checks a measurement must pass before it is fitted: loss falls with data.

At one N (and one pre-training budget), a run given more target data must not end with a higher
loss than a run given less, beyond seed noise. A rise is a bug to explain (a run stopped early, a
schedule that did not fit the subset), not a point to fit: the rising run is flagged, left out of
curves and fits, and named in the report.

Seed noise is the pooled standard deviation of ln(loss) between seeds of one cell, where the
sweep has replicate seeds; `floor` (relative) applies where it has none, or where the noise
measured is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLAG_NON_MONOTONE = "non_monotone"
CURVE = ["regime", "N", "pretrain_chars"]


@dataclass(frozen=True)
class Violation:
    regime: str
    n: float
    pretrain_chars: float  # NaN for from-scratch curves
    d_low: float  # the smaller data size, where the curve was lower
    loss_low: float
    d_high: float
    loss_high: float
    tolerance: float  # relative

    @property
    def rise(self) -> float:
        return self.loss_high / self.loss_low - 1

    def describe(self) -> str:
        return (f"{self.regime} N={self.n:.3g}: loss {self.loss_low:.4f} at D={self.d_low:.3g} but {self.loss_high:.4f} "
                f"at D={self.d_high:.3g} (+{self.rise:.2%}, beyond the ±{self.tolerance:.2%} seed noise)")


def seed_noise(rows: pd.DataFrame) -> tuple[float, int]:
    """(pooled std of ln loss between seeds of one cell, number of cells with ≥ 2 seeds)."""
    cells = rows.groupby(CURVE + ["D_F"], dropna=False)["loss"]
    spread = [(np.var(np.log(g.to_numpy(float)), ddof=1), len(g) - 1) for _, g in cells if len(g) >= 2]
    if not spread:
        return float("nan"), 0
    dof = sum(d for _, d in spread)
    return float(np.sqrt(sum(v * d for v, d in spread) / dof)), len(spread)


def monotone_tolerance(rows: pd.DataFrame, floor: float) -> float:
    """Relative rise allowed between two seed-averaged points: twice the noise of their
    difference (2·√2·σ for single seeds), never below `floor`."""
    sigma, cells = seed_noise(rows)
    return max(floor, 2 * np.sqrt(2) * sigma) if cells else floor


def violations(rows: pd.DataFrame, tolerance: float) -> list[Violation]:
    """Every point of a curve (regime, N, budget; seeds averaged) that lies above the lowest loss
    at a smaller data size by more than `tolerance`."""
    out = []
    for (regime, n, budget), grp in rows.groupby(CURVE, dropna=False):
        mean = grp.groupby("D_F")["loss"].mean().sort_index()
        best_d, best = None, np.inf
        for d, loss in mean.items():
            if best_d is not None and loss > best * (1 + tolerance):
                out.append(Violation(str(regime), float(n), float(budget), float(best_d), float(best), float(d),
                                     float(loss), tolerance))
            if loss < best:
                best_d, best = d, loss
    return out


def mark_violations(table: pd.DataFrame, found: list[Violation]) -> pd.DataFrame:
    """Exclude the rising runs from curves and fits (kept in the table, with the reason)."""
    t = table.copy()
    for v in found:
        same_budget = t["pretrain_chars"].isna() if np.isnan(v.pretrain_chars) else t["pretrain_chars"] == v.pretrain_chars
        hit = (t["regime"] == v.regime) & (t["N"] == v.n) & (t["D_F"] == v.d_high) & same_budget & ~t["excluded"]
        t.loc[hit, "excluded"] = True
        t.loc[hit, "reason"] = f"{FLAG_NON_MONOTONE}: {v.describe()}"
    return t


def run_noise(rows: pd.DataFrame, smooth_rms: float | None = None, floor: float = 1e-3) -> tuple[float, str]:
    """(the noise of one run's ln loss, where it comes from): measured between seeds where at
    least 3 cells repeat; else the RMS residual of a smooth from-scratch law fitted to the same
    runs (`smooth_rms`: an upper bound, its misfit included); never below `floor`."""
    sigma, cells = seed_noise(rows)
    if cells >= 3:
        return max(sigma, floor), f"seed noise of {cells} repeated cells"
    if smooth_rms is not None and np.isfinite(smooth_rms):
        return max(smooth_rms, floor), "residual of the from-scratch law (no repeated seeds)"
    return floor, "the floor (no repeated seeds, no from-scratch law)"
