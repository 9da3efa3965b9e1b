"""Hydra's joblib launcher with one job per device: a multirun on a multi-GPU workstation.

    python train.py -m experiment=text2python hydra/launcher=per_device                       # every GPU
    python train.py -m experiment=demo hydra/launcher=per_device hydra.launcher.devices=4 \\
        hydra.launcher.jobs_per_device=2                                                    # 2 small jobs per GPU

It starts devices x jobs_per_device workers; each claims a device slot for its life and sees only
that device (transfer_lab/study/devices.py), so `accelerator=auto devices=1` in a job means its own
GPU, and no GPU runs more than jobs_per_device jobs at once. `devices: null` takes every GPU this
process sees (CUDA_VISIBLE_DEVICES respected); a number takes the first that many, or on a machine
with no GPU, fakes them (each worker's CUDA_VISIBLE_DEVICES is set, training stays on the CPU: how
the assignment is tested). Every job notes its device in its job file (hydra/<launch>/<n>/job.json).
"""

# no `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where a
# dataclass cannot resolve string annotations
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from transfer_lab.errors import ConfigError, exit_with

log = logging.getLogger("transfer_lab")
SLOT_FOLDER = "device-slots"  # in the launch folder: one lock file per (device, place)


@dataclass
class PerDeviceLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.transfer_lab_sweeper.device_launcher.PerDeviceLauncher"
    devices: Optional[int] = None  # null: every visible GPU
    jobs_per_device: int = 1  # k small jobs packed on each device
    n_jobs: Optional[int] = None  # devices x jobs_per_device; set either those two or nothing


ConfigStore.instance().store(group="hydra/launcher", name="per_device_joblib", node=PerDeviceLauncherConf,
                             provider="transfer_lab")


def visible_devices(count: Optional[int], environ=os.environ) -> list[str]:
    """The CUDA_VISIBLE_DEVICES value of each device the launch spreads over."""
    listed = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not listed:
        import torch

        listed = [str(i) for i in range(torch.cuda.device_count())]
    if count is None:
        if not listed:
            raise ConfigError("hydra/launcher=per_device found no GPU here; set hydra.launcher.devices=N, or use "
                              "hydra/launcher=joblib_cpu on a machine without GPUs")
        return listed
    if count < 1:
        raise ConfigError(f"hydra.launcher.devices={count} must be at least 1, or null for every GPU")
    if not listed:  # no GPU: faked devices, each worker still gets its own CUDA_VISIBLE_DEVICES
        return [str(i) for i in range(count)]
    if count > len(listed):
        raise ConfigError(f"hydra.launcher.devices={count} but {len(listed)} GPUs are visible here; set it to "
                          f"{len(listed)} or fewer (or null for all)")
    return listed[:count]


class PerDeviceLauncher(JoblibLauncher):
    def __init__(self, devices: Optional[int] = None, jobs_per_device: int = 1, **joblib) -> None:
        super().__init__(**joblib)
        self.devices, self.jobs_per_device = devices, jobs_per_device

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher import _core

        try:
            visible = visible_devices(self.devices)
            workers = len(visible) * self._per_device()
        except ConfigError as err:
            exit_with(err)
        if self.joblib.get("n_jobs") not in (None, workers):
            exit_with(ConfigError(f"hydra.launcher.n_jobs={self.joblib['n_jobs']} but {len(visible)} devices x "
                                  f"{self.jobs_per_device} jobs per device make {workers} workers; remove n_jobs "
                                  "and set hydra.launcher.jobs_per_device"))
        self.joblib["n_jobs"] = workers
        slot_dir = Path(str(self.config.hydra.sweep.dir)) / SLOT_FOLDER
        log.info("one job per device: %d workers on devices %s (%d per device)", workers, ",".join(visible),
                 self.jobs_per_device)
        task = self.task_function
        self.task_function = OnItsDevice(task, slot_dir, visible, self.jobs_per_device)
        try:
            return _core.launch(launcher=self, job_overrides=job_overrides, initial_job_idx=initial_job_idx)
        finally:
            self.task_function = task

    def _per_device(self) -> int:
        if not isinstance(self.jobs_per_device, int) or self.jobs_per_device < 1:
            raise ConfigError(f"hydra.launcher.jobs_per_device={self.jobs_per_device} must be an integer >= 1; "
                              "e.g. hydra.launcher.jobs_per_device=2")
        return self.jobs_per_device


class OnItsDevice:
    """The job, run in a worker that first claims its device slot (pickled to the joblib workers)."""

    def __init__(self, task, slot_dir: Path, visible: list[str], per_device: int):
        self.task, self.slot_dir, self.visible, self.per_device = task, slot_dir, visible, per_device

    def __call__(self, cfg):
        from hydra.core.hydra_config import HydraConfig

        from transfer_lab.study import interrupts
        from transfer_lab.study.devices import claim_slot

        slot = claim_slot(self.slot_dir, self.visible, self.per_device)
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        # no pid here: the launcher signals pids only once the job's own handlers are installed
        interrupts.note_job(job_dir, device=slot.visible, device_place=slot.place, worker=os.getpid())
        log.info("job %s on device %s (place %d of %d)", job_dir.name, slot.visible, slot.place + 1,
                 self.per_device)
        return self.task(cfg)  # the job notes its own start and end (study/job.py)
