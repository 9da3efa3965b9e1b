"""Hydra callback: one summary line at the end of a sweep (done / skipped / failed).

Jobs may run in other processes (joblib, SLURM), so each job appends its status to a file in
the sweep's Hydra folder and the summary is read back from there.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback

log = logging.getLogger("transfer_lab")
STATUS_FILE = "job_status.jsonl"


class SweepSummary(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        value = job_return._return_value if job_return.status == JobStatus.COMPLETED else None
        status = value if value in ("done", "skipped", "failed") else "failed"
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / STATUS_FILE, "a", encoding="utf-8") as handle:  # one short O_APPEND write
            handle.write(json.dumps({"job": config.hydra.job.num, "status": status}) + "\n")

    def on_multirun_end(self, config, **kwargs) -> None:
        path = Path(config.hydra.sweep.dir) / STATUS_FILE
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        counts = Counter(row["status"] for row in rows)
        line = (f"sweep {config.sweep}: {counts['done']} done, {counts['skipped']} skipped, "
                f"{counts['failed']} failed (records in {config.paths.sweep_dir}/runs)")
        log.info(line)
        print(line, flush=True)
