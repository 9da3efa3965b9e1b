"""A report set is all new or all old: written into a staging folder beside it, then moved into
place file by file with SIGINT and SIGTERM held back, so that a stop, a full disk or a failing
plot never leaves a new table.csv beside an old report.md, or a torn report.html."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path

from transfer_lab import atomic_files
from transfer_lab.errors import UserError

HELD = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def held_signals():
    """SIGINT and SIGTERM wait until the block ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _move_into_place(staging: Path, target: Path) -> None:
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = target / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        os.chmod(dest, atomic_files.file_mode())


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@contextlib.contextmanager
def staged(target: Path):
    """Yield a fresh folder to write a report set into; on success its files replace those in
    `target` (other files there, e.g. a README, are kept); on any failure nothing in `target` changes."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob(".staging-*"):  # a killed analysis's leftovers (its pid is gone)
        if not _alive(old.name.rpartition("-")[2]):
            shutil.rmtree(old, ignore_errors=True)
    staging = target / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        with held_signals():
            _move_into_place(staging, target)
    except OSError as err:
        if atomic_files.is_disk_full(err):  # one line; what was in the folder is still there
            raise UserError(f"no space left on the disk while writing the report to {target}; free some space and "
                            "run the same command again (the folder still holds its last complete report set)") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
