"""What a job can return, and the one summary line a launch prints.

train.py's job returns one of these; the sweeper counts them per launch (a second launch of the
same sweep counts its own jobs, never the first one's).
"""

from __future__ import annotations

from collections import Counter

DONE = "done"  # trained to its end and recorded
SKIPPED = "skipped"  # already finished (here, or in another sweep: reused)
FAILED = "failed"  # recorded failed with its error (NaN, out of memory, a crash, a SLURM kill): the launch exits 1
INTERRUPTED = "interrupted"  # stopped by a signal at a step boundary; the next launch resumes it
BUSY = "busy"  # another process holds the run's lock: it is training there
NO_SPACE = "no_space"  # the disk filled up; recorded failed where the record could still be written
NOT_RUN = "not_run"  # never started: the launch stopped first
ORDER = (DONE, SKIPPED, FAILED, INTERRUPTED, BUSY, NO_SPACE, NOT_RUN)
STOPPING = (INTERRUPTED, NO_SPACE)  # a job that returns one of these ends the launch
LABELS = {BUSY: "running in another launch", NOT_RUN: "not run"}


class Outcome(str):
    """An outcome that carries the one-line reason a job failed (or the path a full disk named) to
    the launcher's summary. Equal to its plain name; pickled with its reason, so a parallel or
    SLURM worker's result brings it along."""

    reason: str

    def __new__(cls, value: str, reason: str = "") -> "Outcome":
        outcome = super().__new__(cls, value)
        outcome.reason = reason
        return outcome

    def __reduce__(self):
        return Outcome, (str(self), self.reason)


def failed(reason: str) -> Outcome:
    return Outcome(FAILED, one_line(reason))


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failure_note(outcomes: list, shown: int = 2) -> str:
    """`2 failed: <key>: <reason>; <key>: <reason>` (the first `shown`, then how many more), '' if none."""
    reasons = [getattr(o, "reason", "") or "no reason recorded" for o in outcomes if o == FAILED]
    if not reasons:
        return ""
    more = f"; {len(reasons) - shown} more in their records" if len(reasons) > shown else ""
    return f"{len(reasons)} failed: " + "; ".join(reasons[:shown]) + more


def summary_line(sweep: str, counts: Counter, records: str, why: str = "") -> str:
    """`sweep demo: 3 done, 24 skipped, 0 failed (records in ...)`, the other outcomes where they
    occur; a run the full disk failed counts as failed (`why` names the disk)."""
    parts = [f"{counts[DONE]} done", f"{counts[SKIPPED]} skipped", f"{counts[FAILED] + counts[NO_SPACE]} failed"]
    parts += [f"{counts[s]} {LABELS.get(s, s)}" for s in (INTERRUPTED, BUSY, NOT_RUN) if counts[s]]
    return f"sweep {sweep}: {', '.join(parts)} (records in {records})" + (f"; {why}" if why else "")
