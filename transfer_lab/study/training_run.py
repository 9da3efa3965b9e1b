"""One training run and the record it fills: what pre-training and target runs share."""

from __future__ import annotations

import logging
import math
import os
import shutil
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from transfer_lab.atomic_files import disk_full_path, is_disk_full
from transfer_lab.data.datamodule import TokenDataModule
from transfer_lab.data.run_data import RunData
from transfer_lab.errors import UserError
from transfer_lab.study import interrupts, records
from transfer_lab.study.job_settings import JobSettings
from transfer_lab.study.records import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    RunResult,
)
from transfer_lab.study.tracking import finish, make_logger
from transfer_lab.training.callbacks import DivergedError, RunInterrupted
from transfer_lab.training.fit import compile_for, fit
from transfer_lab.training.model import (
    ModelShape,
    build_gpt2,
    count_params,
    flops_per_token,
)
from transfer_lab.training.run_files import CHECKPOINT_DIR
from transfer_lab.training.schedule import Schedule

log = logging.getLogger("transfer_lab")


def remove_torn_writes(folder: Path) -> None:
    """Temp files of atomic writes that a kill interrupted (the real file is intact beside them),
    in the folder and its checkpoints; called with the folder's lock held, so none is in use.

    A file (or a dangling link) where the checkpoints folder belongs is renamed aside, kept, with a
    warning: the run starts again from step 0 instead of failing the same way on every launch."""
    for tmp in [*folder.glob(".*.tmp"), *folder.glob("*/.*.tmp")]:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    checkpoints = folder / CHECKPOINT_DIR
    if os.path.lexists(checkpoints) and not checkpoints.is_dir():
        aside = checkpoints.with_name(f"{CHECKPOINT_DIR}.not-a-folder-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
        checkpoints.rename(aside)
        log.warning("%s is not a folder; kept as %s, and the run starts again from step 0", checkpoints,
                    aside.name)


def base_result(settings: JobSettings, key: str, run_data: RunData, shape: ModelShape) -> RunResult:
    with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
        non_embedding, total = count_params(build_gpt2(shape, settings.model.attn_implementation))
    return RunResult(run_key=key, sweep=settings.sweep, regime=settings.regime, tokenizer=run_data.tokenizer.id,
                     experiment=settings.experiment,
                     n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head, n_ctx=settings.model.n_ctx,
                     vocab_size=shape.vocab_size, non_embedding_params=non_embedding, total_params=total,
                     seed=settings.seed, source_corpus="+".join(settings.data.sources), source_weights=dict(settings.data.sources),
                     config=settings.config)


def module_kwargs(settings: JobSettings, shape: ModelShape, schedule: Schedule, init_from: str | None = None) -> dict:
    o = settings.optim
    compiled = compile_for(settings.trainer, settings.model.compile)
    if settings.model.compile and not compiled:
        log.info("model.compile=true: torch.compile stays off on CPU (measured 0.88-1.03x per token, no gain)")
    return dict(shape=asdict(shape), lr=schedule.lr, weight_decay=o.weight_decay, betas=o.betas,
                warmup_steps=schedule.warmup_steps, horizon_steps=schedule.horizon_steps,
                min_lr_ratio=schedule.min_lr_ratio, init_from=init_from, compile=compiled,
                attn_implementation=settings.model.attn_implementation)


def datamodule_for(settings: JobSettings, train: list, val, train_chars: int | None,
                   batch_size: int) -> TokenDataModule:
    return TokenDataModule(train, val, train_chars=train_chars, val_tokens=settings.val_tokens,
                           stopping_val_tokens=settings.stopping_val_tokens, n_ctx=settings.model.n_ctx,
                           batch_size=batch_size, val_batch_size=settings.optim.val_batch_size, seed=settings.seed)


def train_and_record(settings: JobSettings, run_dir: Path, result: RunResult, datamodule: TokenDataModule, kwargs: dict,
                     schedule: Schedule, record_done: bool = True):
    """Fit, then fill `result` from the outcome; a crash or NaN is recorded as a failed run.

    A stop request (RunInterrupted) is recorded `interrupted` and a full disk `failed` with "no space
    left on <path>"; both are raised again once the record is written, so the job (and the sweep)
    stops. The record keeps the checkpoints' promise: a later launch resumes from them."""
    tags = [settings.regime, settings.data.target if settings.regime != "pretrain" else "source"]
    config = {**settings.config, "non_embedding_params": result.non_embedding_params,
              "finetune_chars": result.finetune_chars}
    logger = make_logger(settings.tracking, result.run_key, config, tags, settings.regime)
    result.schedule = asdict(schedule)
    records.write_result(run_dir, result)  # status=running: visible to the analysis as unfinished
    outcome = stopped = None
    try:
        outcome = fit(run_dir, datamodule, kwargs, schedule, settings.trainer, seed=settings.seed,
                      gradient_clip=settings.optim.gradient_clip, logger=logger, log=log.info,
                      stop_requested=interrupts.requested,
                      progress_bar=settings.launch_dir is None)  # a multirun prints a line per run instead
        rec, best = outcome.recorder, outcome.recorder.best
        result.best_val_loss, result.best_val_loss_per_char = outcome.best_loss, outcome.best_loss_per_char
        result.best_val_bits_per_char = outcome.best_loss_per_char / math.log(2)
        result.best_stopping_val_loss = best["loss"]
        result.best_step, result.best_tokens_seen, result.best_chars_seen = best["step"], best["tokens"], best["chars"]
        result.final_val_loss, result.steps = rec.last_val_loss, outcome.steps
        result.tokens_seen = rec.tokens_seen(outcome.steps)
        result.chars_seen = round(result.tokens_seen * rec.chars_per_token)
        result.epochs_seen = result.tokens_seen / max(datamodule.train_tokens, 1)
        result.train_flops = flops_per_token(result.non_embedding_params, result.n_layer, result.n_ctx,
                                             result.n_embd) * result.tokens_seen
        result.wall_time_s = rec.train_seconds
        result.tokens_per_s = result.tokens_seen / max(rec.train_seconds, 1e-9)
        result.stop_reason, result.status = outcome.stop_reason, STATUS_DONE
        result.converged, result.not_converged_why = outcome.converged, outcome.not_converged_why
        result.lr_decays = outcome.lr_decays
    except UserError:
        raise
    except RunInterrupted as err:
        result.status, result.stop_reason, result.error = STATUS_INTERRUPTED, "interrupted", str(err)
        stopped = err
    except Exception as err:  # noqa: BLE001 - one failing job must not end the sweep
        result.status = STATUS_FAILED
        result.stop_reason = "diverged" if isinstance(err, DivergedError) else "error"
        result.error = f"{type(err).__name__}: {err}"
        if is_disk_full(err):
            result.error, stopped = f"no space left on {disk_full_path(err, run_dir)}", err
        trace = "" if stopped is not None else "\n" + traceback.format_exc(limit=3)  # a full disk: one line
        log.error("run %s failed: %s%s", result.run_key, result.error, trace)
    finally:
        result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        finish(logger, asdict(result))
    if record_done or result.status != STATUS_DONE:  # (a pre-training is done once its weights are saved)
        records.write_result(run_dir, result)  # on a full disk this may fail too: the job reports it
    if stopped is not None:
        raise stopped
    return outcome
