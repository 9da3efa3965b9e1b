"""The pre-trained model a fine-tune starts from: trained once per (shape, source, budget, ...)
under a file lock, then read from <pretrained_dir>/<key>/ by every job that needs it."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

from filelock import FileLock

from transfer_lab.atomic_files import as_disk_full, digest, file_mode
from transfer_lab.data.run_data import RunData
from transfer_lab.errors import ConfigError, DataError
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
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_NOTE = "transfer_lab.json"  # beside the weights: their tokenizer and checksum
WEIGHTS_CHECKSUM = "weights_blake2b"
_CHECKED: set[str] = set()  # weights folders this process has checked


def ensure_pretrained(settings: JobSettings, run_data: RunData, shape: ModelShape) -> tuple[RunResult, bool]:
    """The pre-trained model for this shape/source/budget, and whether this call trained it (False:
    read from the cache). A file lock makes a second job that needs the same model wait for the
    first and reuse it. A pre-training is done only once its weights and their checksum are in
    place: a record that says done without them is set aside (kept) and the model trained again."""
    key = pretrain_key(settings.identity)
    folder = settings.paths.pretrained_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        remove_torn_writes(folder)
        cached = _cached(settings, folder, key, run_data)
        if cached is not None:
            return cached, False
        return _pretrain(settings, folder, key, run_data, shape), True


def _cached(settings: JobSettings, folder: Path, key: str, run_data: RunData) -> RunResult | None:
    """The finished pre-training in `folder`, checked; None where it must be trained (again)."""
    cached = records.read_own_result(folder, log.warning)
    if cached is not None and stopped_before_budget(cached) and settings.pretrain.on_plateau != "stop":
        aside = folder.with_name(f"{folder.name}.stopped-early")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)  # kept, never deleted; this budget is trained to its end now
        log.warning("pre-training %s stopped at step %d under the old plateau rule, before its budget; "
                    "training it to its budget (the old one is kept as %s)", key, cached.steps, aside.name)
        folder.mkdir()
        return None
    if cached is None or cached.status != STATUS_DONE:
        return None
    missing = weights_missing(folder / PRETRAINED_MODEL_DIR)
    if missing:  # killed (or a full disk) while its weights were saved, or they were removed since
        aside = records.set_aside(folder, "without-weights")
        log.warning("pre-training %s is recorded done, but %s; training it again (the record is kept as %s)",
                    key, missing, aside.name)
        return None
    # the key holds the tokenizer's settings; this checks the tokenizer they produced
    if cached.tokenizer != run_data.tokenizer.id:
        raise ConfigError(f"the cached pre-trained model {folder} was made with tokenizer "
                          f"{cached.tokenizer}, this run uses {run_data.tokenizer.id}; "
                          f"delete {folder} to pre-train again")
    check_weights(folder / PRETRAINED_MODEL_DIR)
    if cached.pretrain_budget_tokens is None:  # recorded before budgets were an axis
        cached.pretrain_budget_tokens = settings.pretrain.tokens or round(
            settings.pretrain.chars * cached.tokens_seen / max(cached.chars_seen, 1))
        cached.pretrain_budget_chars = settings.pretrain.chars or round(
            cached.pretrain_budget_tokens * cached.chars_seen / max(cached.tokens_seen, 1))
        cached.pretrain_epochs = cached.epochs_seen
    return cached


def _pretrain(settings: JobSettings, folder: Path, key: str, run_data: RunData, shape: ModelShape) -> RunResult:
    p = settings.pretrain
    primary = run_data.primary_source
    train = [(token_file.train, weight) for token_file, weight in run_data.sources.values()]
    datamodule = datamodule_for(settings, train, primary.val, None, p.batch_size)
    tokens_per_step = p.batch_size * settings.model.n_ctx
    chars_per_token = datamodule.train_chars / max(datamodule.train_tokens, 1)
    budget_tokens = p.tokens if p.tokens is not None else round(p.chars / chars_per_token)
    epochs = budget_tokens / max(datamodule.train_tokens, 1)
    if epochs > p.max_epochs:
        raise DataError(f"pre-training on {'+'.join(settings.data.sources)} for {budget_tokens:.3g} tokens takes "
                        f"{epochs:.1f} passes over its {datamodule.train_tokens:,} tokens, more than "
                        f"pretrain.max_epochs={p.max_epochs:g}; lower the budget or raise pretrain.max_epochs")
    max_steps = max(1, math.ceil(budget_tokens / tokens_per_step))
    record = base_result(settings, key, run_data, shape)
    record.regime, record.val_set = "pretrain", primary.id
    record.val_tokens, record.val_chars = datamodule.val_data.n_targets, datamodule.val_data.n_chars
    record.pretrain_budget_tokens = budget_tokens
    record.pretrain_budget_chars = p.chars if p.chars is not None else round(budget_tokens * chars_per_token)
    record.pretrain_epochs, record.pretrain_on_plateau = epochs, p.on_plateau
    log.info("pre-training %s: %d steps x %d tokens on %s", key, max_steps, tokens_per_step,
             "+".join(settings.data.sources))
    o = settings.optim
    schedule = fixed_budget(p.lr, p.warmup_steps, max_steps, o.min_lr_ratio, o.val_every_n_steps, p.patience,
                            o.min_rel_improvement, on_plateau=p.on_plateau, decay=settings.stopping.decay)
    outcome = train_and_record(settings, folder, record, datamodule, module_kwargs(settings, shape, schedule),
                               schedule, record_done=False)  # done is written below, once the weights are
    if record.status != STATUS_DONE:
        raise RuntimeError(f"pre-training {key} failed: {record.error}")
    save_weights(outcome.module.model, folder / PRETRAINED_MODEL_DIR, run_data.tokenizer.id)
    set_pretrain_budget(record, record)
    records.write_result(folder, record)  # the record says done only once the weights and their checksum are in place
    shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
    return record


def save_weights(model, model_dir: Path, tokenizer_id: str) -> None:
    """safetensors and their checksum into a temp folder renamed into place (a kill never leaves torn
    weights), each file with the mode the umask gives (safetensors writes 0600 whatever it is)."""
    staging = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
    except Exception as err:
        raise as_disk_full(err, staging / WEIGHTS_FILE) from err
    note = {"tokenizer": tokenizer_id, WEIGHTS_CHECKSUM: digest(staging / WEIGHTS_FILE)}
    (staging / TOKENIZER_NOTE).write_text(json.dumps(note))
    for path in staging.iterdir():
        os.chmod(path, file_mode())
    shutil.rmtree(model_dir, ignore_errors=True)
    if model_dir.is_symlink() or model_dir.exists():  # a file (or link) where the folder belongs
        model_dir.unlink()
    staging.rename(model_dir)


def set_pretrain_budget(result: RunResult, pretrained: RunResult) -> None:
    """A run's pre-training: its nominal budget (the study's axis), and what the whole pre-training
    consumed (tokens, characters, FLOPs: every step paid for, not the step its best weights came from)."""
    result.pretrain_tokens, result.pretrain_chars = pretrained.tokens_seen, pretrained.chars_seen
    result.pretrain_flops = pretrained.train_flops
    result.pretrain_budget_tokens = pretrained.pretrain_budget_tokens
    result.pretrain_budget_chars = pretrained.pretrain_budget_chars
    result.pretrain_epochs, result.pretrain_on_plateau = pretrained.pretrain_epochs, pretrained.pretrain_on_plateau


def stopped_before_budget(record: RunResult) -> bool:
    """A pre-training (or a fine-tune from one) that the old rule stopped at a plateau before its
    budget: under the current rule that budget trains to its end, so it is another model."""
    if record.pretrain_on_plateau is not None or record.regime not in ("pretrain", "finetune"):
        return False
    if record.regime == "pretrain":
        return record.status == STATUS_DONE and record.stop_reason == "early_stop"
    schedule = (record.config or {}).get("pretrain", {})
    nominal = schedule.get("tokens")
    return bool(nominal and record.pretrain_tokens and record.pretrain_tokens < float(nominal) * 0.99)


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
    if note.exists() or record.exists():
        check_weights(path)  # a model this tool saved: without its checksum it is not taken
    else:
        log.warning("pretrain.init_from=%s carries no checksum (a model saved by another tool): its weights are "
                    "used as they are, unchecked", path)
    if saved_tokenizer is not None and saved_tokenizer != tokenizer_id:
        raise ConfigError(f"pretrain.init_from={path} was trained with tokenizer {saved_tokenizer}, this run uses "
                          f"{tokenizer_id}; set tokenizer.* to match it")


def weights_missing(model_dir: Path) -> str:
    """What keeps `model_dir` from being a finished pre-training's weights ('' if nothing): the
    safetensors file and the checksum saved beside it must both be there."""
    weights, note_path = model_dir / WEIGHTS_FILE, model_dir / TOKENIZER_NOTE
    if not weights.is_file():
        return f"{weights} is missing" if not os.path.lexists(weights) else f"{weights} is not a file"
    try:
        note = json.loads(note_path.read_text())
    except (OSError, ValueError):
        note = None
    if not isinstance(note, dict) or not isinstance(note.get(WEIGHTS_CHECKSUM), str):
        return f"{note_path}, the weights' checksum, is missing or unreadable (corrupt weights would pass unseen)"
    return ""


def check_weights(model_dir: Path) -> None:
    """Pre-trained weights match the checksum saved beside them (once per process). safetensors
    itself checks no checksum: a corrupted file would load, and every fine-tune from it would be
    silently wrong; weights without a checksum are therefore never taken as this tool's."""
    if str(model_dir) in _CHECKED:
        return
    missing = weights_missing(model_dir)
    if missing:
        raise DataError(f"pre-trained weights in {model_dir} cannot be checked: {missing}; "
                        f"delete {model_dir.parent} to pre-train again")
    note = json.loads((model_dir / TOKENIZER_NOTE).read_text())
    if digest(model_dir / WEIGHTS_FILE) != note[WEIGHTS_CHECKSUM]:
        raise DataError(f"pre-trained weights {model_dir / WEIGHTS_FILE} do not match their checksum (edited or "
                        f"corrupted); delete {model_dir.parent} to pre-train again")
    _CHECKED.add(str(model_dir))
