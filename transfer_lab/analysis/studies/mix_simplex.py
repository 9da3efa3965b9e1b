"""Three or more sources, RegMix-style: mixtures on the simplex at the smallest size, mixing laws of
ln D_T chosen by leave-one-mixture-out, the predicted best mixture per D_F, and whether the small
size's ranking of mixtures holds at a larger size (held-out runs there)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import specs
from transfer_lab.analysis.fit.fitting import fit_law
from transfer_lab.analysis.fit.mix_fitting import (
    best_on,
    loo_rmse,
    mix_data,
    pooled_noise,
    refit,
    simplex_grid,
    weight_columns,
)

SIMPLEX_LAWS = {"simplex_exponential": specs.simplex_exponential_spec,
                "simplex_quadratic": specs.simplex_quadratic_spec, "simplex_linear": specs.simplex_linear_spec}


def fit_simplex(t: pd.DataFrame, n_bootstrap: int, seed: int, ci: float) -> dict:
    """The mixtures of three or more sources at the smallest size they were trained at: the mixing law
    chosen by leave-one-mixture-out, its best mixture per D_F, and the ranking at larger sizes ({} if none)."""
    cols = weight_columns(t)
    support = (t[[f"w_{c}" for c in cols]] > 0).sum(axis=1)
    wide = t[(support >= 3) & ~t["held_out"]]
    if wide.empty:
        return {}
    n_small = float(wide["N"].min())
    at = t[np.isclose(t["N"], n_small) & ~t["held_out"]]
    # every source mixed at that size; english (the reference) first
    sources = sorted((c for c in cols if (at[f"w_{c}"] > 0).any()), key=lambda s: (s != "english", s))
    groups = []
    for d_f, g in at.groupby("D_F"):
        g = g.groupby("source_mix").agg(D_T=("D_T", "mean"), **{f"w_{c}": (f"w_{c}", "first") for c in sources},
                                        model_based=("D_E_method", lambda m: int((m != "interpolated").sum())))
        g = g.reset_index()
        groups.append((float(d_f), mix_data(g, sources), (g[[f"w_{c}" for c in sources]].max(axis=1) < 1).to_numpy(),
                       int(g["model_based"].sum())))
    selection = loo_rmse(SIMPLEX_LAWS, [(d, h) for _, d, h, _ in groups], ci, sources)
    law = min(selection, key=lambda k: np.nan_to_num(selection[k], nan=np.inf))
    build = SIMPLEX_LAWS[law]
    sigma = pooled_noise([fit_law(build(d, sources), d, n_bootstrap=0, ci=ci) for _, d, _, _ in groups])
    grid = simplex_grid(len(sources))
    best = {}
    for i, (d_f, data, _, model_based) in enumerate(groups):
        fit = refit(build, data, sigma, n_bootstrap, seed + 100 + i, ci, sources)
        if fit.ok:
            best[d_f] = best_on(fit, grid, sources, n_small, d_f, ci, "W", model_based)
    return {"N": n_small, "sources": sources, "selection": selection, "law": law, "best": best, "noise": sigma,
            "mixtures": int(at["source_mix"].nunique()), "ranking": _ranking(t, n_small, best)}


def _ranking(t: pd.DataFrame, n_small: float, best: dict) -> list[dict]:
    """Mixtures measured at the small size and at a larger one (held-out runs there): does the order of
    their D_T hold, and where does the predicted best land?"""
    out = []
    for n_big in sorted(t.loc[t["N"] > n_small, "N"].unique()):
        for d_f in sorted(best):
            small = t[np.isclose(t["N"], n_small) & np.isclose(t["D_F"], d_f)].groupby("source_mix")["D_T"].mean()
            big_rows = t[np.isclose(t["N"], n_big) & np.isclose(t["D_F"], d_f)]
            big = big_rows.groupby("source_mix")["D_T"].mean()
            both = small.index.intersection(big.index)
            if len(both) < 4 or not big_rows["held_out"].any():
                continue
            rho = spearmanr(small[both], big[both])
            predicted = collect.mix_label({s: w for s, w in sorted(best[d_f].best.items()) if w > 0})
            out.append({"N_small": n_small, "N": float(n_big), "D_F": d_f, "mixtures": len(both),
                        "spearman": float(rho.statistic), "p_value": float(rho.pvalue), "predicted_best": predicted,
                        "predicted_best_rank": int((big > big[predicted]).sum()) + 1 if predicted in big.index else None,
                        "of": len(big), "best_at_N": big.idxmax(), "best_D_T": float(big.max()),
                        "predicted_best_D_T": float(big[predicted]) if predicted in big.index else float("nan")})
    return out
