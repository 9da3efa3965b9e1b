"""A launch's ETA: its jobs not yet ended, each priced, handed to its workers in dispatch order.

A job's price, first that applies:
  a skip             an earlier launch of this sweep finished the same cell (same overrides) and its
                     record is still done: this launch skips it, in the mean time its skips take
  the cost model     study/costs.py fitted on the sweep's finished records (every launch's), where
                     it prices the job's regime (a pre-training: its budget of tokens; a scratch or
                     fine-tuned run: the tokens it takes to converge, fitted per regime)
  this launch        the mean time of the jobs this launch trained in that regime, else in any
The cost model prices training; a job also starts, loads its data and scores its best point: the
mean of that overhead in this launch's jobs (job time less the record's training time) is added.
A running job costs its price less the time it has already run. Used by study/progress.py.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from statistics import median

from transfer_lab.errors import ResultsError
from transfer_lab.study import interrupts, records
from transfer_lab.study.outcomes import DONE, SKIPPED


def duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def finish_in(running: list[float], queued: list[float], workers: int) -> float:
    """Seconds until the last job ends: running jobs hold their workers for what they have left,
    queued jobs go in dispatch order to the first worker free (as joblib, a SLURM array and a
    one-at-a-time launch hand them out)."""
    slots = list(running) + [0.0] * max(workers - len(running), 0)
    heapq.heapify(slots)
    for price in queued:
        heapq.heappush(slots, heapq.heappop(slots) + price)
    return max(slots, default=0.0)


class Eta:
    """The prices of one launch's jobs: what the sweep's records say, and what this launch adds."""

    def __init__(self, launch_dir: Path, runs_dir: Path, jobs: list):
        self.jobs = jobs
        self.rows: dict[str, dict] = {}  # run key -> what the cost model reads of its record
        for run_dir in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
            try:
                self.add(records.read_result(run_dir))
            except Exception:  # noqa: BLE001 - a torn or foreign record: its job says so, the ETA does without
                continue
        self.free = finished_before(Path(launch_dir), jobs)
        self.trained: dict[str, list[float]] = {}  # regime -> seconds of each job this launch trained
        self.overhead: list[float] = []  # seconds of each of those jobs outside its training loop
        self.skips: list[float] = []  # seconds of each job this launch skipped (a second or two: start, read)
        self._model = None  # a CostModel, refitted when a run is added
        self._fitted = False

    def timed(self, outcome: str, regime: str, seconds: float, record: records.RunResult | None) -> None:
        """A job this launch trained or skipped, and how long it took: the means' data, the cost model's too."""
        if outcome == SKIPPED:
            self.skips.append(seconds)
            return
        self.trained.setdefault(regime, []).append(seconds)
        if record is not None:
            self.add(record)
            self.overhead.append(max(seconds - record.wall_time_s, 0.0))

    def add(self, record: records.RunResult) -> None:
        """A finished run the cost model learns from (a run this launch trained, or an earlier one)."""
        if record.status != records.STATUS_DONE:
            return
        self.rows[record.run_key] = {
            "regime": record.regime, "N": float(record.non_embedding_params), "D_F": record.finetune_chars,
            "status": record.status, "wall_time_s": record.wall_time_s, "tokens_seen": record.tokens_seen,
            "chars_per_token": record.chars_seen / record.tokens_seen if record.tokens_seen else None}
        self._fitted = False

    def model(self):
        """The cost model of the sweep's finished runs, or None where it cannot be fitted yet."""
        if not self._fitted:
            import pandas as pd  # in the thread that prints, once a line is due: the launch starts light

            from transfer_lab.study.costs import CostModel

            try:
                self._model = CostModel.fit(pd.DataFrame(list(self.rows.values()))) if self.rows else None
            except (ResultsError, ValueError, KeyError):  # too few runs, or fewer than two sizes
                self._model = None
            self._fitted = True
        return self._model

    def price(self, index: int) -> tuple[float, str] | None:
        """(seconds, "model" | "launch") for one job, or None where nothing can price it."""
        job = self.jobs[index]
        model = self.model()
        overhead = sum(self.overhead) / len(self.overhead) if self.overhead else 0.0
        if model is not None and job.n:
            if job.regime == "pretrain":
                tokens = job.pretrain_tokens or self._tokens_of(job.pretrain_chars)
                if tokens:
                    return model.seconds("pretrain", job.n, pretrain_tokens=tokens) + overhead, "model"
            elif job.regime in model.tokens and job.d:
                return model.seconds(job.regime, job.n, job.d) + overhead, "model"
        times = self.trained.get(job.regime) or [s for runs in self.trained.values() for s in runs]
        return (sum(times) / len(times), "launch") if times else None

    def _tokens_of(self, chars: float | None) -> float | None:
        """A budget set in characters, in tokens: at the ratio the sweep's pre-trainings read."""
        ratios = [r["chars_per_token"] for r in self.rows.values()
                  if r["regime"] == "pretrain" and r["chars_per_token"]]
        return chars / median(ratios) if chars and ratios else None

    def eta(self, running: list[tuple[int, float]], queued: list[int], workers: int) -> str:
        """`ETA 9m30s (cost model of 14 runs; 3 to skip)`: `running` holds (job, seconds it has run)."""
        sources = {"model": 0, "launch": 0, "skip": 0}
        left: dict[int, float] = {}
        for index in [i for i, _ in running] + queued:
            if index in self.free:
                left[index], source = (sum(self.skips) / len(self.skips) if self.skips else 0.0), "skip"
            else:
                priced = self.price(index)
                if priced is None:
                    return f"ETA unknown until a {self.jobs[index].regime} run is timed"
                left[index], source = priced
            sources[source] += 1
        seconds = finish_in([max(left[i] - ran, 0.0) for i, ran in running], [left[i] for i in queued], workers)
        return f"ETA {duration(seconds)} ({self._source(sources)})"

    def _source(self, sources: dict[str, int]) -> str:
        """What priced the jobs left: the cost model, this launch's mean (how many, where both did), skips."""
        timed = sum(len(t) for t in self.trained.values())
        mean = f"mean of this launch's {timed} trained run{'s' if timed > 1 else ''}"
        said = [f"cost model of {self.model().runs} runs"] if sources["model"] else []
        if sources["launch"]:
            n = sources["launch"]
            said.append(f"{n} job{'s' if n > 1 else ''} at the {mean}" if said else mean)
        if sources["skip"]:
            said.append(f"{sources['skip']} to skip" + ("" if said else ", finished in an earlier launch"))
        return "; ".join(said)


def finished_before(launch_dir: Path, jobs: list) -> set[int]:
    """Jobs of this launch whose same cell (the same overrides) an earlier launch of the sweep
    finished, with the run's record still done: this launch will skip them."""
    wanted = {tuple(sorted(job.overrides)): i for i, job in enumerate(jobs)}
    found: set[int] = set()
    for job_dir in sorted(launch_dir.parent.glob("*/*")):
        if job_dir.parent == launch_dir or not job_dir.name.isdigit():
            continue
        job = interrupts.read_job(job_dir)
        if job.get("outcome") not in (DONE, SKIPPED) or not job.get("run_dir"):
            continue
        index = wanted.get(read_overrides(job_dir))
        if index is not None and index not in found and _still_done(job["run_dir"]):
            found.add(index)
    return found


def read_overrides(job_dir: Path) -> tuple[str, ...] | None:
    """The overrides Hydra saved for a job (.hydra/overrides.yaml), sorted; None if unreadable."""
    import yaml

    try:
        lines = yaml.safe_load((Path(job_dir) / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return tuple(sorted(str(x) for x in lines)) if isinstance(lines, list) else None


def _still_done(run_dir: str) -> bool:
    try:
        return records.read_result(Path(run_dir)).status == records.STATUS_DONE
    except Exception:  # noqa: BLE001 - gone or torn: its job trains it again
        return False
