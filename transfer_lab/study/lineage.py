"""Run lineages across sweeps: a target run's key without its step ceiling names one run,
however far it was trained. A job finds its lineage's converged run (reused) or a run a lower
ceiling stopped or a kill interrupted (extended from its checkpoint) in any sweep of the output root.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from transfer_lab.errors import UserError
from transfer_lab.study import records
from transfer_lab.study.records import STATUS_DONE, RunResult
from transfer_lab.training.fit import relocate_checkpoints
from transfer_lab.training.run_files import CHECKPOINT_DIR


def predecessor(sweeps_dir: Path, prefix: str, key: str, lineage: str, ceiling: int,
                lineage_of: Callable[[RunResult], str]) -> tuple[Path, str] | None:
    """A run of this lineage in any sweep: (folder, "reuse") if it converged (a higher ceiling would
    not have changed it; the key hashes nothing of the sweep's name), (folder, "extend") if it
    stopped at a lower ceiling, or was interrupted, with a checkpoint to go on from.

    `lineage_of` names the lineage of a record written before records carried one."""
    extend = None
    for folder in sorted(sweeps_dir.glob(f"*/runs/{prefix}-*")):
        try:
            found = records.read_result(folder)
        except UserError:
            continue  # a torn or foreign record elsewhere is that sweep's business
        if (found.lineage or lineage_of(found)) != lineage and found.run_key != key:
            continue
        if found.status == STATUS_DONE and found.converged is not False:
            return folder, "reuse"
        last = folder / CHECKPOINT_DIR / "last.ckpt"
        if extend is None and last.exists() and (found.status != STATUS_DONE or found.steps < ceiling):
            extend = (folder, "extend")
    return extend


def copy_run(donor: Path, run_dir: Path, sweep: str, with_checkpoints: bool, lineage: str = "") -> None:
    """Copy a run folder into this sweep (staged, then renamed into place); its record names this
    sweep; metrics, config and (to extend it) checkpoints stay as they were measured. An extended
    run owns its copy of the checkpoints, pointing at their new folder: the donor may be deleted.
    `lineage`: the one the donor was matched on, recorded where the donor's record predates lineages."""
    staging = run_dir.parent / f".{run_dir.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    skip = [".*.tmp", "*.lock"] + ([] if with_checkpoints else [CHECKPOINT_DIR])
    shutil.copytree(donor, staging, ignore=shutil.ignore_patterns(*skip))
    if with_checkpoints and (staging / CHECKPOINT_DIR).is_dir():
        relocate_checkpoints(staging / CHECKPOINT_DIR, donor / CHECKPOINT_DIR, run_dir / CHECKPOINT_DIR)
    result = records.read_result(staging)
    result.sweep, result.lineage = sweep, result.lineage or lineage
    records.write_result(staging, result)
    shutil.rmtree(run_dir, ignore_errors=True)
    staging.rename(run_dir)
