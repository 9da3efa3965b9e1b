"""What one analysis of a sweep produces (shared by the driver, the report, the atlas and the plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit.fitting import FitResult

ANCHORS = {"text→python": {"k": 1.9e4, "alpha": 0.18, "beta": 0.38},
           "50% text + 50% code→python": {"k": 2.1e5, "alpha": 0.096, "beta": 0.38}}


@dataclass(frozen=True)
class FitSettings:
    """How one analysis fits: shared by every law it fits and every study built on it."""

    n_bootstrap: int = 1000
    seed: int = 0
    ci: float = 0.95
    huber: float | None = None
    method: str = "interp"  # interp | kaplan: how D_E is read off the from-scratch runs
    low_data_fraction: float | None = 0.1
    loss: str = "per_char"
    monotone_tolerance: float = 0.003


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
    violations: list = field(default_factory=list)  # checks.Violation: curves that rise with data
    agreement: dict = field(default_factory=dict)  # k/alpha/beta: interpolated and unified intervals overlap
    unidentified: list = field(default_factory=list)  # exponents the data cannot pin down, and why
    noise: Any = None  # checks.NoiseModel: seed noise measured per regime and N
    residual_noise: float | None = None  # RMS log residual of the smooth from-scratch law
    noise_effect: dict = field(default_factory=dict)  # k/alpha/beta: (interval with the residual, with measured noise)
    budgets: Any = None  # budgets.BudgetStudy where the sweep has several pre-training budgets
    goodness: dict = field(default_factory=dict)  # (law, group) -> goodness.Goodness: misfit against the noise
    answer: list = field(default_factory=list)  # per measured (N, D_F): the multiplier with its own interval
    next_runs: list = field(default_factory=list)  # the plan's train.py commands that would close the gaps

    def fit(self, name: str) -> FitResult | None:
        f = self.fits.get(name)
        return f if f is not None and f.ok else None

    def rejected(self, law: str, group: str = "") -> bool:
        """The law's misfit exceeds the measured noise: its verdicts are not shown."""
        g = self.goodness.get((law, group))
        return bool(g is not None and g.rejected)


def data_of(rows: pd.DataFrame, target: str | None = None) -> dict[str, np.ndarray]:
    """The arrays the law specs read (see specs.py for the keys)."""
    n = rows["N"].to_numpy(float)
    d = rows["D_F"].to_numpy(float)
    p = rows["pretrain_budget"].to_numpy(float) if "pretrain_budget" in rows else np.full(len(rows), np.nan)
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
