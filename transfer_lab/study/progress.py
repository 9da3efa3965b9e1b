"""One line per finished job of a multirun: how far the launch is, what the run gave, when it ends.

  [7/27] done scratch-L2-d56-df1e5-1a2b3c4d5e (scratch) in 1m12s: 2.345 bits/char | elapsed 8m03s, ETA 9m30s
  (cost model of 14 runs)                                    (one line on the console, wrapped here)

Who prints: the launching process (train.py -m), from a thread that reads the job files of this
launch's Hydra folder (each job notes `started_at`, and `outcome` and `ended_at` when it ends:
study/job.py). Every launcher leaves those files, so the basic, joblib, per-device and SLURM
launchers share this one path; one writer keeps the lines whole and the count exact whatever the
workers do, and a worker killed mid-job cannot leave a count half-updated. The sweeper also reports
each outcome the launcher returns, for a job whose file could not say (a full disk).

What counts: done/total counts the jobs this launch is through with: trained (done), already
finished (skipped: its line gives the recorded loss and says so, and it takes a second), failed,
and left to another launch that is training the run. An interrupted job gets a line that does not
count: the next launch resumes it, and counts it then. A job the launch stopped before it began
gets no line. So a resumed launch counts every cell once; its skipped ones pass in a second each.

ETA: the jobs not yet ended, priced (the sweep's cost model, else this launch's mean run time) and
handed to the launch's workers in dispatch order; the line names the source (study/eta.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transfer_lab.study import interrupts, records
from transfer_lab.study.eta import Eta, duration
from transfer_lab.study.outcomes import (
    BUSY,
    DONE,
    FAILED,
    INTERRUPTED,
    NO_SPACE,
    SKIPPED,
)

POLL_S = 1.0  # between two looks at the job files: a line is at most this late
COUNTED = (DONE, SKIPPED, FAILED, BUSY, NO_SPACE)  # the launch is through with these


@dataclass(frozen=True)
class PlannedJob:
    """What prices one job: its regime, N, its data (D or D_F) and its pre-training budget."""

    regime: str
    overrides: tuple[str, ...]
    n: float | None = None  # non-embedding parameters
    d: float | None = None  # D (scratch) or D_F (finetune) characters; None for a pre-training
    pretrain_tokens: float | None = None
    pretrain_chars: float | None = None  # the budget in characters where it is set that way


def job_line(done: int, total: int, outcome: str, key: str, regime: str, *, bits: float | None = None,
             seconds: float | None = None, reason: str = "") -> str:
    """`[done/total] <outcome> <run key> (<regime>): <what it gave>`, without elapsed and ETA."""
    loss = f"{bits:.3f} bits/char" + (" (source)" if regime == "pretrain" else "") if bits is not None else ""
    took = f" {'in' if outcome == DONE else 'after'} {duration(seconds)}" if seconds is not None else ""
    took = "" if outcome == SKIPPED else took  # a second of reading its record: not the run's time
    what = {
        DONE: loss or "no loss recorded",
        SKIPPED: f"{loss + ', ' if loss else ''}finished before this launch",
        FAILED: reason or "no reason recorded",
        NO_SPACE: reason or "no space left on the output disk",
        BUSY: "another launch is training it",
        INTERRUPTED: "not counted, the next launch resumes it",
    }[outcome]
    word = FAILED if outcome == NO_SPACE else outcome
    return f"[{done}/{total}] {word} {key} ({regime}){took}: {what}"


class Progress:
    """The lines of one launch: `poll()` reads the job files, `report()` takes an outcome the
    launcher returned; each job gets at most one line, printed by whichever sees it first."""

    def __init__(self, launch_dir: Path, runs_dir: Path, jobs: list[PlannedJob], workers: Callable[[], int],
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time):
        self.launch_dir, self.runs_dir, self.jobs = Path(launch_dir), Path(runs_dir), jobs
        self.workers, self.clock = workers, clock
        self.write = write or _stdout
        self.started = clock()
        self.counted = 0
        self.seen: set[int] = set()
        self.prices: Eta | None = None  # built at the first line (it reads every record of the sweep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, after a last look: every job that ended has its line before the summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.poll()

    def _watch(self) -> None:
        warned = False
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - progress lines must never stop a sweep
                if not warned:
                    print(f"warning: progress lines stopped ({type(err).__name__}: {err}); the sweep goes on",
                          file=sys.stderr, flush=True)
                    warned = True

    def poll(self) -> None:
        with self._lock:
            jobs = self._unseen()
            for index, job in jobs.items():
                if job.get("outcome"):
                    self._ended(index, job["outcome"], job, jobs)

    def report(self, index: int, outcome: str) -> None:
        """An outcome the launcher returned (its reason with it), for a job whose file may not say."""
        with self._lock:
            if index not in self.seen and 0 <= index < len(self.jobs):
                jobs = self._unseen()
                job = {**jobs[index], "error": getattr(outcome, "reason", "") or jobs[index].get("error")}
                self._ended(index, str(outcome), job, jobs)

    def _unseen(self) -> dict[int, dict]:
        """The job file of every job without a line yet ({} for one not started), read once per look."""
        return {i: interrupts.read_job(self.launch_dir / str(i)) for i in range(len(self.jobs)) if i not in self.seen}

    def _ended(self, index: int, outcome: str, job: dict, jobs: dict[int, dict]) -> None:
        self.seen.add(index)
        if outcome not in (*COUNTED, INTERRUPTED):  # not run: the launch stopped before it began
            return
        self.counted += outcome in COUNTED
        seconds = _seconds(job)
        record = _record(job.get("run_dir"))
        if self.prices is None:  # the first line: read the sweep's records once
            self.prices = Eta(self.launch_dir, self.runs_dir, self.jobs)
        if outcome in (DONE, SKIPPED) and seconds is not None:
            self.prices.timed(outcome, self.jobs[index].regime, seconds, record)
        key = str(job.get("run_key") or f"job #{index}")
        reason = str(job.get("error") or "")
        line = job_line(self.counted, len(self.jobs), outcome, key, self.jobs[index].regime,
                        bits=record.best_val_bits_per_char if record else None, seconds=seconds,
                        reason=reason[len(key) + 2:] if reason.startswith(f"{key}: ") else reason)
        now = self.clock()
        self.write(f"{line} | elapsed {duration(now - self.started)}, {self._eta(now, jobs)}")

    def _eta(self, now: float, jobs: dict[int, dict]) -> str:
        running, queued = [], []
        for index, job in jobs.items():
            began = job.get("started_at")
            if index in self.seen or job.get("outcome"):
                continue  # ended: its line is printed, or about to be
            if isinstance(began, (int, float)):
                running.append((index, now - began))
            else:
                queued.append(index)
        if not running and not queued:
            return "ETA 0s (nothing left)"
        return self.prices.eta(running, queued, max(1, int(self.workers() or 1)))


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write: a line from this thread never splits another's
    sys.stdout.flush()


def _seconds(job: dict) -> float | None:
    began, ended = job.get("started_at"), job.get("ended_at")
    if isinstance(began, (int, float)) and isinstance(ended, (int, float)):
        return max(0.0, ended - began)
    return None


def _record(run_dir) -> records.RunResult | None:
    if not run_dir:
        return None
    try:
        return records.read_result(Path(run_dir))
    except Exception:  # noqa: BLE001 - no record (a job that failed before writing one), or a torn one
        return None

