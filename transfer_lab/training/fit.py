"""One Lightning fit with early stopping, resumable from the run folder's last checkpoint."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transfer_lab.data.datamodule import TokenDataModule
from transfer_lab.training.callbacks import (
    AtomicCheckpointIO,
    PlateauSchedule,
    RunInterrupted,
    RunRecorder,
    StopAtStepBoundary,
    load_checkpoint_file,
    save_checkpoint_file,
)
from transfer_lab.training.lightning_module import CausalLM
from transfer_lab.training.run_files import CHECKPOINT_DIR
from transfer_lab.training.schedule import Schedule


@dataclass
class FitOutcome:
    module: CausalLM  # holds the early-stopping point's weights
    recorder: RunRecorder
    steps: int
    stop_reason: str  # early_stop | max_steps
    best_checkpoint: Path | None
    wall_time_s: float
    best_loss: float  # the whole validation set at the early-stopping point, nats/token
    best_loss_per_char: float
    converged: bool | None  # early-stopped, with its best point after warm-up (None: a fixed budget)
    lr_decays: int  # plateaus that annealed the LR before the one that stopped the run
    not_converged_why: str = ""


def precision_for(trainer: Mapping) -> str:
    """bf16-mixed where a GPU will be used, fp32 on CPU, unless the settings say otherwise."""
    if trainer.get("precision"):
        return str(trainer["precision"])
    return "bf16-mixed" if _uses_gpu(trainer) else "32-true"


def compile_for(trainer: Mapping, requested: bool) -> bool:
    """torch.compile only where a GPU will be used. On CPU it is kept off whatever model.compile says:
    measured 0.88-1.03x per token at N = 3.3k-340k (one thread, eager vs compiled in one process),
    no speed-up, and its first step costs about a minute of compiling on the 2-core machine."""
    return requested and _uses_gpu(trainer)


def _uses_gpu(trainer: Mapping) -> bool:
    return torch.cuda.is_available() and trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda")


def _resumable_checkpoint(folder: Path, log) -> tuple[Path | None, int]:
    """(last.ckpt, its global step), or (None, 0) when there is nothing readable to resume."""
    last = folder / "last.ckpt"
    if not last.exists():
        return None, 0
    try:  # checkpoints are written atomically, but a disk can still be full or a file edited
        step = int(load_checkpoint_file(last)["global_step"])
    except Exception as err:  # noqa: BLE001 - any unreadable or corrupted checkpoint means: start over
        log(f"checkpoint {last} is unreadable ({type(err).__name__}: {err}); restarting this run from step 0")
        shutil.rmtree(folder)
        return None, 0
    log(f"resuming {folder.parent.name} from step {step}")
    return last, step


def fit(run_dir: Path, datamodule: TokenDataModule, module_kwargs: dict, schedule: Schedule,
        trainer_settings: Mapping, *, seed: int, gradient_clip: float, logger=None, log=print,
        stop_requested: Callable[[], int | None] = lambda: None, progress_bar: bool = True) -> FitOutcome:
    """Train on `schedule` until early stopping or its ceiling, resuming from
    run_dir/checkpoints/last.ckpt if present; then score the early-stopping point on the whole
    validation set. `stop_requested` is asked after every step: a signal number stops the run there
    (RunInterrupted), its last.ckpt saved. Lightning's progress bar shows on a terminal, if
    `progress_bar` (parallel jobs' bars would tear each other and a multirun's lines)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    resume_from, resume_step = _resumable_checkpoint(ckpt_dir, log)
    # Lightning opens the train iterator before any hook sees the restored step, so set it here
    datamodule.train_data.start_step = resume_step
    recorder = RunRecorder(run_dir, tokens_per_step=datamodule.train_data.batch_size * datamodule.n_ctx,
                           chars_per_token=datamodule.train_chars / max(datamodule.train_tokens, 1),
                           subset_tokens=datamodule.train_tokens,
                           val_chars_per_token=datamodule.stopping_val_data.chars_per_token,
                           log_every_n_steps=int(trainer_settings["log_every_n_steps"]))
    # best.ckpt (the early-stopping point) on improvement; last.ckpt (the resume point) at every
    # validation: Lightning's save_last only writes it when best.ckpt is written, and a killed run
    # would replay everything since its last improvement
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1)
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    plateaus = PlateauSchedule(patience=schedule.patience, patience_fraction=schedule.patience_fraction,
                               min_rel_improvement=schedule.min_rel_improvement, decay=schedule.decay,
                               min_lr_ratio=schedule.min_lr_ratio, min_steps=schedule.warmup_steps,
                               anneal_window=schedule.anneal_window, stop_at_floor=schedule.stop_at_floor)
    stopper = StopAtStepBoundary(ckpt_dir / "last.ckpt", stop_requested)
    trainer = instantiate(
        dict(trainer_settings), precision=precision_for(trainer_settings), max_steps=schedule.max_steps, max_epochs=-1,
        val_check_interval=schedule.val_every_n_steps, check_val_every_n_epoch=None, gradient_clip_val=gradient_clip,
        callbacks=[recorder, plateaus, checkpoints, latest, stopper], logger=logger if logger is not None else False,
        plugins=_plugins(), default_root_dir=str(run_dir), enable_progress_bar=progress_bar and sys.stderr.isatty(), _convert_="object")
    pl.seed_everything(int(seed), verbose=False)  # same seed, same initial weights
    module = CausalLM(**module_kwargs)
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:  # Lightning's own reaction to a SIGTERM inside validation: resume from last.ckpt
        raise RunInterrupted(stop_requested() or signal.SIGTERM, trainer.global_step) from None
    steps = trainer.global_step
    if not recorder.best:
        raise RuntimeError("no validation ran; lower optim.val_every_n_steps below the step budget")
    best = Path(checkpoints.best_model_path)
    module.load_state_dict(load_checkpoint_file(best)["state_dict"])
    trainer.validate(module, dataloaders=datamodule.score_dataloader(), verbose=False)
    best_loss = float(trainer.callback_metrics["val/loss"])
    stop_reason = "early_stop" if plateaus.stopped or steps < schedule.max_steps else (
        "budget" if schedule.fixed_budget else "max_steps")
    why = ""
    if stop_reason == "max_steps" and not schedule.fixed_budget:
        why = f"reached the ceiling optim.max_steps={schedule.max_steps} without early stopping"
    elif recorder.best["step"] <= schedule.warmup_steps:
        why = f"best point at step {recorder.best['step']}, inside the {schedule.warmup_steps}-step warm-up"
    return FitOutcome(module=module, recorder=recorder, steps=steps, stop_reason=stop_reason, best_checkpoint=best,
                      wall_time_s=time.perf_counter() - started, best_loss=best_loss,
                      best_loss_per_char=best_loss / datamodule.val_data.chars_per_token,
                      converged=None if schedule.fixed_budget and not why else not why, lr_decays=plateaus.decays,
                      not_converged_why=why)


def _plugins() -> list:
    """Atomic, checksummed checkpoints; under SLURM, no auto-requeue: the job stops its run itself
    (stop_requested) and a requeued or relaunched job resumes it."""
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def relocate_checkpoints(ckpt_dir: Path, old_dir: Path, new_dir: Path) -> None:
    """The checkpoints in `ckpt_dir`, copied from `old_dir`, point at `new_dir` (where they will
    live): Lightning restores best_model_path from a checkpoint whatever its folder, and would go on
    reading the old run's files."""
    old, new = str(old_dir), str(new_dir)

    def moved(value):
        if isinstance(value, str) and value.startswith(old):
            return new + value[len(old):]
        if isinstance(value, dict):
            return {moved(k): moved(v) for k, v in value.items()}
        return value

    for path in sorted(Path(ckpt_dir).glob("*.ckpt")):
        checkpoint = load_checkpoint_file(path)
        checkpoint["callbacks"] = moved(checkpoint.get("callbacks", {}))
        save_checkpoint_file(checkpoint, path)
