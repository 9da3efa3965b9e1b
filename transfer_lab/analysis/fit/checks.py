"""Checks a measurement must pass before it is fitted: loss falls with data.

At one N (and one pre-training budget), a run given more target data must not end with a higher
loss than a run given less, beyond seed noise. A rise is a bug to explain (a run stopped early, a
schedule that did not fit the subset), not a point to fit: the rising run is flagged, left out of
curves and fits, and named in the report.

Seed noise is the pooled standard deviation of ln(loss) between seeds of one cell, measured per
regime and model size where the sweep has replicate seeds (NoiseModel); `floor` (relative)
applies where it has none, or where the noise measured is smaller. The same measured noise is what
the bootstrap perturbs single runs by (effective_data.bootstrap_effective_data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

FLAG_NON_MONOTONE = "non_monotone"
CURVE = ["regime", "N", "pretrain_budget"]


@dataclass(frozen=True)
class Violation:
    regime: str
    n: float
    pretrain_budget: float  # NaN for from-scratch curves
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


def _spread(rows: pd.DataFrame) -> list[tuple[float, int]]:
    """(variance of ln loss, degrees of freedom) of each cell (curve and D) run with several seeds."""
    cells = rows.groupby(CURVE + ["D_F"], dropna=False)["loss"]
    return [(float(np.var(np.log(g.to_numpy(float)), ddof=1)), len(g) - 1) for _, g in cells if len(g) >= 2]


def _pooled(spread: list[tuple[float, int]]) -> tuple[float, int]:
    if not spread:
        return float("nan"), 0
    dof = sum(d for _, d in spread)
    return float(np.sqrt(sum(v * d for v, d in spread) / dof)), len(spread)


def seed_noise(rows: pd.DataFrame) -> tuple[float, int]:
    """(pooled std of ln loss between seeds of one cell, number of cells with ≥ 2 seeds)."""
    return _pooled(_spread(rows))


@dataclass
class NoiseModel:
    """Seed-to-seed noise of one run's ln loss, measured per regime and size where seeds repeat.

    `sigma(regime, N)`: measured at that (regime, N) from ≥ MIN_CELLS repeated cells; else pooled
    over the regime's sizes (≥ MIN_CELLS cells); else None (not measured)."""

    by_size: dict = field(default_factory=dict)  # (regime, N) -> (sigma, cells)
    by_regime: dict = field(default_factory=dict)  # regime -> (sigma, cells)
    rows: pd.DataFrame | None = None  # the runs it was measured on
    MIN_CELLS = 2

    @classmethod
    def measure(cls, rows: pd.DataFrame) -> "NoiseModel":
        model = cls(rows=rows)
        for (regime, n), g in rows.groupby(["regime", "N"]):
            model.by_size[(str(regime), float(n))] = seed_noise(g)
        for regime, g in rows.groupby("regime"):
            model.by_regime[str(regime)] = seed_noise(g)
        return model

    def sigma(self, regime: str, n: float) -> float | None:
        sigma, cells = self.by_size.get((regime, float(n)), (float("nan"), 0))
        if cells >= self.MIN_CELLS:
            return sigma
        sigma, cells = self.by_regime.get(regime, (float("nan"), 0))
        return sigma if cells >= self.MIN_CELLS else None

    def dof(self, regime: str, n: float) -> int:
        """Degrees of freedom behind sigma(regime, n): Σ (seeds − 1) over the cells it pooled."""
        rows = self.rows
        if rows is None or not len(rows):
            return 0
        at = rows[(rows["regime"] == regime) & (rows["N"] == float(n))]
        spread = _spread(at) if len(_spread(at)) >= self.MIN_CELLS else _spread(rows[rows["regime"] == regime])
        return int(sum(d for _, d in spread))

    def source(self, regime: str, n: float) -> str:
        cells = self.by_size.get((regime, float(n)), (0, 0))[1]
        if cells >= self.MIN_CELLS:
            return f"seeds of {cells} cells at this N"
        cells = self.by_regime.get(regime, (0, 0))[1]
        return f"seeds of {cells} {regime} cells, pooled over N" if cells >= self.MIN_CELLS else "not measured"

    @property
    def measured(self) -> bool:
        return any(cells >= self.MIN_CELLS for _, cells in self.by_regime.values())


def monotone_tolerance(rows: pd.DataFrame, floor: float) -> Callable[[str, float], float]:
    """Relative rise allowed between two seed-averaged points of the curve (regime, N): twice the
    noise of their difference (2·√2·σ, σ measured for that regime and size, or pooled over its
    sizes), never below `floor`."""
    noise = NoiseModel.measure(rows)

    def tolerance(regime: str, n: float) -> float:
        sigma = noise.sigma(regime, n)
        return floor if sigma is None else max(floor, 2 * np.sqrt(2) * sigma)

    return tolerance


def violations(rows: pd.DataFrame, tolerance: float | Callable[[str, float], float]) -> list[Violation]:
    """Every point of a curve (regime, N, budget; seeds averaged) that lies above the lowest loss
    at a smaller data size by more than the curve's tolerance."""
    out = []
    for (regime, n, budget), grp in rows.groupby(CURVE, dropna=False):
        tol = tolerance(str(regime), float(n)) if callable(tolerance) else tolerance
        mean = grp.groupby("D_F")["loss"].mean().sort_index()
        best_d, best = None, np.inf
        for d, loss in mean.items():
            if best_d is not None and loss > best * (1 + tol):
                out.append(Violation(str(regime), float(n), float(budget), float(best_d), float(best), float(d),
                                     float(loss), tol))
            if loss < best:
                best_d, best = d, loss
    return out


def mark_violations(table: pd.DataFrame, found: list[Violation]) -> pd.DataFrame:
    """Exclude the rising runs from curves and fits (kept in the table, with the reason)."""
    t = table.copy()
    for v in found:
        same_budget = t["pretrain_budget"].isna() if np.isnan(v.pretrain_budget) else t["pretrain_budget"] == v.pretrain_budget
        hit = (t["regime"] == v.regime) & (t["N"] == v.n) & (t["D_F"] == v.d_high) & same_budget & ~t["excluded"]
        t.loc[hit, "excluded"] = True
        t.loc[hit, "reason"] = f"{FLAG_NON_MONOTONE}: {v.describe()}"
    return t


def scratch_noise(noise: NoiseModel, smooth_rms: float | None, floor: float = 1e-3):
    """σ(N) of one from-scratch run's ln loss for the bootstrap, and where it comes from: measured
    between seeds (this N, or pooled over N); else the RMS residual of a smooth from-scratch law
    fitted to the same runs (an upper bound: its misfit is counted as noise); never below `floor`."""
    fallback = max(smooth_rms, floor) if smooth_rms is not None and np.isfinite(smooth_rms) else floor
    why = ("residual of the from-scratch law (no repeated seeds)" if smooth_rms is not None
           and np.isfinite(smooth_rms) else "the floor (no repeated seeds, no from-scratch law)")

    def sigma(n: float) -> tuple[float, str]:
        measured = noise.sigma("scratch", n)
        return (max(measured, floor), noise.source("scratch", n)) if measured is not None else (fallback, why)

    return sigma
