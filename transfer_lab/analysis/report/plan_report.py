"""The priced plan as a table a researcher can act on, and its file (plan.json) for the later check."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from transfer_lab import atomic_files
from transfer_lab.analysis.report import staging
from transfer_lab.analysis.report.markdown import fmt, md_table
from transfer_lab.analysis.studies.priced_plan import EXPONENTS, PricedPlan
from transfer_lab.errors import ConfigError

FORMAT = "transfer_lab.plan/1"
GREEK = {"alpha": "α", "beta": "β"}


def _widths(w: dict, law: str = "transfer") -> str:
    part = w.get(law, {})
    return ", ".join(f"{GREEK[x]} {fmt(part[x], 2)}" for x in EXPONENTS if x in part) or "—"


def format_plan(plan: PricedPlan) -> str:
    c = plan.cost
    lines = [f"Priced plan for sweep {plan.sweep}: {plan.budget_hours:g} process-hours "
             f"(≈ {plan.budget_hours / plan.workers:.1g} h of wall time with {plan.workers} workers).", "",
             f"Cost model, fitted on {c.runs} finished runs: seconds per token ∝ N^{c.per_token[1]:.2f} "
             f"(RMS {c.rms_log['seconds_per_token']:.2f} in ln); tokens to converge ∝ "
             + "; ".join(f"{regime}: D^{v[1]:.2f}·N^{v[2]:.2f} (RMS {c.rms_log[regime + '_tokens']:.2f})"
                         for regime, v in c.tokens.items()) + ".", "",
             f"Now (95% widths, transfer law): {_widths(plan.before)}; unified law: {_widths(plan.before, 'unified')}.", ""]
    rows = []
    for cand in sorted(plan.candidates, key=lambda x: -(x.score / x.hours) if np.isfinite(x.score) else np.inf):
        picked = "**yes**" if cand in plan.chosen else "no"
        rows.append([cand.name, len([r for r in cand.runs if r.regime != "pretrain"]), fmt(cand.hours, 2),
                     _widths(cand.widths) if not cand.skipped else f"not simulated: {cand.skipped}",
                     _widths(cand.widths, "unified") if not cand.skipped else "",
                     f"{cand.score:+.0%}" if np.isfinite(cand.score) else "—",
                     f"{cand.score / cand.hours:+.0%}" if np.isfinite(cand.score) and cand.hours else "—", picked])
    lines += md_table(["candidate", "runs", "process-hours", "expected widths (transfer)", "(unified)",
                       "narrowing", "per hour", "chosen"], rows)
    lines.append(f"Chosen: {len(plan.chosen)} additions, {plan.hours_chosen:.2g} process-hours; expected widths with "
                 f"all of them: {_widths(plan.expected)} (unified: {_widths(plan.expected, 'unified')}).")
    if plan.chosen:
        lines += ["", "Runs to add (finished runs are skipped, so each command trains only what is new):", ""]
        lines += [f"    {cmd}" for cand in plan.chosen for cmd in cand.commands]
    return "\n".join(lines)


def plan_document(plan: PricedPlan, commit: str, runs_hash: str, run_keys: list[str], command: str) -> dict:
    def cand(c):
        return {"name": c.name, "hours": c.hours, "widths": c.widths, "score": c.score, "commands": c.commands,
                "skipped": c.skipped, "runs": [vars(r) for r in c.runs]}
    return {"format": FORMAT, "sweep": plan.sweep, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "command": command, "budget_hours": plan.budget_hours,
            "fitted_on": {"runs": run_keys, "sha256": runs_hash},
            "cost_model": {"per_token": list(plan.cost.per_token), "tokens": {k: list(v) for k, v in plan.cost.tokens.items()},
                           "rms_log": plan.cost.rms_log, "runs": plan.cost.runs},
            "before": plan.before, "candidates": [cand(c) for c in plan.candidates],
            "chosen": [c.name for c in plan.chosen], "hours_chosen": plan.hours_chosen, "expected": plan.expected}


def save_plan(path: Path, document: dict, text: str) -> Path:
    """plan.json (what the check reads) and plan.md beside it (what a reader reads); never replaced."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} exists: a plan is kept to check against its outcome; choose another plan.save=...")
    atomic_files.atomic_write_text(path.with_suffix(".md"), f"# The priced plan\n\nProduced by "
                                   f"`{document['command']}` at commit `{document['commit']}`.\n\n{text}\n")
    atomic_files.atomic_write_text(path, json.dumps(document, indent=1, default=float) + "\n")
    return path


def format_check(doc: dict, obtained: dict, spent: tuple[float, int, int] | None = None) -> str:
    """The widths the plan expected against the widths the runs gave; and its price against the runs' time."""
    rows = []
    for law in ("transfer", "unified"):
        for x in EXPONENTS:
            exp, got, was = (doc["expected"].get(law, {}).get(x), obtained.get(law, {}).get(x),
                             doc["before"].get(law, {}).get(x))
            ratio = got / exp if exp and got else float("nan")
            rows.append([law, GREEK[x], fmt(was, 2), fmt(exp, 2), fmt(got, 2), fmt(ratio, 2),
                         "yes" if np.isfinite(ratio) and 1 / 1.5 <= ratio <= 1.5 else "no"])
    head = [f"Plan of {doc['created']} (commit `{doc['commit'][:12]}`): chose {', '.join(doc['chosen']) or 'nothing'} "
            f"({doc['hours_chosen']:.2g} process-hours)."]
    if spent is not None:
        hours, found, chosen = spent
        head.append(f"Price: {doc['hours_chosen']:.2g} process-hours expected; {hours:.2g} spent by the {found} of its "
                    f"{chosen} runs that are recorded done (their wall times summed).")
    return "\n".join(head + [""] + md_table(["law", "exponent", "width before", "expected", "obtained", "obtained/expected",
                                      "within 1.5×"], rows))


def write_check(out: Path, text: str, command: str, plan_name: str = "plan") -> Path:
    """<plan>_check.md beside the plan (plan.json: plan_check.md): the widths it expected against those its
    runs gave. Named after its plan, so a second plan's check leaves the first's in place."""
    name = f"{plan_name}_check.md"
    with staging.staged(out) as stage:
        (stage / name).write_text(f"# The priced plan, checked\n\nProduced by `{command}`.\n\n{text}\n",
                                  encoding="utf-8")
    return out / name
