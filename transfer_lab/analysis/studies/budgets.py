"""What a sweep with several pre-training budgets p adds to its analysis.

  per budget  the transfer law (interpolated D_E) and the unified law at each budget: how α and β
              move with p (a finding, not a nuisance)
  D_T vs p    the measured D_T and multiplier per (N, D_F, p), and what each doubling of p buys
  gap law     Barnett 2024, L(p, f) = (A·p^−α + G)·f^−β + E, per N on ≥ 3 budgets: the transfer gap G
  better buy  at the largest budget: does doubling p or doubling D_F lower the fine-tuned loss more,
              and by how much (intervals from the gap law's bootstrap)
  held out    predict, then verify: the gap law fitted without the largest budget predicts it; the
              unified law fitted without the largest N predicts it; each measured loss and D_T is
              checked against its interval
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit import specs
from transfer_lab.analysis.fit.effective_data import KaplanBlock, ScratchCurve
from transfer_lab.analysis.fit.fitting import FitResult, fit_law
from transfer_lab.analysis.fit.intervals import interval
from transfer_lab.analysis.fit.result import AnalysisResult, data_of
from transfer_lab.analysis.fit.transfer_fit import transfer_fit

MIN_GAP_BUDGETS = 3  # Barnett's law has a p-power and a floor G: two budgets cannot tell them apart
OTHER_BUDGET = "other_pretrain_budget"


@dataclass
class BudgetStudy:
    budgets: list[float]  # nominal pre-training budgets, characters of the source
    per_budget: list[dict] = field(default_factory=list)  # budget, transfer (FitResult), unified (FitResult)
    transferred: pd.DataFrame = field(default_factory=pd.DataFrame)  # measured D_T per (N, D_F, budget)
    doubling: pd.DataFrame = field(default_factory=pd.DataFrame)  # D_T(2p)/D_T(p) per (N, D_F)
    gains: pd.DataFrame = field(default_factory=pd.DataFrame)  # loss removed by each step up in p, measured
    gap: list[FitResult] = field(default_factory=list)  # per N
    better_buy: pd.DataFrame = field(default_factory=pd.DataFrame)
    held_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    messages: list[str] = field(default_factory=list)


def _clean(rows: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuned rows whose only flag is belonging to another budget than the headline's."""
    flags = rows["flags"].str.replace(f";{OTHER_BUDGET}", "", regex=False)
    return rows[flags == "ok"]


def analyse(res: AnalysisResult, fit_kw: dict, curves: dict[float, ScratchCurve], law: KaplanBlock | None,
            kaplan_theta) -> BudgetStudy | None:
    t = res.table
    ft = t[(t["regime"] == "finetune") & ~t["excluded"] & t["pretrain_budget"].notna()]
    budgets = sorted(float(b) for b in ft["pretrain_budget"].unique())
    if len(budgets) < 2:
        return None
    study = BudgetStudy(budgets=budgets)
    scratch = t[(t["regime"] == "scratch") & ~t["excluded"]]
    for budget in budgets:
        at = ft[ft["pretrain_budget"] == budget]
        entry = {"budget": budget, "transfer": transfer_fit(res, _clean(at), fit_kw)}
        entry["transfer"].group = f"p={budget:.3g}"
        if len(scratch) and len(at):
            both = pd.concat([scratch, at])
            xu = data_of(both)
            entry["unified"] = fit_law(specs.unified_spec(xu, kaplan_theta), xu, run_keys=list(both["run_key"]),
                                       group=f"p={budget:.3g}", **fit_kw)
        study.per_budget.append(entry)
    study.transferred = (ft.groupby(["N", "D_F", "pretrain_budget"])
                         .agg(D_T=("D_T", "mean"), multiplier=("multiplier", "mean"), loss=("loss", "mean"),
                              seeds=("loss", "size"))
                         .reset_index().rename(columns={"pretrain_budget": "budget"}))
    study.doubling = _doubling(study.transferred)
    study.gains = _gains(study.transferred)
    _gap(study, ft, fit_kw)
    _held_out(study, res, ft, scratch, fit_kw, curves, law, kaplan_theta)
    return study


def _gains(dt: pd.DataFrame) -> pd.DataFrame:
    """Per (N, D_F): the fine-tuned loss each step to the next larger budget removed, measured (seeds
    averaged), per doubling of p: the model-free view of what more pre-training buys."""
    rows = []
    for (n, d_f), g in dt.groupby(["N", "D_F"]):
        g = g.sort_values("budget")
        for (_, a), (_, b) in zip(g.iloc[:-1].iterrows(), g.iloc[1:].iterrows()):
            rows.append({"N": n, "D_F": d_f, "from": a["budget"], "to": b["budget"],
                         "removed": (a["loss"] - b["loss"]) / np.log2(b["budget"] / a["budget"])})
    return pd.DataFrame(rows)


def _doubling(dt: pd.DataFrame) -> pd.DataFrame:
    """Per (N, D_F): the geometric mean over consecutive budgets of D_T(p2)/D_T(p1), per doubling of p."""
    rows = []
    for (n, d_f), g in dt[dt["D_T"] > 0].groupby(["N", "D_F"]):
        g = g.sort_values("budget")
        if len(g) < 2:
            continue
        doublings = np.log2(g["budget"].iloc[-1] / g["budget"].iloc[0])
        factor = (g["D_T"].iloc[-1] / g["D_T"].iloc[0]) ** (1 / doublings)
        rows.append({"N": n, "D_F": d_f, "from": g["budget"].iloc[0], "to": g["budget"].iloc[-1],
                     "D_T_from": g["D_T"].iloc[0], "D_T_to": g["D_T"].iloc[-1], "per_doubling": factor})
    return pd.DataFrame(rows)


def _gap(study: BudgetStudy, ft: pd.DataFrame, fit_kw: dict) -> None:
    if len(study.budgets) < MIN_GAP_BUDGETS:
        study.messages.append(f"transfer-gap law not fitted: it needs fine-tuned runs at ≥ {MIN_GAP_BUDGETS} "
                              f"pre-training budgets, this sweep has {len(study.budgets)}")
        return
    study.gap = []
    for n, g in ft.groupby("N"):
        budgets_at_n = g["pretrain_budget"].nunique()
        if budgets_at_n < MIN_GAP_BUDGETS:  # a size trained at one budget (a held-out size)
            study.messages.append(f"transfer-gap law not fitted at N = {n:.3g}: its fine-tunes have "
                                  f"{budgets_at_n} pre-training budget(s), it needs ≥ {MIN_GAP_BUDGETS}")
            continue
        study.gap.append(fit_law(specs.gap_spec(data_of(g)), data_of(g), group=f"N={n:.3g}",
                                 run_keys=list(g["run_key"]), **fit_kw))


def decide_better_buy(res: AnalysisResult) -> None:
    """At the largest budget, per (N, D_F): the gap law's better buy beside the raw secants, and the
    verdict only where they agree and the law fits within the measured noise (once goodness is known)."""
    study, t = res.budgets, res.table
    ft = t[(t["regime"] == "finetune") & ~t["excluded"] & t["pretrain_budget"].notna()]
    top, ci, rows = study.budgets[-1], res.settings["ci"], []
    for fit in study.gap:
        if not fit.ok:
            continue
        n = float(t.set_index("run_key").loc[fit.run_keys[0], "N"])  # the group's label rounds N: 3.31e+03
        g = res.goodness.get(("gap", fit.group))
        why = f"misfit {g.rms_log:.2%} > noise {g.noise_rms:.2%}, p = {g.p_value:.2g}" if g is not None and g.rejected else ""
        sigma = res.noise.sigma("finetune", n) if res.noise is not None else None
        for d_f in sorted(ft.loc[(ft["N"] == n) & (ft["pretrain_budget"] == top), "D_F"].unique()):
            law = better_buy(fit, top, d_f, ci)
            raw = raw_gains(ft, n, top, d_f, sigma)
            rows.append({"N": n, "D_F": d_f, "budget": top, **law, **raw, "law_verdict": law["verdict"],
                         "verdict": decide(law["verdict"], raw, why)})
    study.better_buy = pd.DataFrame(rows)


Z95 = 1.959963984540054  # two-sided 95% of a normal


def raw_gains(ft: pd.DataFrame, n: float, budget: float, d_f: float, sigma: float | None) -> dict:
    """The better-buy question asked of the measured cells alone, at (N, p, D_F): what the last doubling
    of p removed (the secant from the next smaller budget) and what a doubling of D_F removes (the
    secant to the next D_F, per doubling of D_F), seeds averaged, with 95% intervals from the measured
    seed noise σ of one run's ln loss. {} where a neighbouring cell is missing."""
    at = ft[np.isclose(ft["N"], n)]
    cells = at.groupby(["pretrain_budget", "D_F"])["loss"].agg(["mean", "count"])
    budgets = sorted(b for b in at["pretrain_budget"].unique() if b < budget)
    d_fs = sorted(at.loc[at["pretrain_budget"] == budget, "D_F"].unique())
    if not budgets or len(d_fs) < 2 or (budget, d_f) not in cells.index or (budgets[-1], d_f) not in cells.index:
        return {}
    lower = budgets[-1]
    i = d_fs.index(d_f)
    near = d_fs[i + 1] if i + 1 < len(d_fs) else d_fs[i - 1]
    per = np.log(2) / abs(np.log(near / d_f))  # a secant over near/d_f, scaled to one doubling of D_F
    here, before, other = cells.loc[(budget, d_f)], cells.loc[(lower, d_f)], cells.loc[(budget, near)]
    gain_p = (before["mean"] - here["mean"]) / np.log2(budget / lower)
    gain_f = per * (here["mean"] - other["mean"]) * (1 if near > d_f else -1)
    s = sigma if sigma is not None else np.nan

    def sd(cell):  # one cell's mean loss: σ·L per run, averaged over its seeds
        return s * cell["mean"] / np.sqrt(cell["count"])

    sd_p = np.hypot(sd(before), sd(here)) / np.log2(budget / lower)
    sd_f = per * np.hypot(sd(here), sd(other))
    sign = 1 if near > d_f else -1  # gain_p − gain_f shares L(p, D_F): its variance counts it once
    sd_diff = np.sqrt(sd(before) ** 2 + (1 + sign * per) ** 2 * sd(here) ** 2 + (per * sd(other)) ** 2)
    diff = gain_p - gain_f
    verdict = ("unjudged: no seed noise measured" if not np.isfinite(sd_diff)
               else "tie" if abs(diff) <= Z95 * sd_diff else "pre-train more" if diff > 0 else "collect target data")
    return {"raw_gain_p": gain_p, "raw_gain_p_ci": (gain_p - Z95 * sd_p, gain_p + Z95 * sd_p),
            "raw_gain_f": gain_f, "raw_gain_f_ci": (gain_f - Z95 * sd_f, gain_f + Z95 * sd_f),
            "raw_verdict": verdict, "raw_from": (lower, near)}


def decide(law_verdict: str, raw: dict, rejected_why: str) -> str:
    """A verdict only where the law fits within the noise and the raw cells say the same."""
    if rejected_why:
        return f"no verdict: gap law rejected ({rejected_why}); the data say {raw.get('raw_verdict', 'nothing (no raw check)')}"
    if not raw or raw["raw_verdict"].startswith("unjudged"):
        why = ("no seed noise measured to judge the raw cells by (add seeds)" if raw else
               "no raw check (a smaller budget and a neighbouring D_F are needed)")
        return f"no verdict: {why}; the law says {law_verdict}"
    if raw["raw_verdict"] == law_verdict or (raw["raw_verdict"] == "tie" and law_verdict == "indistinguishable"):
        return law_verdict
    return f"law and data disagree: the law says {law_verdict}, the data say {raw['raw_verdict']}"


def better_buy(fit: FitResult, budget: float, d_f: float, ci: float) -> dict:
    """From a gap-law fit at one N: the loss at (p, D_F), what doubling p and doubling D_F each remove
    (with intervals from the fit's bootstrap) and which is the better buy (the interval of their
    difference excludes 0), else indistinguishable."""
    x = {"P_m": np.array([budget, 2 * budget, budget]) / 1e6, "D_m": np.array([d_f, d_f, 2 * d_f]) / 1e6}
    best = np.exp(fit.evaluate(x))
    has_boot = fit.boot_theta is not None and len(fit.boot_theta)
    boot = np.exp(fit.evaluate(x, boot=True)) if has_boot else best[None]
    gain_p, gain_f = boot[:, 0] - boot[:, 1], boot[:, 0] - boot[:, 2]
    diff = interval(gain_p - gain_f, ci)
    verdict = "pre-train more" if diff[0] > 0 else "collect target data" if diff[1] < 0 else "indistinguishable"
    return {"loss": best[0], "gain_p": best[0] - best[1], "gain_p_ci": interval(gain_p, ci),
            "gain_f": best[0] - best[2], "gain_f_ci": interval(gain_f, ci), "verdict": verdict}


def _invert(loss: np.ndarray, n: float, curves: dict[float, ScratchCurve], law: KaplanBlock | None) -> np.ndarray:
    """D_E of each loss at N: the scratch curve where it covers the loss, else the law (model-based)."""
    curve = curves.get(float(n))
    out = []
    for value in np.atleast_1d(loss):
        d_e = curve.invert(float(value)) if curve is not None else np.nan
        if np.isnan(d_e) and law is not None:
            d_e = law.invert(float(value), n)[0]
        out.append(d_e)
    return np.array(out)


def _held_out(study: BudgetStudy, res: AnalysisResult, ft: pd.DataFrame, scratch: pd.DataFrame, fit_kw: dict,
              curves, law, kaplan_theta) -> None:
    ci, rows = res.settings["ci"], []
    measured = study.transferred
    top = study.budgets[-1]
    if len(study.budgets) - 1 >= MIN_GAP_BUDGETS:  # the largest budget from the smaller ones (gap law)
        for n, g in ft.groupby("N"):
            if g.loc[g["pretrain_budget"] < top, "pretrain_budget"].nunique() < MIN_GAP_BUDGETS:
                continue  # its smaller budgets cannot fit the gap law (a size trained at the largest only)
            smaller = data_of(g[g["pretrain_budget"] < top])
            fit = fit_law(specs.gap_spec(smaller), smaller, group=f"N={n:.3g}", **fit_kw)
            if not fit.ok:
                continue
            for r in measured[(measured["N"] == n) & (measured["budget"] == top)].itertuples():
                x = {"P_m": np.array([top / 1e6]), "D_m": np.array([r.D_F / 1e6])}
                loss = float(np.exp(fit.evaluate(x))[0])
                boot = np.exp(fit.evaluate(x, boot=True))[:, 0] if fit.boot_theta is not None else np.array([loss])
                d_t = _invert(np.array([loss]), n, curves, law) - r.D_F
                d_t_boot = _invert(boot[:: max(1, len(boot) // 200)], n, curves, law) - r.D_F
                rows.append(_verified("largest budget, from the smaller ones (gap law)", n, top, r, loss,
                                      interval(boot, ci), float(d_t[0]), interval(d_t_boot, ci)))
    sizes = sorted(ft["N"].unique())
    main = ft[ft["pretrain_budget"] == top]
    if len(sizes) >= 3:  # the largest N from the smaller ones (unified law, at the largest budget)
        held = sizes[-1]
        train = pd.concat([scratch[scratch["N"] < held], main[main["N"] < held]])
        fit = fit_law(specs.unified_spec(data_of(train), kaplan_theta), data_of(train), **fit_kw)
        if fit.ok:
            for r in measured[(measured["N"] == held) & (measured["budget"] == top)].itertuples():
                x = {"lnN": np.log([held]), "lnD": np.log([r.D_F]), "pre": np.ones(1)}
                loss = float(np.exp(fit.evaluate(x))[0])
                boot = np.exp(fit.evaluate(x, boot=True))[:, 0] if fit.boot_theta is not None else np.array([loss])
                thetas = fit.theta[None] if fit.boot_theta is None else np.vstack([fit.theta[None], fit.boot_theta])
                d_t = 10 ** thetas[:, 4] * r.D_F ** thetas[:, 5] * held ** thetas[:, 6]
                rows.append(_verified("largest N, from the smaller ones (unified law)", held, top, r, loss,
                                      interval(boot, ci), float(d_t[0]), interval(d_t[1:], ci)))
    study.held_out = pd.DataFrame(rows)


def _verified(what: str, n: float, budget: float, measured, loss: float, loss_ci, d_t: float, d_t_ci) -> dict:
    def inside(value, interval):
        return bool(np.isfinite(value) and interval[0] <= value <= interval[1])

    return {"held_out": what, "N": n, "budget": budget, "D_F": measured.D_F, "loss_predicted": loss,
            "loss_ci": loss_ci, "loss": measured.loss, "loss_inside": inside(measured.loss, loss_ci),
            "D_T_predicted": d_t, "D_T_ci": d_t_ci, "D_T": measured.D_T, "D_T_inside": inside(measured.D_T, d_t_ci)}
