"""Does a law fit within the measured noise? Its residuals against the seed-to-seed noise of the
same runs: a law whose misfit exceeds the noise is rejected, and its verdicts are not shown.

  χ² = Σ (r_i / σ_i)²  with r_i the log-space residual of point i and σ_i one run's measured noise
  there (ln L: the seed noise of its regime and size; ln D_T: the fine-tune's and the scratch
  curve's loss noise read through the curve's slope at D_E, √(σ_ft² + σ_sc²) / |d ln L/d ln D|).
  The noise is itself estimated from a few seeds (ν degrees of freedom), so the test is the
  lack-of-fit F test: (χ²/dof) ~ F(dof, ν) under a law that fits; rejected where p < LEVEL.
A law's residual is never taken for the noise: where no seeds repeat, the misfit cannot be tested,
and the report says so instead of passing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.05  # reject a law when a misfit this large would arise from seed noise less than 5% of the time


@dataclass(frozen=True)
class Goodness:
    points: int
    dof: int  # points − parameters
    rms_log: float  # RMS of the log-space residuals
    noise_rms: float  # RMS of the per-point noise σ_i (NaN: not measured)
    noise_dof: int  # degrees of freedom of the noise estimate
    chi2_per_dof: float
    p_value: float
    verdict: str  # fits | rejected | untested

    @property
    def rejected(self) -> bool:
        return self.verdict == "rejected"

    def brief(self) -> str:
        """For a table cell: '2.1% RMS, within the noise 1.2%' / '… exceeds …: rejected' / '…, untested (no seeds)'."""
        if self.verdict == "untested":
            return f"{self.rms_log:.1%} RMS, untested (no seeds)"
        return f"{self.rms_log:.1%} RMS vs noise {self.noise_rms:.1%}: " + ("rejected" if self.rejected else "not rejected")

    def describe(self) -> str:
        if self.verdict == "untested":
            return (f"misfit {self.rms_log:.2%} RMS; noise not measured here (no repeated seeds), so the misfit "
                    "cannot be tested: add seeds (analyze.py action=plan)")
        word = "exceeds" if self.rejected else "is not significantly larger than"
        return (f"misfit {self.rms_log:.2%} RMS {word} the measured noise {self.noise_rms:.2%} "
                f"(χ²/dof {self.chi2_per_dof:.2g} on {self.dof} dof, noise on {self.noise_dof}; p = {self.p_value:.2g})")


def goodness(residuals: np.ndarray, sigma: np.ndarray, n_params: int, noise_dof: int) -> Goodness:
    """Test log-space `residuals` against per-point noise `sigma` (NaN where not measured)."""
    r, s = np.asarray(residuals, float), np.asarray(sigma, float)
    keep = np.isfinite(r)
    r, s = r[keep], s[keep]
    n = len(r)
    dof = n - n_params
    rms = float(np.sqrt(np.mean(r ** 2))) if n else float("nan")
    if n == 0 or dof <= 0 or not np.all(np.isfinite(s) & (s > 0)) or noise_dof <= 0:
        noise = float(np.sqrt(np.mean(s[np.isfinite(s)] ** 2))) if np.isfinite(s).any() else float("nan")
        return Goodness(n, dof, rms, noise, noise_dof, float("nan"), float("nan"), "untested")
    ratio = float(np.sum((r / s) ** 2) / dof)
    p = float(stats.f.sf(ratio, dof, noise_dof))
    return Goodness(n, dof, rms, float(np.sqrt(np.mean(s ** 2))), noise_dof, ratio, p,
                    "rejected" if p < LEVEL else "fits")
