"""What a sweep report opens with, and how each law fits the noise: the measured answer (one sentence,
the multiplier of every cell with its own interval, the D_T figure, the law in one line and what is not
identified with the plan's command) and the goodness-of-fit table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transfer_lab.analysis.fit.intervals import identified
from transfer_lab.analysis.fit.result import AnalysisResult
from transfer_lab.analysis.report.markdown import fmt as _g
from transfer_lab.analysis.report.markdown import (
    fmt_chars,
    fmt_interval,
    fmt_size,
    md_table,
)


def _ci(ci, name):
    return fmt_interval(ci.get(name, (float("nan"), float("nan"))))


def all_fits(res: AnalysisResult):
    yield from res.fits.values()
    for fs in res.group_fits.values():
        yield from fs


def _corpora(res: AnalysisResult) -> tuple[str, str]:
    ft = res.table[res.table["regime"] == "finetune"]
    column = "source_mix" if ft["source_mix"].notna().any() else "source_corpus"  # older tables: one source
    sources = sorted({str(s) for s in ft[column].dropna()})
    targets = sorted({str(s) for s in res.table["target_corpus"].dropna()})
    return (sources[0] if len(sources) == 1 else "the source"), (targets[0] if len(targets) == 1 else "target")


def _multiplier(cell: dict) -> str:
    """`4.8× [3.9, 6]`: a cell's effective data multiplier with its interval."""
    return f"{_g(cell['multiplier'], 2)}× [{_g(cell['lo'], 2)}, {_g(cell['hi'], 2)}]"


def _answer_sentence(res: AnalysisResult) -> str:
    """The measured cell a reader acts on: the largest N whose multiplier is identified (interpolated, its
    interval above 1), at its smallest D_F; else the largest N measured at all, saying what it is."""
    cells = sorted(res.answer, key=lambda c: (-c["identified"], -c["N"], c["D_F"]))
    if not cells:
        return "No fine-tuned cell has an effective data D_E yet: nothing is measured (see Messages)."
    c = cells[0]
    source, target = _corpora(res)
    worth = c["multiplier"] * c["D_F"]
    text = (f"At N = {fmt_size(c['N'])}, {fmt_chars(c['D_F'])} {target} characters fine-tuned from {source} are worth "
            f"{_g(worth)} [{_g(c['lo'] * c['D_F'])}, {_g(c['hi'] * c['D_F'])}] characters trained from scratch: "
            f"{_multiplier(c)}")
    n_id = sum(x["identified"] for x in res.answer)
    return text + (f". {n_id} of {len(res.answer)} measured cells have a multiplier whose interval lies above 1."
                   if c["identified"] else f" ({c['method']}: not an identified measurement).")


def answer_section(res: AnalysisResult, figures, report_dir: Path) -> list[str]:
    """What was measured, first: one sentence, the multiplier of every cell with its own interval, the
    D_T figure with the fitted law, the law in one line, and what is not identified with its fix."""
    out = ["## What pre-training was worth, measured", "", _answer_sentence(res), ""]
    if res.answer:
        d_fs = sorted({c["D_F"] for c in res.answer})
        by = {(c["N"], c["D_F"]): c for c in res.answer}
        rows = [[fmt_size(n)] + [(_multiplier(c) + ("" if c["method"] == "interpolated" else " †")
                                  if (c := by.get((n, d))) else "—")
                           for d in d_fs] for n in sorted({c["N"] for c in res.answer})]
        budget = (f" at the largest pre-training budget (p = {_g(res.main_budget)} characters)"
                  if res.budgets is not None else "")
        seeds = " Seeds are averaged where a cell was repeated." if any(c["seeds"] > 1 for c in res.answer) else ""
        out += [f"Effective data multiplier (D_F + D_T)/D_F per measured cell{budget}, with its own "
                f"{res.settings['ci']:.0%} bootstrap interval (both regimes redrawn); † model-based D_E.{seeds}", ""]
        out += md_table(["N \\ D_F"] + [fmt_chars(d) for d in d_fs], rows)
    fig = next((png for title, png in figures if title == "D_T vs D_F"), None)
    if fig is not None:
        out += [f"![D_T vs D_F]({fig.relative_to(report_dir).as_posix()})", ""]
    out += _law_line(res)
    return out


def _law_line(res: AnalysisResult) -> list[str]:
    tr = res.fit("transfer")
    out = []
    if tr is not None:
        g = res.goodness.get(("transfer", ""))
        fits = "" if g is None else (" Rejected by the data: " if g.rejected else " Against the noise: ") + g.describe() + "."
        out.append(f"The transfer law D_T = k·D_F^α·N^β on the interpolated points: α = {_g(tr.params['alpha'])} "
                   f"{_ci(tr.ci, 'alpha')}, β = {_g(tr.params['beta'])} {_ci(tr.ci, 'beta')}.{fits}")
    gaps = {}
    for law in ("transfer", "unified"):
        f = res.fit(law)
        for name, symbol in (("alpha", "α"), ("beta", "β")):
            if f is not None and not identified(*f.ci.get(name, (np.nan, np.nan))):
                gaps.setdefault(symbol, []).append(law)
    if gaps:
        what = ", ".join(f"{s} ({' and '.join(laws)} law{'s' if len(laws) > 1 else ''})" for s, laws in gaps.items())
        fix = f": `{res.next_runs[0]}` would narrow it (analyze.py action=plan lists every run)" if res.next_runs else ""
        out.append(f"Not identified (interval covers 0 or is wider than 0.5): {what}{fix}.")
    return out + ([""] if out else [])


def goodness_section(res: AnalysisResult) -> list[str]:
    """Every law of ln L or ln D_T against the seed noise of its own runs (fit/goodness.py)."""
    out = ["## Goodness of fit against the measured noise", "",
           "Each law's RMS residual (log space) beside the seed-to-seed noise of the same runs; a law whose misfit "
           "exceeds the noise (lack-of-fit F test on the noise's own degrees of freedom, p < 0.05) is rejected, and "
           "its verdicts (trade, better buy) are not shown. Where no seeds repeat, the misfit cannot be tested.", ""]
    rows = []
    for f in all_fits(res):
        g = res.goodness.get((f.law, f.group))
        if g is None:
            continue
        verdict = {"fits": "not rejected", "rejected": "**rejected**", "untested": "untested (no seeds)"}[g.verdict]
        rows.append([f.law, f.group or "all", g.points, f"{g.rms_log:.2%}",
                     f"{g.noise_rms:.2%}" if math.isfinite(g.noise_rms) else "—",
                     _g(g.chi2_per_dof, 2), _g(g.p_value, 2), verdict])
    if not rows:
        return out + ["- no law fitted", ""]
    return out + md_table(["law", "group", "points", "misfit (RMS)", "noise (RMS)", "χ²/dof", "p", "verdict"], rows)
