"""Several devices: one job per device, never one run over several.

A run belongs to one process: its lock, its record and its checkpoints (job.py). Lightning's DDP
starts one more process per device that re-runs the whole command line: that process finds the run
locked, skips it, and the first one waits for it without end (measured: `trainer.devices=2` hung
until SIGKILL). For the small models of a transfer study, a sweep's runs are the parallelism, so
`trainer.devices` other than 1 is refused before anything trains, with the command that uses the
devices instead: a multirun whose parallel workers each get a device of their own
(`hydra/launcher=per_device`, hydra_plugins/transfer_lab_sweeper/device_launcher.py), k small jobs
per device if asked (`hydra.launcher.jobs_per_device=k`).

Each worker claims a slot (device d, place j < k) for its whole life with a file lock in the launch
folder, and sets CUDA_VISIBLE_DEVICES to that device before anything in it touches CUDA: its jobs
see one GPU (cuda:0), and no device runs more than k jobs at once. A dead worker's lock is released
by the kernel, so its replacement takes the slot over.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from transfer_lab.errors import ConfigError

LAUNCHER = "hydra/launcher=per_device"
LAUNCHER_KEYS = ("hydra/launcher=", "hydra.launcher.", "trainer.devices=", "trainer.num_nodes=", "+trainer.num_nodes=")
RANK_VARIABLES = ("WORLD_SIZE", "LOCAL_WORLD_SIZE")  # set by torchrun and Lightning's own re-launch
SLOT_WAIT_S = 60.0  # a replaced worker's slot is freed when the old process is gone: seconds, not minutes


def devices_asked(devices) -> int | None:
    """How many devices `trainer.devices` asks for (None: every one there is, e.g. "auto" or -1)."""
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        return len(devices)
    text = str(devices).strip()
    if text.endswith(","):  # Lightning's "0," is the device list [0]
        return len([p for p in text.split(",") if p.strip()])
    if "," in text:
        return len(text.split(","))
    try:
        number = int(text)
    except ValueError:
        return None
    return None if number < 0 else number


def one_device_fix(asked: int | None, command: str | None = None) -> str:
    """The fix a refusal names: this command line (or the generic one) with one job per device."""
    spread = "" if asked is None else f" hydra.launcher.devices={asked}"
    return command or f"python train.py -m <your overrides> trainer.devices=1 {LAUNCHER}{spread}"


def check_one_device(devices, num_nodes, command: str | None = None) -> None:
    """trainer.devices must name one device (1, or a one-element list) on one node."""
    asked = devices_asked(devices)
    nodes = 1 if num_nodes is None else num_nodes
    if asked == 1 and nodes == 1:
        return
    if asked == 0:
        raise ConfigError(f"trainer.devices={devices} names no device; use trainer.devices=1")
    what = f"trainer.devices={devices}" if nodes == 1 else f"trainer.num_nodes={nodes}"
    raise ConfigError(f"{what} asks for one run over several devices (DDP), which transfer_lab does not run: a "
                      "run's lock, record and checkpoints belong to one process; give each job a device of its "
                      f"own instead: {one_device_fix(asked, command)}")


def check_single_process(environ=os.environ) -> None:
    """A process started as one rank of several (torchrun, a re-launched DDP rank) stops with one line:
    every rank does the same, so none waits for the others."""
    for name in RANK_VARIABLES:
        value = environ.get(name, "1")
        if value.isdigit() and int(value) > 1:
            raise ConfigError(f"this process is one of {name}={value} ranks (started by torchrun or another "
                              "multi-process launcher); start train.py once, and spread a sweep's jobs over "
                              f"the devices with {LAUNCHER}")


def per_device_command(argv: list[str], asked: int | None, devices_from_argv: bool) -> str:
    """The user's command line turned into one job per device: the launcher swapped, devices dropped."""
    kept = [a for a in argv if a not in ("-m", "--multirun") and not a.startswith(LAUNCHER_KEYS)]
    spread = [] if asked is None else [f"hydra.launcher.devices={asked}"]
    one = [] if devices_from_argv else ["trainer.devices=1"]  # an experiment set it: override it back
    return shlex.join(["python", "train.py", "-m", *kept, *one, LAUNCHER, *spread])


@dataclass(frozen=True)
class Slot:
    device: int  # index into the launch's device list
    place: int  # which of the device's k places
    visible: str  # what CUDA_VISIBLE_DEVICES says in the worker that holds it
    lock: object  # the held file lock (kept alive: dropping it would release the slot)


_held: list[Slot] = []  # the slot this process holds, for its whole life


def claim_slot(slot_dir: Path, visible: list[str], per_device: int, wait_s: float = SLOT_WAIT_S) -> Slot:
    """This worker's slot: the one it holds already, else the first free one, first places first (so
    jobs spread over the devices before they pack), and CUDA_VISIBLE_DEVICES set to its device."""
    from filelock import FileLock, Timeout

    if _held and Path(_held[0].lock.lock_file).parent == Path(slot_dir):
        return _held[0]
    Path(slot_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for place in range(per_device):
            for device, name in enumerate(visible):
                lock = FileLock(str(Path(slot_dir) / f"device{device}-place{place}.lock"))
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                _check_cuda_untouched(name)
                os.environ["CUDA_VISIBLE_DEVICES"] = name
                _held[:] = [Slot(device, place, name, lock)]
                return _held[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free device slot in {slot_dir} after {wait_s:.0f} s: more workers than "
                               f"{len(visible)} devices x {per_device} places; lower hydra.launcher.n_jobs")
        time.sleep(0.2)


def _check_cuda_untouched(name: str) -> None:
    """CUDA reads CUDA_VISIBLE_DEVICES once: a process that already used it cannot be moved."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != name:
        raise RuntimeError(f"this worker used CUDA before it was given device {name}; start the sweep again")
