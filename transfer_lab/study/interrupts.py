"""Stop requests: SIGTERM (kill, a scheduler, SLURM's scancel and time limit), SIGINT (Ctrl-C) and
SIGUSR2 (submitit's pre-emption notice) stop a run cleanly instead of killing it mid-step.

A handler only records the request (this module is light: the launching process imports it
without torch). The training loop asks `requested()` after every step, and a run stops there with
its checkpoint saved (training/callbacks.StopAtStepBoundary); the job records it `interrupted` and
the next launch resumes it.

A launch spans processes: the launching process (train.py -m) and, with a parallel launcher, its
workers. Each job writes a small job file in its Hydra folder (its pid, its run, and at the end its
outcome). When the launching process is asked to stop, it leaves a marker in the launch folder (a
job that has not started sees it and does not start) and passes the signal on to the workers
running a job, and only those: an idle worker keeps serving the queue. It exits 128 + the signal
(143 for SIGTERM, 130 for SIGINT) after its summary line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

from transfer_lab.atomic_files import atomic_write_text, orphaned

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
STOP_MARKER = "stop-requested"  # in the launch folder: the signal that asked the launch to stop
JOB_FILE = "job.json"  # in a job's Hydra folder: {"pid", "run_key", "run_dir", "outcome"}
_requested: list[int] = []  # the first signal this process received
_launch: list[Path] = []  # the launch folder this process watches (a job) or tends (the launcher)


def install_handlers(launcher: bool = False) -> None:
    """Record SIGTERM / SIGINT / SIGUSR2 instead of dying mid-step (main thread only: Python's rule),
    replacing what was there (Python's KeyboardInterrupt, submitit's "bypass"). `launcher`: also
    mark the launch folder and pass the request on to the workers running a job."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        if _requested:
            return
        _requested.append(signum)
        if launcher and _launch:
            _mark_and_forward(_launch[0], signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def watch(launch_dir: Path | None) -> None:
    """The launch folder whose stop marker this process obeys (a job) or writes (the launcher)."""
    _launch[:] = [Path(launch_dir)] if launch_dir is not None else []


def requested() -> int | None:
    """The signal that asked this process, or its launch, to stop; None if none did."""
    if _requested:
        return _requested[0]
    if _launch and (_launch[0] / STOP_MARKER).exists():
        try:
            return int((_launch[0] / STOP_MARKER).read_text())
        except (OSError, ValueError):
            return signal.SIGTERM
    return None


def exit_status() -> int | None:
    """128 + the signal, as a shell reports a process a signal ended (None: no stop requested)."""
    signum = requested()
    return None if signum is None else 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def note_job(job_dir: Path | None, **fields) -> None:
    """Add `fields` to this job's job file (the launcher reads it: whom to signal, what happened).
    Best effort: on a full disk the job goes on, and the launcher counts from what it has."""
    if job_dir is None:
        return
    with contextlib.suppress(OSError):
        atomic_write_text(Path(job_dir) / JOB_FILE, json.dumps({**read_job(job_dir), **fields}))


def remove_torn_job_files(launches_dir: Path) -> None:
    """Job-file temps that a SIGKILL left in earlier launches' folders (`.job.json.<pid>-<hex>.tmp`);
    a live writer's temp is about to be renamed, so it stays."""
    for tmp in Path(launches_dir).glob(f"*/*/.{JOB_FILE}.*.tmp"):
        if orphaned(tmp):
            tmp.unlink(missing_ok=True)


def read_job(job_dir: Path) -> dict:
    try:
        job = json.loads((Path(job_dir) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return job if isinstance(job, dict) else {}


def _mark_and_forward(launch_dir: Path, signum: int) -> None:
    """Write the marker first, then signal the running jobs: a job either noted its pid before the
    scan (and is signalled) or looks at the marker after it was written (and does not start)."""
    with contextlib.suppress(OSError):  # a full disk: the running jobs still get the signal
        (launch_dir / STOP_MARKER).write_text(str(signum))
    me = os.getpid()
    for job_file in launch_dir.glob(f"*/{JOB_FILE}"):
        job = read_job(job_file.parent)
        pid = job.get("pid")
        if isinstance(pid, int) and pid != me and "outcome" not in job and _descends_from(pid, me):
            with contextlib.suppress(ProcessLookupError, PermissionError):  # it ended meanwhile
                os.kill(pid, signum)


def _descends_from(pid: int, ancestor: int) -> bool:
    """`pid` is a (grand)child of `ancestor`: a worker of this launch, never an unrelated process."""
    for _ in range(16):
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if parent == ancestor:
            return True
        if parent <= 1:
            return False
        pid = parent
    return False
