"""Hydra callback: one summary line at the end of a sweep (done / skipped / failed)."""

from __future__ import annotations

import logging
from collections import Counter

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback

log = logging.getLogger("transfer_lab")


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if job_return.status == JobStatus.COMPLETED and job_return._return_value in ("done", "skipped", "failed"):
            self.counts[job_return._return_value] += 1
        else:
            self.counts["failed"] += 1

    def on_multirun_end(self, config, **kwargs) -> None:
        c = self.counts
        line = (f"sweep {config.sweep}: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed "
                f"(records in {config.paths.sweep_dir}/runs)")
        log.info(line)
        print(line, flush=True)
