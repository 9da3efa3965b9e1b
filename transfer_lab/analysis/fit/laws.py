"""The scaling laws as small pure numpy functions (see ../shared/science.md).

Every function broadcasts: pass data as 1-D arrays and parameters as scalars, or parameters
as column vectors of shape (B, 1) to evaluate B parameter sets at once (bootstrap, grids).
Units are whatever the caller uses consistently (the fitters rescale N and D to millions).
"""

from __future__ import annotations

import numpy as np


def transfer_dt(d_f, n, k, alpha, beta):
    """Hernandez et al. Eq. 1.1: effective data transferred D_T = k·D_F^α·N^β."""
    return k * np.power(d_f, alpha) * np.power(n, beta)


def effective_multiplier(d_f, d_t):
    """(D_F + D_T)/D_F: how many times larger the fine-tuning set effectively is."""
    return (np.asarray(d_f, float) + d_t) / d_f


def transfer_fraction(d_f, d_t):
    """Fraction of the effective data that came from pre-training: D_T/(D_F + D_T)."""
    return d_t / (np.asarray(d_f, float) + d_t)


def fraction_logistic(n, n_star, beta):
    """App. C 'fit the fits': D_T/(D_F + D_T) = 1/(1 + (N*/N)^β) at fixed D_F."""
    return 1.0 / (1.0 + np.power(n_star / n, beta))


def kaplan_loss(n, d, n_c, d_c, alpha_n, alpha_d):
    """Kaplan et al. Eq. 1.5: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D."""
    return np.power(np.power(n_c / n, alpha_n / alpha_d) + d_c / d, alpha_d)


def kaplan_loss_inf(n, n_c, alpha_n):
    """L(N, ∞) = (N_c/N)^α_N, the floor no amount of data gets below at size N."""
    return np.power(n_c / n, alpha_n)


def kaplan_invert(loss, n, n_c, d_c, alpha_n, alpha_d):
    """D with L(N, D) = loss: D_c / (L^(1/α_D) − (N_c/N)^(α_N/α_D)); NaN where L ≤ L(N, ∞)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.power(loss, 1.0 / alpha_d) - np.power(n_c / n, alpha_n / alpha_d)
        return np.where(denom > 0, d_c / np.where(denom > 0, denom, 1.0), np.nan)


def kaplan_data_needed(n, n_c, d_c, alpha_n, alpha_d, within=0.01):
    """D(N): data to come within `within` (1%) of the infinite-data loss at size N."""
    floor = kaplan_loss_inf(n, n_c, alpha_n)
    return kaplan_invert(floor * (1.0 + within), n, n_c, d_c, alpha_n, alpha_d)


def chinchilla_loss(n, d, e, a, b, alpha, beta):
    """Hoffmann et al.: L = E + A/N^α + B/D^β."""
    return e + a / np.power(n, alpha) + b / np.power(d, beta)


def unified_loss(n, d_f, pretrained, n_c, d_c, alpha_n, alpha_d, k, alpha, beta):
    """Kaplan's L(N, D) with D → D_F + k·D_F^α·N^β for pre-trained runs (pretrained = 1),
    D → D_F for from-scratch runs (pretrained = 0)."""
    d_eff = d_f + pretrained * transfer_dt(d_f, n, k, alpha, beta)
    return kaplan_loss(n, d_eff, n_c, d_c, alpha_n, alpha_d)


def gap_loss(p, f, a, alpha, g, beta, e):
    """Barnett 2024 transfer-gap law: L(p, f) = (A·p^−α + G)·f^−β + E."""
    return (a * np.power(p, -alpha) + g) * np.power(f, -beta) + e


def rectified_loss(d, b, d_l, beta, e):
    """Lin et al. 2024 rectified fine-tuning law: L(D) = B/(D_l + D^β) + E."""
    return b / (d_l + np.power(d, beta)) + e


def data_for_n_trade(alpha, beta, n_factor=10.0):
    """How many times more D_F buys the same D_T as `n_factor`× more N: n_factor^(β/α)."""
    return np.power(n_factor, np.asarray(beta, float) / alpha)


def kaplan_log_loss(log_n, log_d, log_n_c, log_d_c, alpha_n, alpha_d):
    """ln L of Kaplan's law from natural logs of N, D, N_c, D_c (no overflow for large N_c)."""
    return alpha_d * np.logaddexp((log_n_c - log_n) * alpha_n / alpha_d, log_d_c - log_d)


# Mixing laws: the data transferred D_T as a function of the pre-training mixture, at one (N, D_F).
# Two sources: r is the second source's weight; several: one weight array per source (summing to 1).
def mix_exponential(r, c, k, t):
    """Ye et al. 2024's form (Data Mixing Laws, for loss there): y(r) = c + k·exp(t·r). Monotone in r:
    its best mixture is always a pure source."""
    return c + k * np.exp(t * np.asarray(r, float))


def mix_log_quadratic(r, a, b, q):
    """ln y(r) = a + b·r + q·r²: the simplest law whose best mixture can lie inside (q < 0 for D_T)."""
    r = np.asarray(r, float)
    return np.exp(a + b * r + q * r * r)


def simplex_exponential(w, c, k, t):
    """Ye et al.'s form over a simplex: y(w) = c + k·exp(Σ_j t_j·w_j); `w` one weight array per source,
    `t` one coefficient each (one can be 0: Σ w = 1 folds a common shift of t into k)."""
    return c + k * np.exp(sum(t_j * w_j for t_j, w_j in zip(t, w)))


def simplex_log_quadratic(w, linear, pairs):
    """Scheffé's quadratic mixture model in log space: ln y = Σ_j b_j·w_j + Σ_{j<l} b_jl·w_j·w_l; `w` one weight
    array per source, `pairs` the b_jl in the order of itertools.combinations(range(len(w)), 2)."""
    cross = [w[j] * w[m] for j in range(len(w)) for m in range(j + 1, len(w))]
    return np.exp(sum(b * w_j for b, w_j in zip(linear, w)) + sum(b * x for b, x in zip(pairs, cross)))


def mixture_dt_arithmetic(weights, pure_dt):
    """The atlas as a prior: a mixture transfers the weighted mean of its pure sources' D_T."""
    return np.sum(np.asarray(weights, float) * np.asarray(pure_dt, float), axis=-1)


def mixture_dt_geometric(weights, pure_dt):
    """The atlas as a prior, in log space: exp(Σ w_j·ln D_T_j) (needs every D_T_j > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.sum(np.asarray(weights, float) * np.log(np.asarray(pure_dt, float)), axis=-1))
