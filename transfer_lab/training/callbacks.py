"""Callbacks that turn a Lightning fit into a run record, and keep checkpoints safe to resume."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn

from transfer_lab.atomic_files import (
    as_disk_full,
    atomic_write_text,
    digest,
    replace_into,
    temp_path,
)
from transfer_lab.training.run_files import METRICS_FILE


class DivergedError(RuntimeError):
    """Training loss became NaN or infinite."""


class RunRecorder(pl.Callback):
    """Tracks the best validation loss (the run's result), writes metrics.jsonl, stops on NaN.

    Its state (best loss and where it happened) goes into checkpoints, so a resumed run
    continues the same record. The train loss is read back from the device only every
    `log_every_n_steps` steps: one host sync per step would stall a GPU.
    """

    def __init__(self, run_dir: Path, tokens_per_step: int, chars_per_token: float, subset_tokens: int,
                 val_chars_per_token: float, log_every_n_steps: int = 10):
        self.metrics_path = Path(run_dir) / METRICS_FILE
        self.tokens_per_step, self.chars_per_token = tokens_per_step, chars_per_token
        self.val_chars_per_token = val_chars_per_token  # of the set early stopping watches
        self.subset_tokens, self.log_every_n_steps = subset_tokens, log_every_n_steps
        self.best: dict[str, Any] = {}
        self.last_val_loss: float | None = None
        self.train_seconds = 0.0
        self._started = self._session_started = None
        self._start_step = 0

    # --- state carried in checkpoints -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last_val_loss": self.last_val_loss, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state.get("best", {}))
        self.last_val_loss = state.get("last_val_loss")
        self.train_seconds = float(state.get("train_seconds", 0.0))

    # --- helpers ----------------------------------------------------------------------------
    def tokens_seen(self, step: int) -> int:
        return step * self.tokens_per_step

    def _append(self, trainer, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if trainer.logger is not None:  # the same point to W&B: per token, per char, lr, tokens, throughput
            split = row["split"]
            trainer.logger.log_metrics({f"{split}/{k}": v for k, v in row.items() if k not in ("split", "step")},
                                       step=row["step"])

    def _truncate_after(self, step: int) -> None:
        """On resume, drop points logged after the checkpoint: they will be logged again."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if row.get("step", 0) <= step:
                kept.append(line)
        self.metrics_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    # --- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        self._start_step = trainer.global_step
        self._truncate_after(trainer.global_step)
        self._started = self._session_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.log_every_n_steps:
            return
        loss = float(outputs["loss"].detach())  # the only host sync, every log_every_n_steps steps
        if not math.isfinite(loss):
            raise DivergedError(f"training loss became {loss} at step {step}; lower optim.lr or raise warmup")
        tokens = self.tokens_seen(step)
        self._append(trainer, {"split": "train", "step": step, "tokens": tokens, "chars": round(tokens * self.chars_per_token),
                      "loss": loss, "loss_per_char": loss / self.chars_per_token,
                      "lr": trainer.optimizers[0].param_groups[0]["lr"],
                      "tokens_per_s": self.tokens_per_second(step)})

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final scoring of the early-stopping point (trainer.validate) is not a curve point
        step = trainer.global_step
        loss = float(trainer.callback_metrics["val/loss"])
        per_char = loss / self.val_chars_per_token
        if not math.isfinite(loss):
            raise DivergedError(f"validation loss became {loss} at step {step}; lower optim.lr or raise "
                                "optim.warmup_steps")
        tokens = self.tokens_seen(step)
        self.last_val_loss = loss
        if not self.best or loss < self.best["loss"]:
            self.best = {"loss": loss, "loss_per_char": per_char, "step": step, "tokens": tokens,
                         "chars": round(tokens * self.chars_per_token)}
        self._append(trainer, {"split": "val", "step": step, "tokens": tokens, "chars": round(tokens * self.chars_per_token),
                      "loss": loss, "loss_per_char": per_char, "bits_per_char": per_char / math.log(2),
                      "epochs": tokens / max(self.subset_tokens, 1)})

    def on_train_end(self, trainer, pl_module):
        if self._started is not None:
            self.train_seconds += time.perf_counter() - self._started
            self._started = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self._started is not None:  # bank the time so far, so a resumed run's clock continues
            now = time.perf_counter()
            self.train_seconds += now - self._started
            self._started = now

    def tokens_per_second(self, step: int) -> float:
        if self._session_started is None:
            return 0.0
        elapsed = time.perf_counter() - self._session_started
        return (step - self._start_step) * self.tokens_per_step / max(elapsed, 1e-9)


class PlateauSchedule(pl.Callback):
    """The plateau rule of schedule.py, on the loss early stopping watches (val/loss).

    A plateau: no improvement of the best loss by more than `min_rel_improvement` (relative) for
    `patience` validations and for at least `patience_fraction` of the steps trained so far (none
    counted inside warm-up): the convergence tolerance, e.g. under 0.2% in the last quarter of the
    run. Progress
    slows as a run goes on, so a fixed window would mistake the noise of a still-improving run
    for a plateau (measured: 4 × 50 steps ended 6% above 4 × 100 steps at D = 1e6). At a plateau
    the run goes back to its best weights (the best checkpoint) and multiplies the LR by `decay`;
    once the LR is at its floor, or with no decay, the plateau stops the run (unless stop_at_floor
    is off: a pre-training trains on to its budget). Its counters live in checkpoints, so a resumed
    run continues the same rule.

    anneal_window="phase" counts the window of an annealed phase from the anneal, not from step 0:
    an anneal's gain arrives early, and a phase that over-fits from its first validation then ends
    after `patience` validations instead of a quarter of the run (docs/results/atlas measures what
    that saves and costs).
    """

    def __init__(self, patience: int, patience_fraction: float, min_rel_improvement: float, decay: float | None,
                 min_lr_ratio: float, min_steps: int, anneal_window: str = "run", stop_at_floor: bool = True):
        self.patience, self.patience_fraction, self.min_rel_improvement = patience, patience_fraction, min_rel_improvement
        self.decay, self.min_lr_ratio, self.min_steps = decay, min_lr_ratio, min_steps
        self.stop_at_floor = stop_at_floor  # False (pre-training to its budget): a plateau at the floor changes nothing
        self.anneal_window = anneal_window
        self.best, self.since, self.wait, self.decays, self.stopped = math.inf, 0, 0, 0, False
        self.phase_start = 0  # the step of the last anneal (0 before any)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "since": self.since, "wait": self.wait, "decays": self.decays,
                "stopped": self.stopped, "phase_start": self.phase_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.since, self.wait = float(state["best"]), int(state["since"]), int(state["wait"])
        self.decays, self.stopped = int(state["decays"]), bool(state["stopped"])
        self.phase_start = int(state.get("phase_start", 0))  # checkpoints written before it existed: run window

    def on_train_start(self, trainer, pl_module):
        if self.stopped:  # resumed from the checkpoint of the validation that ended the run
            trainer.should_stop = True

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        step = trainer.global_step
        loss = float(trainer.callback_metrics["val/loss"])
        if loss < self.best * (1 - self.min_rel_improvement):
            self.best, self.since, self.wait = loss, step, 0
            return
        if step < self.min_steps:
            return  # inside warm-up: no plateau is counted
        self.wait += 1
        window_start = self.phase_start if self.anneal_window == "phase" else 0
        if self.wait < self.patience or step - self.since < self.patience_fraction * (step - window_start):
            return
        self.wait, self.since, self.phase_start = 0, step, step
        if self.decay is not None and pl_module.lr_scale * self.decay >= self.min_lr_ratio * (1 - 1e-6):
            best = trainer.checkpoint_callback.best_model_path  # an earlier validation: this one did not improve
            state = load_checkpoint_file(best, pl_module.device)["state_dict"]
            pl_module.load_state_dict(state)
            pl_module.lr_scale *= self.decay
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= self.decay
            self.decays += 1
        elif self.stop_at_floor:
            self.stopped = trainer.should_stop = True


class RunInterrupted(Exception):
    """The run stopped at a step boundary because its process was asked to stop."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class StopAtStepBoundary(pl.Callback):
    """After each optimizer step: if `requested()` names a signal, save last.ckpt and raise
    RunInterrupted. Lightning's own stop (`trainer.should_stop`) would run one more validation
    first, a point the uninterrupted run never has; saving here keeps a resumed run identical to an
    uninterrupted one.

    A step whose validation is still to run is the exception: a checkpoint saved before that
    validation resumes past it (Lightning counts the batch done), so the resumed run would lack one
    validation point. There the stop waits for the validation, and for the checkpoints written at its
    end (Lightning runs checkpoint callbacks last), and comes at the next step's start: the resume
    point is then the last.ckpt of that validation, as after a kill."""

    def __init__(self, last_checkpoint: Path, requested: Callable[[], int | None]):
        self.last_checkpoint, self.requested = Path(last_checkpoint), requested
        self.pending: int | None = None  # a signal that arrived at a step with its validation to come

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        signum = self.requested()
        if signum is None:
            return
        every = trainer.val_check_batch  # steps between validations (inf for an epoch-based schedule)
        if every is not None and math.isfinite(every) and every >= 1 and trainer.global_step % int(every) == 0:
            self.pending = signum
            return
        trainer.save_checkpoint(self.last_checkpoint)
        raise RunInterrupted(signum, trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.pending is not None:  # the validation ran and its last.ckpt is written: stop before this step
            raise RunInterrupted(self.pending, trainer.global_step)


CHECKSUM_SUFFIX = ".blake2b"  # beside each checkpoint: the BLAKE2b of its bytes


class CorruptCheckpoint(RuntimeError):
    """A checkpoint whose bytes no longer match the checksum written beside it."""


def save_checkpoint_file(checkpoint: dict, path: Path) -> None:
    """torch.save to a temp name unique to this process, its checksum beside it, renamed into place:
    a kill never leaves a torn checkpoint, and two processes never share a temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        torch.save(checkpoint, tmp)
        atomic_write_text(path.with_name(path.name + CHECKSUM_SUFFIX), digest(tmp))
        replace_into(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise as_disk_full(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint_file(path: Path, map_location="cpu") -> dict:
    """torch.load(weights_only=True) (no pickle code runs) of a checkpoint that matches its checksum."""
    path = Path(path)
    stamp = path.with_name(path.name + CHECKSUM_SUFFIX)
    if stamp.exists() and digest(path) != stamp.read_text().strip():
        raise CorruptCheckpoint(f"checkpoint {path} does not match its checksum (edited or corrupted)")
    return torch.load(path, map_location=map_location, weights_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoints through save_checkpoint_file / load_checkpoint_file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        save_checkpoint_file(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_file(Path(path), map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        Path(str(path) + CHECKSUM_SUFFIX).unlink(missing_ok=True)
