"""Report sections for what budgets and seeds add: the pre-training budget axis, the transfer gap
and the better buy, predictions checked on held-out runs, and the seed noise measured."""

from __future__ import annotations

import math

import numpy as np

from transfer_lab.analysis.fit.intervals import identified
from transfer_lab.analysis.fit.result import AnalysisResult
from transfer_lab.analysis.report.markdown import fmt, fmt_interval, md_table

GREEK = {"alpha": "α", "beta": "β", "k": "k"}


def _ci(interval) -> str:
    return fmt_interval(interval, missing="—")


def _identified(fit, name: str) -> bool:
    return identified(*fit.ci.get(name, (np.nan, np.nan)))


def budget_sections(res: AnalysisResult) -> list[str]:
    study = res.budgets
    if study is None:
        return []
    out = ["## Pre-training budget", "",
           f"Fine-tuned runs at {len(study.budgets)} pre-training budgets p (nominal, characters of the source: "
           f"{', '.join(fmt(b) for b in study.budgets)}); the from-scratch curves serve every budget. The headline "
           "laws above are fitted at the largest budget.", ""]
    rows = []
    for entry in study.per_budget:
        for law in ("transfer", "unified"):
            fit = entry.get(law)
            if fit is None or not fit.ok:
                reason = fit.message if fit is not None else "no runs"
                rows.append([fmt(entry["budget"]), law, f"not fitted: {reason}", "", "", "", ""])
                continue
            cells = [f"{fmt(fit.params[name])} {_ci(fit.ci.get(name))}" for name in ("k", "alpha", "beta")]
            both = all(_identified(fit, name) for name in ("alpha", "beta"))
            rows.append([fmt(entry["budget"]), law, *cells, fit.n_points, "yes" if both else "no"])
    out += ["How the laws move with p (α and β identified: 95% interval excludes 0 and is ≤ 0.5 wide):", ""]
    out += md_table(["p (chars)", "law", "k", "α", "β", "points", "α and β identified"], rows)
    dt = study.transferred
    if len(dt):
        budgets = study.budgets
        table = []
        for (n, d_f), g in dt.groupby(["N", "D_F"]):
            by = dict(zip(g["budget"], g["D_T"]))
            mult = dict(zip(g["budget"], g["multiplier"]))
            table.append([fmt(n), fmt(d_f)] + [f"{fmt(by.get(b))} ({fmt(mult.get(b))}×)" if b in by else "—"
                                               for b in budgets])
        repeated = dt[dt["seeds"] > 1]
        pooled = (f" Seeds are averaged where a cell was repeated ({len(repeated)} cells, at p = "
                  f"{', '.join(fmt(b) for b in sorted(repeated['budget'].unique()))})." if len(repeated) else "")
        out += ["Measured D_T (characters) and the effective-data multiplier, by model size N, fine-tuning data D_F "
                f"and pre-training budget p.{pooled}", ""]
        out += md_table(["N", "D_F"] + [f"p={fmt(b)}" for b in budgets], table)
    if len(study.doubling):
        out += ["What each doubling of pre-training buys: D_T(p_max)/D_T(p_min) per doubling of p, in target "
                "characters (1.0: nothing).", ""]
        out += md_table(["N", "D_F", "D_T at the smallest p", "D_T at the largest p", "× per doubling"],
                        [[fmt(r.N), fmt(r.D_F), fmt(r.D_T_from), fmt(r.D_T_to), fmt(r.per_doubling)]
                         for r in study.doubling.itertuples()])
    out += _gains_section(study) + _gap_section(res) + _held_out_section(res)
    return out


def _gains_section(study) -> list[str]:
    g = study.gains
    if not len(g):
        return []
    steps = sorted({(r["from"], r["to"]) for _, r in g.iterrows()})
    rows = []
    for (n, d_f), part in g.groupby(["N", "D_F"]):
        by = {(r["from"], r["to"]): r["removed"] for _, r in part.iterrows()}
        rows.append([fmt(n), fmt(d_f)] + [f"{by[s]:+.3f}" if s in by else "—" for s in steps])
    return (["What each doubling of p removed from the fine-tuned loss, measured (nats/char; seeds averaged; no law): "
             "the gap law's form makes them shrink as D_F grows (∝ D_F^−β).", ""]
            + md_table(["N", "D_F"] + [f"p {fmt(a)} → {fmt(b)}" for a, b in steps], rows))


def _gap_section(res: AnalysisResult) -> list[str]:
    study = res.budgets
    out = ["## Transfer gap (Barnett 2024)", "",
           "L(p, f) = (A·p^−α + G)·f^−β + E per N, p and f in millions of characters (laws.gap_loss). G is the "
           "transfer gap: the part of the fine-tuned loss more pre-training cannot remove; a low G makes "
           "pre-training the cheap way to a lower target loss, a high G makes target data the better buy.", ""]
    fits = [f for f in study.gap if f.ok]
    if not fits:
        return out + [f"- {m}" for m in study.messages] + ["- not fitted on this sweep", ""]
    out += md_table(["N", "A", "α", "G", "β", "E", "points", "RMS log resid.", "at a bound (not identified)"],
                    [[f.group.split("=")[1]] + [f"{fmt(f.params[k])} {_ci(f.ci.get(k))}"
                                                for k in ("A", "alpha", "G", "beta", "E")]
                     + [f.n_points, fmt(f.rms_log), ", ".join(GREEK.get(a, a) for a in f.at_bounds) or "—"] for f in fits])
    out += _goodness_lines(res, fits)
    bb = study.better_buy
    if len(bb):
        out += [f"Better buy at the largest budget (p = {fmt(study.budgets[-1])}): the fine-tuned loss (nats/char) "
                "that doubling p or doubling D_F removes, from the gap law (bootstrap interval) and from the measured "
                "cells alone (secants: the last doubling of p, and the neighbouring D_F per doubling; intervals from "
                "the measured seed noise). A verdict is printed only where the law is not rejected by the noise and the "
                "data agree with it.", ""]
        out += md_table(["N", "D_F", "loss", "2× p removes (law)", "2× D_F removes (law)", "2× p removes (data)",
                         "2× D_F removes (data)", "better buy"],
                        [[fmt(r.N), fmt(r.D_F), fmt(r.loss, 4), f"{fmt(r.gain_p)} {_ci(r.gain_p_ci)}",
                          f"{fmt(r.gain_f)} {_ci(r.gain_f_ci)}", _raw(r, "p"), _raw(r, "f"), r.verdict]
                         for r in bb.itertuples()])
    return out


def _raw(row, which: str) -> str:
    value = getattr(row, f"raw_gain_{which}", float("nan"))
    if not isinstance(value, float) or not math.isfinite(value):
        return "—"
    return f"{fmt(value)} {_ci(getattr(row, f'raw_gain_{which}_ci'))}"


def _goodness_lines(res: AnalysisResult, fits) -> list[str]:
    lines = []
    for f in fits:
        g = res.goodness.get(("gap", f.group))
        if g is not None:
            label = "is rejected by the data" if g.rejected else ("is not rejected" if g.verdict == "fits" else "is untested")
            lines.append(f"- {f.group}: the gap law {label}: {g.describe()}.")
    return lines + ([""] if lines else [])


def _held_out_section(res: AnalysisResult) -> list[str]:
    held = res.budgets.held_out
    out = ["## Predicted, then measured", "",
           "Each law is fitted without the runs it is asked to predict; the table says whether each measured value "
           "falls inside the prediction's interval. An extrapolation is to be trusted as far as this table says.", ""]
    if not len(held):
        return out + ["- nothing held out: it needs ≥ 4 budgets (the gap law on ≥ 3 of them) or ≥ 3 sizes", ""]
    rows = [[r.held_out, fmt(r.N), fmt(r.budget), fmt(r.D_F), f"{fmt(r.loss_predicted, 4)} {_ci(r.loss_ci)}",
             fmt(r.loss, 4), "yes" if r.loss_inside else "**no**", f"{fmt(r.D_T_predicted)} {_ci(r.D_T_ci)}",
             fmt(r.D_T), "yes" if r.D_T_inside else "**no**"] for r in held.itertuples()]
    out += md_table(["held out", "N", "p", "D_F", "loss predicted", "measured", "inside", "D_T predicted", "measured",
                     "inside"], rows)
    for what, g in held.groupby("held_out"):
        out.append(f"- {what}: loss inside its interval in {int(g['loss_inside'].sum())} of {len(g)}, D_T in "
                   f"{int(g['D_T_inside'].sum())} of {len(g)}.")
    return out + [""]


def noise_section(res: AnalysisResult) -> list[str]:
    noise = res.noise
    if noise is None or not noise.measured:
        return []
    residual = res.residual_noise
    out = ["## Seed noise", "",
           "Seed-to-seed noise of one run's ln loss (std), measured where cells were repeated with other seeds; "
           "the bootstrap perturbs single runs by it (from-scratch curves and fine-tuned losses), and the "
           "monotonicity check allows 2√2 of it. Where it is not measured, from-scratch runs are perturbed by the "
           f"from-scratch law's RMS residual ({fmt(residual)}), which counts the law's misfit as noise.", ""]
    rows = [[regime, fmt(n), fmt(sigma) if cells else "—", cells]
            for (regime, n), (sigma, cells) in sorted(noise.by_size.items())]
    out += md_table(["regime", "N", "σ of ln loss", "repeated cells"], rows)
    if res.noise_effect:
        out += ["The interpolated transfer law on the same runs, its intervals with the residual as noise and with "
                "the measured seed noise:", ""]
        out += md_table(["", "interval (residual)", "width", "interval (measured)", "width"],
                        [[GREEK[name], _ci(before), fmt(_width(name, before)), _ci(after), fmt(_width(name, after))]
                         for name, (before, after) in res.noise_effect.items()])
    return out


def _width(name: str, interval) -> float:
    if interval is None or not all(np.isfinite(interval)):
        return float("nan")
    lo, hi = interval
    return math.log10(hi / lo) if name == "k" and lo > 0 else hi - lo  # k: decades
