"""The pre-trained model a fine-tune starts from: trained once per (shape, source, budget, ...)
under a file lock, then read from <pretrained_dir>/<key>/ by every job that needs it."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from filelock import FileLock

from transfer_lab.data.run_data import RunData
from transfer_lab.errors import ConfigError
from transfer_lab.study import records
from transfer_lab.study.job_settings import JobSettings
from transfer_lab.study.keys import pretrain_key
from transfer_lab.study.records import STATUS_DONE, RunResult
from transfer_lab.study.training_run import (
    base_result,
    datamodule_for,
    module_kwargs,
    remove_torn_writes,
    train_and_record,
)
from transfer_lab.training.model import ModelShape
from transfer_lab.training.run_files import CHECKPOINT_DIR
from transfer_lab.training.schedule import fixed_budget

log = logging.getLogger("transfer_lab")
PRETRAINED_MODEL_DIR = "model"  # save_pretrained folder: config.json + model.safetensors
TOKENIZER_NOTE = "transfer_lab.json"  # beside the weights: which tokenizer they were trained with


def ensure_pretrained(settings: JobSettings, run_data: RunData, shape: ModelShape) -> RunResult:
    """The pre-trained model for this shape/source/budget: trained once, then read from the cache.

    A file lock makes a second job that needs the same model wait for the first and reuse it.
    """
    key = pretrain_key(settings.identity)
    folder = settings.paths.pretrained_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        remove_torn_writes(folder)
        if (folder / records.RESULTS_FILE).exists():
            cached = records.read_result(folder)
            if cached.status == STATUS_DONE and (folder / PRETRAINED_MODEL_DIR / "model.safetensors").exists():
                # the key holds the tokenizer's settings; this checks the tokenizer they produced
                if cached.tokenizer != run_data.tokenizer.id:
                    raise ConfigError(f"the cached pre-trained model {folder} was made with tokenizer "
                                      f"{cached.tokenizer}, this run uses {run_data.tokenizer.id}; "
                                      f"delete {folder} to pre-train again")
                return cached
        p = settings.pretrain
        primary = run_data.primary_source
        train = [(token_file.train, weight) for token_file, weight in run_data.sources.values()]
        datamodule = datamodule_for(settings, train, primary.val, None, p.batch_size)
        tokens_per_step = p.batch_size * settings.model.n_ctx
        budget_tokens = p.tokens if p.tokens is not None else round(
            p.chars * datamodule.train_tokens / max(datamodule.train_chars, 1))
        max_steps = max(1, math.ceil(budget_tokens / tokens_per_step))
        record = base_result(settings, key, run_data, shape)
        record.regime, record.val_set = "pretrain", primary.id
        record.val_tokens, record.val_chars = datamodule.val_data.n_targets, datamodule.val_data.n_chars
        log.info("pre-training %s: %d steps x %d tokens on %s", key, max_steps, tokens_per_step,
                 "+".join(settings.data.sources))
        o = settings.optim
        schedule = fixed_budget(p.lr, p.warmup_steps, max_steps, o.min_lr_ratio, o.val_every_n_steps, p.patience,
                                o.min_rel_improvement)
        outcome = train_and_record(settings, folder, record, datamodule, module_kwargs(settings, shape, schedule),
                                   schedule)
        if record.status != STATUS_DONE:
            raise RuntimeError(f"pre-training {key} failed: {record.error}")
        module = outcome.module  # holds the early-stopping point, not the last step
        # weights go to a temp folder renamed into place: a kill never leaves torn safetensors
        staging = folder / f".{PRETRAINED_MODEL_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        module.model.save_pretrained(staging, safe_serialization=True)
        (staging / TOKENIZER_NOTE).write_text(json.dumps({"tokenizer": run_data.tokenizer.id}))
        shutil.rmtree(folder / PRETRAINED_MODEL_DIR, ignore_errors=True)
        staging.rename(folder / PRETRAINED_MODEL_DIR)
        set_pretrain_budget(record, record)
        records.write_result(folder, record)  # the record says done only once the weights are saved
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        return record


def set_pretrain_budget(result: RunResult, pretrained: RunResult) -> None:
    """The pre-training budget is what the whole pre-training run consumed (tokens, characters,
    FLOPs), not the step its best weights came from: runs of one budget share one value, and
    compute comparisons count every step paid for."""
    result.pretrain_tokens, result.pretrain_chars = pretrained.tokens_seen, pretrained.chars_seen
    result.pretrain_flops = pretrained.train_flops


def check_init_from(path: Path, shape: ModelShape, tokenizer_id: str) -> None:
    config_path = path / "config.json"
    if not config_path.exists():
        raise ConfigError(f"pretrain.init_from={path} has no config.json; point it at a save_pretrained folder")
    saved = json.loads(config_path.read_text())
    mine = {"n_layer": shape.n_layer, "n_embd": shape.n_embd, "n_head": shape.n_head, "vocab_size": shape.vocab_size}
    differs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
    if differs:
        raise ConfigError(f"pretrain.init_from={path} was made with another shape or tokenizer "
                          f"(saved vs asked: {differs}); match model.* and tokenizer to it")
    note = path / TOKENIZER_NOTE
    record = path.parent / records.RESULTS_FILE
    saved_tokenizer = json.loads(note.read_text()).get("tokenizer") if note.exists() else (
        records.read_result(path.parent).tokenizer if record.exists() else None)
    if saved_tokenizer is not None and saved_tokenizer != tokenizer_id:
        raise ConfigError(f"pretrain.init_from={path} was trained with tokenizer {saved_tokenizer}, this run uses "
                          f"{tokenizer_id}; set tokenizer.* to match it")
