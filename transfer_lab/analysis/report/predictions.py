"""Pre-registered predictions on disk (a file never overwritten) and their verification as
verify.md and verify.csv; the printed form of a single prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab import atomic_files
from transfer_lab.analysis.report import staging
from transfer_lab.errors import ConfigError


def save(path: Path, document: dict) -> Path:
    """Write a predictions file; an existing one is never replaced (it is a pre-registration)."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} exists: pre-registered predictions are never overwritten; "
                          f"choose another predict.save=... (or move the old file away yourself)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_files.atomic_write_text(path, json.dumps(document, indent=1, default=_plain) + "\n")
    return path


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def format_prediction(p: dict) -> str:
    def iv(key):
        lo, hi = p.get(key + "_ci", (float("nan"),) * 2)
        return f"[{lo:.3g}, {hi:.3g}]"
    lines = [f"N = {p['N']:.3g}, D_F = {p['D_F']:.3g} chars ({p['law']} law, {p['ci']:.0%} intervals)",
             f"  D_T        = {p['D_T']:.3g} chars {iv('D_T')}",
             f"  multiplier = {p['multiplier']:.3g}× {iv('multiplier')}",
             f"  fraction   = {p['fraction']:.3f} {iv('fraction')}"]
    if "loss" in p:
        lines.append(f"  loss       = {p['loss']:.4f} {iv('loss')} ({p['loss_from']}; "
                     f"from scratch at D_F: {p['loss_scratch']:.4f})")
    else:
        lines.append(f"  loss: {p['loss_note']}")
    if "trade" in p and np.isfinite(p["trade"].get("factor", np.nan)):
        lines.append(f"  trade: 10× N is worth {p['trade']['factor']:.3g}× D_F (10^(β/α))")
    return "\n".join(lines)

def _fmt(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def format_cells(doc: dict) -> str:
    """The predictions as a markdown table: what a reader checks the runs against."""
    ci = doc.get("ci", 0.95)
    lines = [f"| law | regime | N | D (chars) | loss [{ci:.0%}] | D_T [{ci:.0%}] | multiplier [{ci:.0%}] |",
             "|---|---|---|---|---|---|---|"]
    for c in doc["cells"]:
        def iv(q):
            return f"{_fmt(c[q])} [{_fmt(c[q + '_ci'][0])}, {_fmt(c[q + '_ci'][1])}]" if q in c else "—"
        lines.append(f"| {c['law']} | {c['regime']} | {c['N']:.4g} | {c['D']:.3g} | {iv('loss')} | {iv('D_T')} | "
                     f"{iv('multiplier')} |")
    lines += ["", "Intervals: the laws' bootstrap with one run's measured seed noise. Where a law's misfit exceeds the "
              "noise, the file also holds intervals that add that misfit (`*_ci_with_misfit`)."]
    return "\n".join(lines)


def format_calibration(cal: pd.DataFrame) -> str:
    lines = ["| law | quantity | interval | inside | share [95% binomial] | nominal | consistent |",
             "|---|---|---|---|---|---|---|"]
    for r in cal.itertuples():
        lines.append(f"| {r.law} | {r.quantity} | {r.interval} | {r.inside} of {r.cells} | {r.share:.0%} [{r.share_lo:.0%}, "
                     f"{r.share_hi:.0%}] | {r.nominal:.0%} | {'yes' if r.consistent else 'no'} |")
    return "\n".join(lines)


def format_comparison(rows: pd.DataFrame) -> str:
    lines = ["| law | regime | N | D (chars) | quantity | predicted [interval] | with misfit | measured (seeds) | inside "
             "| inside with misfit | miss |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def yes(v):
        return "—" if v is None else ("yes" if v else "**no**")
    for r in rows.itertuples():
        miss = f"{r.miss:+.1%} past the edge" if r.miss else ""
        lines.append(f"| {r.law} | {r.regime} | {r.N:.4g} | {r.D:.3g} | {r.quantity} | {_fmt(r.predicted)} "
                     f"[{_fmt(r.lo)}, {_fmt(r.hi)}] | [{_fmt(r.lo_with_misfit)}, {_fmt(r.hi_with_misfit)}] | "
                     f"{_fmt(r.measured)} ({r.seeds}) | {yes(r.inside)} | {yes(r.inside_with_misfit)} | {miss} |")
    return "\n".join(lines)


def write_verification(out: Path, doc: dict, path: Path, rows: pd.DataFrame, cal: pd.DataFrame,
                       command: str) -> Path:
    """verify.md and verify.csv beside the predictions (re-running verify rewrites them)."""
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([
        f"# Pre-registered predictions, verified: sweep {doc['sweep']}", "",
        f"Produced by `{command}` from `{Path(path).name}`, written {doc['created']} at commit "
        f"`{doc['commit']}` by `{doc['command']}`.", "",
        f"The {len(doc['fitted_on']['runs'])} runs the predictions were fitted on are unchanged "
        f"(sha256 {doc['fitted_on']['sha256'][:12]}). Each interval is a {doc.get('ci', 0.95):.0%} prediction "
        "interval for one new run: the laws' bootstrap with one run's measured seed noise added.", "",
        "## Calibration", "", format_calibration(cal), "",
        "## Cell by cell", "", format_comparison(rows), ""])
    with staging.staged(out) as stage:
        (stage / "verify.md").write_text(text, encoding="utf-8")
        rows.to_csv(stage / "verify.csv", index=False)
    return out / "verify.md"
