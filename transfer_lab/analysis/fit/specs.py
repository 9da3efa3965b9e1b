"""The laws as LawSpecs: fitted parameters, bounds, start grids and log-space models (the six
scaling laws, then the mixing laws of analyze.py action=mix).

Targets are natural logs (ln L, ln D_T, ln fraction). Positive scale constants are fitted as
log10 values; N and D enter Chinchilla, gap and rectified laws in millions (rescaled so the
optimiser converges). Data keys: N, D, P (raw counts), N_m, D_m, P_m (millions), lnN, lnD,
pre (1 = fine-tuned from a pre-trained model, 0 = from scratch), lnL, lnDT, lnfrac; mixing laws:
r (the second source's weight) or W (rows of source weights, one column per source).
"""

from __future__ import annotations

import itertools

import numpy as np

from transfer_lab.analysis.fit import laws
from transfer_lab.analysis.fit.fitting import LawSpec, Param

LN10 = np.log(10.0)


def transfer_spec() -> LawSpec:
    def model(t, x):
        return LN10 * t[0] + t[1] * x["lnD"] + t[2] * x["lnN"]

    return LawSpec(
        name="transfer", title="Transfer law D_T = k·D_F^α·N^β",
        params=[Param("log10_k", -20, 30, (-2.0, 2.0, 6.0), log10=True, report="k"),
                Param("alpha", -2, 3, (0.1, 0.3, 0.7)), Param("beta", -2, 3, (0.2, 0.5, 1.0))],
        model=model, target="lnDT", holdout="N", needs_distinct={"N": 2, "D": 2}, inputs=("lnD", "lnN"))


def _kaplan_params(x) -> list[Param]:
    mn, md = float(np.median(x["lnN"]) / LN10), float(np.median(x["lnD"]) / LN10)
    return [Param("log10_N_c", 0, 40, (mn + 1, mn + 4, mn + 10), log10=True, report="N_c"),
            Param("log10_D_c", -10, 40, (md - 2, md, md + 3), log10=True, report="D_c"),
            Param("alpha_N", 1e-3, 3, (0.05, 0.15, 0.5)), Param("alpha_D", 1e-3, 3, (0.05, 0.15, 0.5))]


def kaplan_spec(x) -> LawSpec:
    def model(t, d):
        return laws.kaplan_log_loss(d["lnN"], d["lnD"], LN10 * t[0], LN10 * t[1], t[2], t[3])

    return LawSpec(name="kaplan", title="Kaplan L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D",
                   params=_kaplan_params(x), model=model, target="lnL", holdout="N",
                   needs_distinct={"N": 2, "D": 2}, inputs=("lnN", "lnD"))


def chinchilla_spec(x) -> LawSpec:
    lmin = float(np.exp(np.min(x["lnL"])))

    def model(t, d):
        return np.log(laws.chinchilla_loss(d["N_m"], d["D_m"], t[0], 10 ** t[1], 10 ** t[2], t[3], t[4]))

    return LawSpec(name="chinchilla", title="Chinchilla L = E + A/N^α + B/D^β (N, D in millions)",
                   params=[Param("E", 0, lmin, (0.0, 0.5 * lmin, 0.9 * lmin)),
                           Param("log10_A", -8, 8, (-1.0, 0.0, 1.0), log10=True, report="A"),
                           Param("log10_B", -8, 8, (-1.0, 0.0, 1.0), log10=True, report="B"),
                           Param("alpha", 1e-3, 3, (0.1, 0.3, 0.7)), Param("beta", 1e-3, 3, (0.1, 0.3, 0.7))],
                   model=model, target="lnL", holdout="N", needs_distinct={"N": 2, "D": 2}, inputs=("N_m", "D_m"))


def unified_spec(x, kaplan_theta=None, transfer_theta=None) -> LawSpec:
    kp = _kaplan_params(x)
    if kaplan_theta is not None:  # start the Kaplan block at its own fit
        for p, v in zip(kp, kaplan_theta):
            p.grid = (float(v),)
    tg = [(-2.0, 2.0, 6.0), (0.1, 0.3, 0.7), (0.2, 0.5, 1.0)]
    if transfer_theta is not None:
        tg = [(float(v),) for v in transfer_theta]

    def model(t, d):
        ln_dt = LN10 * t[4] + t[5] * d["lnD"] + t[6] * d["lnN"]
        ln_deff = d["lnD"] + d["pre"] * np.logaddexp(0.0, ln_dt - d["lnD"])  # ln(D_F + pre·D_T)
        return laws.kaplan_log_loss(d["lnN"], ln_deff, LN10 * t[0], LN10 * t[1], t[2], t[3])

    return LawSpec(name="unified", title="Unified fine-tuning law: Kaplan with D → D_F + k·D_F^α·N^β",
                   params=kp + [Param("log10_k", -20, 30, tg[0], log10=True, report="k"),
                                Param("alpha", -2, 3, tg[1]), Param("beta", -2, 3, tg[2])],
                   model=model, target="lnL", holdout="N", needs_distinct={"N": 2, "D": 2, "pre": 2},
                   inputs=("lnN", "lnD", "pre"))


def gap_spec(x) -> LawSpec:
    lmin = float(np.exp(np.min(x["lnL"])))

    def model(t, d):
        return np.log(laws.gap_loss(d["P_m"], d["D_m"], 10 ** t[0], t[1], t[2], t[3], t[4]))

    return LawSpec(name="gap", title="Transfer-gap law L(p, f) = (A·p^−α + G)·f^−β + E (p, f in millions)",
                   params=[Param("log10_A", -8, 8, (-1.0, 0.0, 1.0), log10=True, report="A"),
                           Param("alpha", 1e-3, 3, (0.1, 0.5)), Param("G", 0, 100, (0.0, 0.3 * lmin, lmin)),
                           Param("beta", 1e-3, 3, (0.1, 0.3)), Param("E", 0, lmin, (0.0, 0.5 * lmin))],
                   model=model, target="lnL", holdout="D", needs_distinct={"P": 3, "D": 2}, inputs=("P_m", "D_m"))


def rectified_spec(x) -> LawSpec:
    lmin = float(np.exp(np.min(x["lnL"])))

    def model(t, d):
        return np.log(laws.rectified_loss(d["D_m"], 10 ** t[0], 10 ** t[1], t[2], t[3]))

    return LawSpec(name="rectified", title="Rectified law L(D) = B/(D_l + D^β) + E (D in millions)",
                   params=[Param("log10_B", -8, 8, (-1.0, 0.0, 1.0), log10=True, report="B"),
                           Param("log10_D_l", -8, 8, (-2.0, 0.0, 2.0), log10=True, report="D_l"),
                           Param("beta", 1e-3, 3, (0.2, 0.5, 1.0)), Param("E", 0, lmin, (0.0, 0.5 * lmin, 0.9 * lmin))],
                   model=model, target="lnL", holdout="D", needs_distinct={"D": 3}, inputs=("D_m",))


def fraction_spec(x) -> LawSpec:
    mn = float(np.median(x["lnN"]) / LN10)

    def model(t, d):  # logit of 1/(1 + (N*/N)^β), i.e. β·(ln N − ln N*)
        return t[1] * (d["lnN"] - LN10 * t[0])

    return LawSpec(name="appc_fraction", title="App. C: D_T/(D_F+D_T) = 1/(1 + (N*/N)^β) at fixed D_F (logit)",
                   params=[Param("log10_N_star", -30, 40, (mn - 1, mn, mn + 2), log10=True, report="N_star"),
                           Param("beta", 1e-3, 3, (0.2, 0.5, 1.0))],
                   model=model, target="logitfrac", holdout="N", needs_distinct={"N": 2}, inputs=("lnN",))


def nstar_spec() -> LawSpec:
    def model(t, d):
        return LN10 * t[0] + t[1] * d["lnD"]

    return LawSpec(name="appc_nstar", title="App. C: N*(D_F) = c·D_F^γ",
                   params=[Param("log10_c", -60, 60, (0.0, 5.0)), Param("gamma", -10, 10, (0.5, 2.0, 4.0))],
                   model=model, target="lnNstar", holdout="D", needs_distinct={"D": 2}, inputs=("lnD",))


# Mixing laws (analyze.py action=mix): ln D_T of the fine-tuned model against the pre-training mixture,
# at one (N, D_F). Few points per fit (5 ratios, or ~14 mixtures on a simplex): few parameters.
def _level(x) -> tuple[float, float]:
    """(median ln D_T, largest D_T) of the data: where the start grids sit."""
    return float(np.median(x["lnDT"])), float(np.exp(np.max(x["lnDT"])))


def mix_line_spec(x) -> LawSpec:
    level, _ = _level(x)

    def model(t, d):
        return np.log(laws.mix_log_quadratic(d["r"], t[0], t[1], 0.0))

    return LawSpec(name="mix_line", title="ln D_T(r) = a + b·r (geometric between the pure sources)", model=model,
                   target="lnDT", inputs=("r",),
                   params=[Param("a", -50, 50, (level,)), Param("b", -50, 50, (-1.0, 0.0, 1.0))])


def mix_quadratic_spec(x) -> LawSpec:
    level, _ = _level(x)

    def model(t, d):
        return np.log(laws.mix_log_quadratic(d["r"], t[0], t[1], t[2]))

    return LawSpec(name="mix_quadratic", title="ln D_T(r) = a + b·r + q·r²", model=model, target="lnDT", inputs=("r",),
                   params=[Param("a", -50, 50, (level,)), Param("b", -50, 50, (-1.0, 0.0, 1.0)),
                           Param("q", -50, 50, (-1.0, 0.0, 1.0))])


def mix_exponential_spec(x) -> LawSpec:
    level, top = _level(x)

    def model(t, d):
        return np.log(laws.mix_exponential(d["r"], t[0], 10 ** t[1], t[2]))

    return LawSpec(name="mix_exponential", title="Ye et al.'s form: D_T(r) = c + k·exp(t·r)", model=model,
                   target="lnDT", inputs=("r",),
                   params=[Param("c", 0, top, (0.0, 0.3 * top)),
                           Param("log10_k", -5, 25, (level / LN10 - 1, level / LN10), log10=True, report="k"),
                           Param("t", -30, 30, (-2.0, -0.5, 0.5, 2.0))])


def simplex_linear_spec(x, sources: list[str]) -> LawSpec:
    level, _ = _level(x)

    def model(t, d):
        return np.log(laws.simplex_log_quadratic([d["W"][:, j] for j in range(len(sources))], t, []))

    return LawSpec(name="simplex_linear", title="ln D_T(w) = Σ b_j·w_j (geometric between the pure sources)",
                   model=model, target="lnDT", params=[Param(f"b_{s}", -50, 50, (level,)) for s in sources])


def simplex_quadratic_spec(x, sources: list[str]) -> LawSpec:
    level, _ = _level(x)
    q = len(sources)
    pairs = list(itertools.combinations(range(q), 2))

    def model(t, d):
        return np.log(laws.simplex_log_quadratic([d["W"][:, j] for j in range(q)], t[:q], t[q:]))

    return LawSpec(name="simplex_quadratic", title="Scheffé: ln D_T(w) = Σ b_j·w_j + Σ b_jl·w_j·w_l", model=model,
                   target="lnDT",
                   params=[Param(f"b_{s}", -50, 50, (level,)) for s in sources]
                   + [Param(f"b_{sources[j]}_{sources[m]}", -50, 50, (-1.0, 0.0, 1.0)) for j, m in pairs])


def simplex_exponential_spec(x, sources: list[str]) -> LawSpec:
    level, top = _level(x)
    q = len(sources)

    def model(t, d):  # the first source's t is 0
        w = [d["W"][:, j] for j in range(q)]
        return np.log(laws.simplex_exponential(w, t[0], 10 ** t[1], [0.0, *t[2:]]))

    return LawSpec(name="simplex_exponential", title="Ye et al.'s form: D_T(w) = c + k·exp(Σ t_j·w_j)", model=model,
                   target="lnDT",
                   params=[Param("c", 0, top, (0.0, 0.3 * top)),
                           Param("log10_k", -5, 25, (level / LN10 - 1, level / LN10), log10=True, report="k")]
                   + [Param(f"t_{s}", -30, 30, (-1.0, 0.0, 1.0)) for s in sources[1:]])
