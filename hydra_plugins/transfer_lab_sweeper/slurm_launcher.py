"""hydra-submitit-launcher's SLURM launcher, made to survive the jobs SLURM kills.

submitit's launcher ends a multirun at the first job SLURM killed (time limit, out of memory, node
failure, scancel: `UncompletedJobError` out of `results()`), and without accounting it polls a
killed job forever. This one waits for every job itself:

  finished      its result (done, skipped, failed, interrupted, ...) goes to the sweeper's summary
  killed        no result, and sacct says the job ended (or, without accounting, it has left
                squeue for `GONE_GRACE_S`): the run's record says failed, with SLURM's state and the
                job id, and the sweep goes on; the next launch retries it
  rejected      sbatch refused the array: one line naming sbatch's reason and the keys to change

A job stops its own run on SIGTERM (scancel, the time limit) and on SIGUSR2 (submitit's
pre-emption notice): the run is recorded `interrupted` with its checkpoint, and resumes at the next
launch. Ctrl-C or SIGTERM to the launching process cancels the jobs still in SLURM, which then stop
the same way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from transfer_lab.errors import ConfigError, exit_with
from transfer_lab.study import interrupts, records
from transfer_lab.study.outcomes import FAILED, failed

log = logging.getLogger("transfer_lab")
POLL_S = 5.0  # between two looks at the queue
GONE_GRACE_S = 60.0  # without accounting: this long out of squeue with no result means killed


class StudySlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in queue_keys else f"slurm_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except submitit.core.utils.FailedJobError as err:
            reason = " ".join(str(err).split())[:300]
            exit_with(ConfigError(f"SLURM refused the submission ({reason}); set hydra.launcher.partition, "
                                  "cpus_per_task, mem_gb, timeout_min (and gpus_per_node for hydra/launcher="
                                  "slurm_gpu) to what your cluster offers"))
        log.info("submitted %d jobs as SLURM array %s; outputs in %s", len(jobs), jobs[0].job_id.split("_")[0],
                 sweep_dir)
        return self._wait(jobs, job_overrides, [sweep_dir / str(i) for i in range(initial_job_idx,
                                                                              initial_job_idx + len(jobs))])

    def _wait(self, jobs: list, job_overrides, job_dirs: list[Path]) -> list[JobReturn]:
        """Every job's JobReturn, once each has a result or is known to be gone."""
        outcomes: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        cancelled = False
        while len(outcomes) < len(jobs):
            if interrupts.requested() is not None and not cancelled:  # the launcher was asked to stop
                log.warning("stop requested (%s): cancelling the jobs still in SLURM; each stops its run at a step",
                            interrupts.signal_name(interrupts.requested()))
                for i, job in enumerate(jobs):
                    if i not in outcomes:
                        job.cancel(check=False)
                cancelled = True
            pending = [i for i in range(len(jobs)) if i not in outcomes]
            jobs[pending[0]].done(force_check=True)  # one sacct call refreshes every job's state
            queued = _in_squeue()
            for i in pending:
                job = jobs[i]
                if job.paths.result_pickle.exists() or job.done():
                    outcomes[i] = self._returned(job, job_overrides[i], job_dirs[i])
                elif queued is not None and job.job_id not in queued:
                    gone_since.setdefault(i, time.monotonic())
                    if time.monotonic() - gone_since[i] > GONE_GRACE_S:
                        outcomes[i] = self._killed(job, job_overrides[i], job_dirs[i], "gone from squeue")
                else:
                    gone_since.pop(i, None)
            if len(outcomes) < len(jobs):
                time.sleep(POLL_S)
        return [outcomes[i] for i in range(len(jobs))]

    def _returned(self, job, overrides, job_dir: Path) -> JobReturn:
        try:
            return job.results()[0]
        except Exception:  # noqa: BLE001 - UncompletedJobError, FailedJobError: the job died without a result
            return self._killed(job, overrides, job_dir, job.state)

    def _killed(self, job, overrides, job_dir: Path, state: str) -> JobReturn:
        """Record the job's run failed with SLURM's state and the job id; the sweep goes on."""
        why = f"the job ended without a result: SLURM state {state} (job {job.job_id})"
        log.error("job #%s [%s]: %s", job_dir.name, " ".join(filter_overrides(overrides)), why)
        job = interrupts.read_job(job_dir)
        if "run_dir" in job:  # the job got as far as naming its run: mark that record
            run_dir = Path(job["run_dir"])
            try:
                result = records.read_result(run_dir)
            except Exception:  # noqa: BLE001 - no record yet, or a torn one: nothing to mark
                result = None
            if result is not None and result.status == records.STATUS_RUNNING:
                result.status, result.stop_reason, result.error = records.STATUS_FAILED, "killed", why
                records.write_result(run_dir, result)
            elif result is not None and result.status == records.STATUS_INTERRUPTED:
                result.error = f"{result.error}; {why}"
                records.write_result(run_dir, result)
        ret = JobReturn(overrides=list(overrides))
        run = job.get("run_key", f"job #{job_dir.name}")
        ret.status, ret._return_value = JobStatus.COMPLETED, failed(f"{run}: {why}")
        if "outcome" not in job:  # the job file says how it ended, as a returned job's does: its progress line
            interrupts.note_job(job_dir, outcome=FAILED, error=ret._return_value.reason, ended_at=time.time())
        return ret


def _in_squeue() -> set[str] | None:
    """Job ids SLURM still holds (array tasks one per line), or None where squeue cannot answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", str(os.getuid()), "-o", "%i"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line.strip() for line in out.splitlines() if line.strip()}

