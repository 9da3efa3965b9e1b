"""The mix study's checks against the data alone: the run noise measured from seeds on the ratio
grid, the mixing law's misfit tested against it (never its residual taken for the noise), how far
apart the mixtures are in units of that noise, the grid's measured best ratio, and whether r* stands.
The functions take the study (studies/mixing.MixStudy) and fill or read its fields."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit.goodness import goodness
from transfer_lab.analysis.fit.mix_fitting import MixLaw


def raw_best(g: pd.DataFrame, sigma: float) -> tuple[float, float, float]:
    """The best ratio the grid measured, model-free: the ratio of most D_T, and the range in which the
    best can lie: from the grid ratio below the lowest to the one above the highest ratio whose D_T is
    not below the best's by more than the seed noise allows (95%, two-sided)."""
    ok = g[g["D_T"] > 0].sort_values("r")
    if ok.empty:
        return (np.nan, np.nan, np.nan)
    top = ok.loc[ok["D_T"].idxmax()]
    gap = np.log(top["D_T"] / ok["D_T"])
    sd = sigma * np.sqrt(1 / top["seeds"] + 1 / ok["seeds"])
    tied = ok.loc[gap <= 1.96 * sd, "r"].to_numpy(float)
    grid = ok["r"].to_numpy(float)
    below, above = grid[grid < tied.min()], grid[grid > tied.max()]
    return (float(top["r"]), float(below.max()) if len(below) else float(tied.min()),
            float(above.min()) if len(above) else float(tied.max()))


def r_star_verdict(study, cell: MixLaw) -> tuple[bool, str]:
    """(does r* stand as a verdict, the caveat or the reason it does not): it stands where the mixing law
    is not rejected by the seed noise and r* lies in the range the grid's measurements allow."""
    g = study.goodness.get(study.law)
    if g is not None and g.rejected:
        return False, f"the mixing law is rejected by the data ({g.describe()})"
    best, lo, hi = study.raw_best.get((cell.n, cell.d_f), (np.nan,) * 3)
    r = cell.best[study.axis[1]]
    if np.isfinite(best) and not lo - 1e-9 <= r <= hi + 1e-9:
        return False, (f"law and data disagree: the grid measured its most D_T at {best:.0%}, and r* = {r:.0%} lies "
                       f"outside the {lo:.0%}–{hi:.0%} the measurements allow")
    return True, "" if g is not None else "the mixing law's misfit is untested (no seeds on the ratio grid)"


def measure_seed_noise(rows: pd.DataFrame) -> dict:
    """The noise of one run's ln D_T, from seeds on the ratio grid: the pooled standard deviation of
    ln D_T between seeds of one cell (N, D_F, mixture), with its degrees of freedom."""
    spread = [(float(np.var(np.log(g["D_T"]), ddof=1)), len(g) - 1)
              for _, g in rows[rows["D_T"] > 0].groupby(["N", "D_F", "source_mix"]) if len(g) >= 2]
    dof = sum(d for _, d in spread)
    if not dof:
        return {}
    return {"sigma": float(np.sqrt(sum(v * d for v, d in spread) / dof)), "dof": dof, "cells": len(spread)}


def noise_and_goodness(study, plain: list, data: list[dict]) -> float:
    """The run noise the r* bootstrap uses (seeds where measured; else the residual, labelled), and the
    chosen law's misfit tested against the seed noise."""
    sn = study.seed_noise
    if not sn:
        study.messages.append("no seeds on the ratio grid: the mixing law's misfit cannot be tested, and its residual "
                              "stands in for run noise (an upper bound: misfit counted as noise); add seeds: "
                              f"python train.py -m experiment={study.experiment or 'mix_text_code_python'} seed=1,2 ...")
        study.noise[study.law] = study.residual[study.law]
        return study.noise[study.law]
    residuals = np.concatenate([f.predicted - f.observed for f in plain if f.ok])
    seeds = np.concatenate([d["seeds"][np.isfinite(d["lnDT"])] for d, f in zip(data, plain) if f.ok])
    params = sum(f.n_params for f in plain if f.ok)
    study.goodness[study.law] = goodness(residuals, sn["sigma"] / np.sqrt(seeds), params, sn["dof"])
    study.noise[study.law] = sn["sigma"]
    return sn["sigma"]


def spread(n: float, d_f: float, g: pd.DataFrame, noise: dict) -> dict:
    """How far apart the ratios' D_T are at one (N, D_F): the largest over the smallest, and the two
    ends (r = 0 and 1) in units of their difference's seed noise."""
    ok = g[g["D_T"] > 0]
    out = {"N": n, "D_F": d_f, "ratios": len(ok), "max_over_min": float(ok["D_T"].max() / ok["D_T"].min()) if len(ok) else np.nan}
    ends = ok[ok["r"].isin((0.0, 1.0))].set_index("r")
    if len(ends) == 2 and noise:
        diff = float(np.log(ends.loc[1.0, "D_T"] / ends.loc[0.0, "D_T"]))
        sd = noise["sigma"] * np.sqrt(1 / ends.loc[0.0, "seeds"] + 1 / ends.loc[1.0, "seeds"])
        out |= {"ends_ratio": float(np.exp(diff)), "ends_z": diff / sd, "ends_seeds": (int(ends.loc[0.0, "seeds"]),
                                                                                        int(ends.loc[1.0, "seeds"]))}
    return out
