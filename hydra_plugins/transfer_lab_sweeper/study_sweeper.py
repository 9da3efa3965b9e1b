"""Hydra's basic sweeper, with the study protocol's cells in place of a plain Cartesian product,
one line per finished job (done/total, the run and its loss, elapsed time and an ETA:
transfer_lab/study/progress.py) and one summary line per launch.

`python train.py -m model.n_layer=2,4,8 data.finetune_chars=1e5,1e6` then runs, per size, one
pre-training, the fine-tunes at each D_F and the from-scratch runs at each D of the experiment's
data.scratch_chars grid (transfer_lab/study/protocol.py). Selected by conf/hydra/default.yaml; Hydra
instantiates plugins only from the hydra_plugins namespace package, hence this folder.

The sweeper counts what this launch's jobs returned (done, skipped, failed, interrupted, running in
another launch, not run) and prints `sweep <name>: N done, N skipped, N failed ...`. Where the
launcher itself raises (Hydra's job set-up on a full disk, a worker a signal reached before its job
began), it counts from the job files the jobs left (transfer_lab/study/interrupts.py). It stops
launching once a job reports a stop request or a full disk, and then exits non-zero: 128 + the
signal, or 1 for a full disk. A launch in which any job failed exits 1 too, its summary naming the
first failed runs and their one-line reasons (the jobs' own words: transfer_lab/study/outcomes.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException

from transfer_lab.atomic_files import disk_full_path, is_disk_full
from transfer_lab.study import interrupts, protocol
from transfer_lab.study.costs import non_embedding_params
from transfer_lab.study.launch_checks import config_groups
from transfer_lab.study.outcomes import (
    FAILED,
    NO_SPACE,
    NOT_RUN,
    ORDER,
    STOPPING,
    Outcome,
    failed,
    failure_note,
    summary_line,
)
from transfer_lab.study.progress import PlannedJob, Progress
from transfer_lab.study.records import STATUS_INTERRUPTED, read_result

log = logging.getLogger("transfer_lab")


class StudySweeper(BasicSweeper):
    _command_line: list[str] = []

    def _parse_config(self):  # the experiment's params, before the command line is added
        return protocol.experiment_params(dict(self.params), self._command_line)

    def split_arguments(self, overrides, max_batch_size):
        try:
            jobs = [cell.overrides for cell in protocol.expand(protocol.dimensions(overrides))]
        except ValueError as err:
            raise HydraException(str(err)) from None
        # in-process jobs one at a time, so that a stop request or a full disk ends the launch
        # between two jobs; parallel launchers get every job at once
        size = 1 if isinstance(self.launcher, BasicLauncher) else (max_batch_size or len(jobs) or 1)
        return [jobs[i:i + size] for i in range(0, len(jobs), size)]

    def sweep(self, arguments):
        self._command_line = list(arguments)
        launch_dir = Path(str(self.config.hydra.sweep.dir))
        interrupts.watch(launch_dir)  # a stop request marks it, and reaches the jobs running
        interrupts.remove_torn_job_files(launch_dir.parent)  # a killed launch's half-written job files
        lines = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides(lines), self.max_batch_size)
        # every cell was composed and checked before Hydra started (launch_checks.check_sweep_cells)
        progress = Progress(launch_dir, Path(str(self.config.paths.sweep_dir)) / "runs",
                            self._planned([job for batch in batches for job in batch]), lambda: workers(self.launcher))
        progress.start()
        try:
            counts, seen, launched, why = self._launch(batches, launch_dir, progress)
        finally:
            progress.stop()  # every job that ended has its line before the summary
        total = sum(map(len, batches))
        counts[NOT_RUN] += total - launched
        signum = interrupts.requested()
        if signum is not None and not why:
            why = f"stopped by {interrupts.signal_name(signum)}"
        elif counts[NO_SPACE] and not why:  # the path the job's full disk named, where the job could say it
            why = next((o.reason for o in seen if o == NO_SPACE and getattr(o, "reason", "")),
                       "no space left on the output disk")
        records_dir = f"{self.config.paths.sweep_dir}/runs"
        line = summary_line(self.config.sweep, counts, records_dir, "; ".join(filter(None, [why, failure_note(seen)])))
        log.info(line)
        print(line, flush=True)
        if signum is not None:
            sys.exit(interrupts.exit_status())
        if counts[NO_SPACE]:
            print(f"error: {why}; free space and run the same command again: finished runs are kept and "
                  "interrupted ones resume", file=sys.stderr, flush=True)
            sys.exit(1)
        if counts[FAILED]:
            print(f"error: {counts[FAILED]} job(s) failed, each record in {records_dir} says why; fix the cause "
                  "and run the same command again: finished runs are kept", file=sys.stderr, flush=True)
            sys.exit(1)
        return []

    def _launch(self, batches, launch_dir: Path, progress: Progress) -> tuple[Counter, list, int, str]:
        """Launch batch after batch until a job asks the launch to stop: (counts, every outcome with the
        reason a failed job gave, jobs launched, why the launch stopped early or '')."""
        counts: Counter = Counter()
        seen: list[str] = []
        launched, why = 0, ""
        for batch in batches:
            try:
                outcomes = [_outcome_of(r) for r in self.launcher.launch(batch, initial_job_idx=launched)]
            except BaseException as err:  # noqa: BLE001 - Hydra's job set-up on a full disk; a worker a signal
                # reached before its job could install the handlers (joblib re-raises its KeyboardInterrupt)
                if isinstance(err, SystemExit) or (not is_disk_full(err) and interrupts.requested() is None):
                    raise
                outcomes = [_outcome_from_files(launch_dir / str(launched + i)) for i in range(len(batch))]
                if is_disk_full(err):
                    why = f"no space left on {disk_full_path(err, launch_dir)}"
                    if NO_SPACE not in outcomes and NOT_RUN in outcomes:  # the job whose set-up hit the full disk
                        outcomes[outcomes.index(NOT_RUN)] = NO_SPACE
            for i, outcome in enumerate(outcomes):
                progress.report(launched + i, outcome)
            counts.update(outcomes)
            seen += outcomes
            launched += len(batch)
            if any(counts[s] for s in STOPPING) or interrupts.requested():
                break
        return counts, seen, launched, why

    def _planned(self, jobs: list[list[str]]) -> list[PlannedJob]:
        """What prices each job: its regime and data size from its overrides; N and the pre-training
        budget from its composed config, composed once per model and pre-training setting (no other
        override changes them, and a composition takes a tenth of a second)."""
        groups, shapes, planned = set(config_groups()), {}, []
        for job in jobs:
            values = dict(str(line).partition("=")[::2] for line in job)  # a later value of a key wins
            shaping = tuple(line for line in map(str, job) if line.partition("=")[0].lstrip("+~") in groups
                            or line.partition("=")[0].lstrip("+~").split(".")[0] in ("model", "pretrain"))
            if shaping not in shapes:
                shapes[shaping] = self._shape(list(job))
            chars = values.get(protocol.FINETUNE_GRID)  # a pre-training's cell has none
            planned.append(PlannedJob(values.get(protocol.REGIME, "finetune"), tuple(map(str, job)),
                                      d=float(chars) if chars else None, **shapes[shaping]))
        return planned

    def _shape(self, overrides: list[str]) -> dict:
        """N and the pre-training budget of a job's config; {} where it cannot be read (the ETA then
        goes by this launch's run times)."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            tokens, chars = cfg.pretrain.get("tokens"), cfg.pretrain.get("chars")
            return {"n": non_embedding_params(int(cfg.model.n_layer), int(cfg.model.n_embd)),
                    "pretrain_tokens": float(tokens) if tokens is not None else None,
                    "pretrain_chars": float(chars) if chars is not None else None}
        except Exception as err:  # noqa: BLE001 - a price is a nicety: never a reason to stop a launch
            log.warning("the ETA cannot price [%s] (%s: %s)", " ".join(overrides), type(err).__name__, err)
            return {}


def workers(launcher) -> int:
    """How many jobs the launcher runs at once: the ETA hands the queue to that many."""
    joblib = getattr(launcher, "joblib", None)
    if isinstance(joblib, Mapping):  # joblib, and per-device (which sets n_jobs when it launches)
        n = int(joblib.get("n_jobs") or 1)
        return n if n > 0 else max(1, (os.cpu_count() or 1) + 1 + n)  # joblib's -1: every core
    params = getattr(launcher, "params", None)
    if isinstance(params, Mapping) and params.get("array_parallelism"):  # a SLURM array: its limit
        return int(params["array_parallelism"])
    return 1


def _outcome_of(result) -> str:
    value = result._return_value
    if result.status != JobStatus.COMPLETED:  # the job raised past run_job: Hydra kept the exception
        return failed(f"job [{' '.join(result.overrides or [])}]: {type(value).__name__}: {value}")
    return value if value in ORDER else failed(f"job [{' '.join(result.overrides or [])}] returned {value!r}")


def _outcome_from_files(job_dir: Path) -> str:
    """What a job left when the launcher could not return its result: the outcome it noted, else
    `interrupted` if its run's record says so, else not run."""
    job = interrupts.read_job(job_dir)
    if job.get("outcome") in ORDER:
        return Outcome(job["outcome"], str(job.get("error") or ""))
    try:
        if read_result(Path(job["run_dir"])).status == STATUS_INTERRUPTED:
            return "interrupted"
    except Exception:  # noqa: BLE001 - no job file, no run named, no record yet
        pass
    return NOT_RUN
