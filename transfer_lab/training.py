"""One Lightning fit with early stopping, resumable from the run folder's last checkpoint."""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from transfer_lab.callbacks import AtomicCheckpointIO, RunRecorder
from transfer_lab.datamodule import TokenDataModule
from transfer_lab.module import CausalLM

CHECKPOINT_DIR = "checkpoints"


@dataclass
class FitOutcome:
    module: CausalLM
    recorder: RunRecorder
    steps: int
    stop_reason: str  # early_stop | max_steps
    best_checkpoint: Path | None
    wall_time_s: float


def precision_for(trainer_cfg: DictConfig) -> str:
    """bf16-mixed where a GPU will be used, fp32 on CPU, unless the config says otherwise."""
    if trainer_cfg.get("precision"):
        return str(trainer_cfg.precision)
    on_gpu = torch.cuda.is_available() and trainer_cfg.get("accelerator", "auto") in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def _resumable_checkpoint(folder: Path, log) -> tuple[Path | None, int]:
    """(last.ckpt, its global step), or (None, 0) when there is nothing readable to resume."""
    last = folder / "last.ckpt"
    if not last.exists():
        return None, 0
    try:  # checkpoints are written atomically, but a disk can still be full or a file edited
        step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint means: start over
        log(f"checkpoint {last} is unreadable ({type(err).__name__}); restarting this run from step 0")
        shutil.rmtree(folder)
        return None, 0
    log(f"resuming {folder.parent.name} from step {step}")
    return last, step


def validation_interval(optim: DictConfig, datamodule: TokenDataModule, max_steps: int) -> int:
    """Steps between validations: optim.val_every_n_steps, but at least every
    optim.val_every_epochs passes over a small subset (1e4 characters is ~3 steps an epoch and
    over-fits within tens of steps: the early-stopping point needs that resolution), and never
    more often than optim.min_val_every_n_steps."""
    steps_per_epoch = datamodule.train_tokens / datamodule.train_data.batch_size / datamodule.n_ctx
    by_epochs = math.ceil(float(optim.val_every_epochs) * steps_per_epoch)
    interval = max(int(optim.min_val_every_n_steps), min(int(optim.val_every_n_steps), by_epochs))
    return min(interval, max_steps)


def fit(run_dir: Path, cfg: DictConfig, datamodule: TokenDataModule, module_kwargs: dict, *, max_steps: int,
        patience: int, logger=None, log=print) -> FitOutcome:
    """Train until early stopping or `max_steps`; resume from run_dir/checkpoints/last.ckpt if present."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    resume_from, resume_step = _resumable_checkpoint(ckpt_dir, log)
    # Lightning opens the train iterator before any hook sees the restored step, so set it here
    datamodule.train_data.start_step = resume_step
    optim = cfg.optim
    recorder = RunRecorder(run_dir, tokens_per_step=datamodule.train_data.batch_size * cfg.model.n_ctx,
                           chars_per_token=datamodule.train_chars / max(datamodule.train_tokens, 1),
                           subset_tokens=datamodule.train_tokens, log_every_n_steps=cfg.trainer.log_every_n_steps)
    # last.ckpt (resume point) at every validation; best.ckpt (the early-stopping point) on improvement
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                  save_top_k=1, save_last=True)
    stopper = EarlyStopping(monitor="val/loss", mode="min", patience=patience, min_delta=optim.min_delta,
                            check_finite=True, check_on_train_epoch_end=False)
    val_every = validation_interval(optim, datamodule, max_steps)
    trainer = instantiate(
        cfg.trainer, precision=precision_for(cfg.trainer), max_steps=max_steps, max_epochs=-1,
        val_check_interval=val_every, check_val_every_n_epoch=None, gradient_clip_val=optim.gradient_clip,
        callbacks=[recorder, checkpoints, stopper], logger=logger if logger is not None else False,
        plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir),
        enable_progress_bar=sys.stderr.isatty(), _convert_="object")
    pl.seed_everything(int(cfg.seed), verbose=False)  # same seed, same initial weights
    module = CausalLM(**module_kwargs)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    steps = trainer.global_step
    best = Path(checkpoints.best_model_path) if checkpoints.best_model_path else None
    return FitOutcome(module=module, recorder=recorder, steps=steps,
                      stop_reason="early_stop" if steps < max_steps else "max_steps",
                      best_checkpoint=best, wall_time_s=time.perf_counter() - started)
