"""One job of a sweep: validate, build data, (pre-train once), train, and leave a run record."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import traceback
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from filelock import FileLock
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from transfer_lab import lineage, records
from transfer_lab.callbacks import DivergedError
from transfer_lab.data import RunData, load_run_data, source_weights
from transfer_lab.datamodule import TokenDataModule
from transfer_lab.errors import ConfigError, UserError
from transfer_lab.keys import key_prefix, pretrain_key, run_key, run_lineage
from transfer_lab.model import ModelShape, build_gpt2, count_params, flops_per_token, padded_vocab
from transfer_lab.records import STATUS_DONE, STATUS_FAILED, RunResult
from transfer_lab.schedule import Schedule, StoppingRule, fixed_budget, size_schedule
from transfer_lab.training import CHECKPOINT_DIR, fit
from transfer_lab.validate import validate_config
from transfer_lab.wandb_logging import finish, make_logger, scrub

log = logging.getLogger("transfer_lab")
# a sweep is hundreds of jobs: Lightning's per-job banner (devices, tips) and a torch deprecation
# notice would bury the lines that matter (each run's result)
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
PRETRAINED_MODEL_DIR = "model"  # save_pretrained folder: config.json + model.safetensors
TOKENIZER_NOTE = "transfer_lab.json"  # beside the weights: which tokenizer they were trained with


def remove_torn_writes(folder: Path) -> None:
    """Temp files of atomic writes that a kill interrupted: the real file is intact beside them."""
    for tmp in folder.glob(".*.tmp"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def absolute_paths(cfg: DictConfig) -> None:
    """Relative paths are relative to where the user launched, whatever Hydra's job dir is."""
    for key in ("output_root", "data_dir", "cache_dir", "pretrained_dir", "sweep_dir"):
        cfg.paths[key] = to_absolute_path(str(cfg.paths[key]))


def model_shape(cfg: DictConfig, run_data: RunData) -> ModelShape:
    m = cfg.model
    return ModelShape(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, n_ctx=m.n_positions,
                      vocab_size=padded_vocab(run_data.tokenizer.vocab_size, m.pad_vocab_multiple), dropout=m.dropout)


def base_result(cfg: DictConfig, key: str, run_data: RunData, shape: ModelShape) -> RunResult:
    with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
        non_embedding, total = count_params(build_gpt2(shape, cfg.model.attn_implementation))
    return RunResult(run_key=key, sweep=cfg.sweep, regime=cfg.regime, tokenizer=run_data.tokenizer.id,
                     experiment=_experiment_choice(),
                     n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head, n_ctx=cfg.model.n_ctx,
                     vocab_size=shape.vocab_size, non_embedding_params=non_embedding, total_params=total,
                     seed=cfg.seed, source_corpus="+".join(source_weights(cfg)),
                     config=scrub(OmegaConf.to_container(cfg, resolve=True)))


def _experiment_choice() -> str | None:
    """The experiment= choice of this job (None outside a Hydra launch, e.g. a composed config)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.choices.get("experiment")
    except ValueError:
        return None


def module_kwargs(cfg: DictConfig, shape: ModelShape, schedule: Schedule, init_from: str | None = None) -> dict:
    o = cfg.optim
    return dict(shape=asdict(shape), lr=schedule.lr, weight_decay=float(o.weight_decay),
                betas=tuple(float(b) for b in o.betas), warmup_steps=schedule.warmup_steps,
                horizon_steps=schedule.horizon_steps, min_lr_ratio=schedule.min_lr_ratio, init_from=init_from,
                compile=bool(cfg.model.compile), attn_implementation=str(cfg.model.attn_implementation))


def stopping_rule(cfg: DictConfig) -> StoppingRule:
    """optim.*, with finetune.* (lr, warm-up) in place for fine-tuned runs."""
    o = cfg.optim
    own = {k: v for k, v in cfg.finetune.items() if v is not None} if cfg.regime == "finetune" else {}
    return StoppingRule(lr=float(own.get("lr", o.lr)), warmup_steps=int(own.get("warmup_steps", o.warmup_steps)),
                        warmup_epochs=float(o.warmup_epochs), kind=str(o.schedule), decay=float(o.decay),
                        min_lr_ratio=float(o.min_lr_ratio),
                        patience=int(o.patience), patience_fraction=float(o.patience_fraction),
                        min_rel_improvement=float(o.min_rel_improvement), val_every_epochs=float(o.val_every_epochs),
                        min_val_every_n_steps=int(o.min_val_every_n_steps), val_every_n_steps=int(o.val_every_n_steps),
                        max_steps=int(o.max_steps), anneal_window=str(o.get("anneal_window", "run")))


def datamodule_for(cfg: DictConfig, train: list, val, train_chars: int | None, batch_size: int) -> TokenDataModule:
    return TokenDataModule(train, val, train_chars=train_chars, val_tokens=cfg.data.val_tokens,
                           stopping_val_tokens=cfg.data.stopping_val_tokens, n_ctx=cfg.model.n_ctx,
                           batch_size=batch_size, val_batch_size=cfg.optim.val_batch_size, seed=cfg.seed)


def train_and_record(cfg: DictConfig, run_dir: Path, result: RunResult, datamodule: TokenDataModule, kwargs: dict,
                     schedule: Schedule):
    """Fit, then fill `result` from the outcome; a crash or NaN is recorded as a failed run."""
    logger = make_logger(cfg, result.run_key, run_dir, {"non_embedding_params": result.non_embedding_params,
                                                       "finetune_chars": result.finetune_chars})
    result.schedule = asdict(schedule)
    records.write_result(run_dir, result)  # status=running: visible to the analysis as unfinished
    outcome = None
    try:
        outcome = fit(run_dir, datamodule, kwargs, schedule, cfg.trainer, seed=int(cfg.seed),
                      gradient_clip=float(cfg.optim.gradient_clip), logger=logger, log=log.info)
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
    except Exception as err:  # noqa: BLE001 - one failing job must not end the sweep
        result.status = STATUS_FAILED
        result.stop_reason = "diverged" if isinstance(err, DivergedError) else "error"
        result.error = f"{type(err).__name__}: {err}"
        log.error("run %s failed: %s\n%s", result.run_key, result.error, traceback.format_exc(limit=3))
    finally:
        result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        finish(logger, asdict(result))
    records.write_result(run_dir, result)
    return outcome


def ensure_pretrained(cfg: DictConfig, run_data: RunData, shape: ModelShape) -> RunResult:
    """The pre-trained model for this shape/source/budget: trained once, then read from the cache.

    A file lock makes a second job that needs the same model wait for the first and reuse it.
    """
    weights = source_weights(cfg)
    key = pretrain_key(cfg, weights)
    folder = Path(cfg.paths.pretrained_dir) / key
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
        pcfg = cfg.pretrain
        primary = run_data.primary_source
        train = [(token_file.train, weight) for token_file, weight in run_data.sources.values()]
        datamodule = datamodule_for(cfg, train, primary.val, None, pcfg.batch_size)
        tokens_per_step = pcfg.batch_size * cfg.model.n_ctx
        budget_tokens = int(float(pcfg.tokens)) if pcfg.tokens is not None else round(
            int(float(pcfg.chars)) * datamodule.train_tokens / max(datamodule.train_chars, 1))
        max_steps = max(1, math.ceil(budget_tokens / tokens_per_step))
        record = base_result(cfg, key, run_data, shape)
        record.regime, record.val_set = "pretrain", primary.id
        record.val_tokens, record.val_chars = datamodule.val_data.n_targets, datamodule.val_data.n_chars
        log.info("pre-training %s: %d steps x %d tokens on %s", key, max_steps, tokens_per_step, "+".join(weights))
        schedule = fixed_budget(float(pcfg.lr), int(pcfg.warmup_steps), max_steps, float(cfg.optim.min_lr_ratio),
                                int(cfg.optim.val_every_n_steps), int(pcfg.patience), float(cfg.optim.min_rel_improvement))
        outcome = train_and_record(cfg, folder, record, datamodule, module_kwargs(cfg, shape, schedule), schedule)
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
        _set_pretrain_budget(record, record)
        records.write_result(folder, record)  # the record says done only once the weights are saved
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        return record


def _set_pretrain_budget(result: RunResult, pretrained: RunResult) -> None:
    """The pre-training budget is what the whole pre-training run consumed (tokens, characters,
    FLOPs), not the step its best weights came from: runs of one budget share one value, and
    compute comparisons count every step paid for."""
    result.pretrain_tokens, result.pretrain_chars = pretrained.tokens_seen, pretrained.chars_seen
    result.pretrain_flops = pretrained.train_flops


def _check_init_from(path: Path, shape: ModelShape, tokenizer_id: str) -> None:
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


def start_record(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / records.CONFIG_FILE).write_text(OmegaConf.to_yaml(scrub(OmegaConf.to_container(cfg, resolve=True))))


def run_job(cfg: DictConfig) -> str:
    """Run one job; returns 'done', 'skipped' or 'failed'. UserError escapes (train.py exits 2)."""
    validate_config(cfg)
    absolute_paths(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # parallel CPU jobs would otherwise oversubscribe the cores
    weights = source_weights(cfg)
    key = run_key(cfg, weights)
    run_dir = Path(cfg.paths.sweep_dir) / "runs" / key
    remove_torn_writes(run_dir)
    has_record = (run_dir / records.RESULTS_FILE).exists()
    if has_record and (previous := records.read_result(run_dir)).status == STATUS_DONE:
        log.info("skipped %s: already done (best val %.4f nats/token)", key, previous.best_val_loss)
        return "skipped"
    run_line = run_lineage(cfg, weights) if cfg.regime != "pretrain" else ""
    if run_line and not has_record:
        ceiling = int(cfg.optim.max_steps)
        donor, how = lineage.predecessor(Path(cfg.paths.output_root) / "sweeps", key_prefix(cfg), key, run_line,
                                         ceiling) or (None, None)
        if how == "reuse" and donor.parents[1] == run_dir.parents[1]:
            log.info("skipped %s: converged as %s in this sweep (a higher ceiling changes nothing)", key, donor.name)
            return "skipped"
        if how == "reuse":
            lineage.copy_run(donor, run_dir, cfg.sweep, with_checkpoints=False)
            log.info("skipped %s: the same run finished in sweep %s (copied)", key, donor.parents[1].name)
            return "skipped"
        if how == "extend":
            lineage.copy_run(donor, run_dir, cfg.sweep, with_checkpoints=True)
            log.info("extending %s from %s (stopped below the ceiling optim.max_steps=%d)", key, donor.name, ceiling)
    started = time.perf_counter()
    init_from = cfg.pretrain.get("init_from")
    need_source = cfg.regime == "pretrain" or (cfg.regime == "finetune" and not init_from)
    run_data = load_run_data(cfg, need_source=need_source, need_target=cfg.regime != "pretrain", log=log.info)
    shape = model_shape(cfg, run_data)
    if cfg.regime == "pretrain":
        start_record(cfg, run_dir)
        try:
            pretrained = ensure_pretrained(cfg, run_data, shape)
        except RuntimeError as err:
            log.error("%s", err)
            return "failed"
        pretrained.sweep = cfg.sweep
        records.write_result(run_dir, pretrained)
        return "done"
    return _target_run(cfg, key, run_line, run_dir, run_data, shape, init_from, started)


def _target_run(cfg, key, run_line, run_dir, run_data, shape, init_from, started) -> str:
    result = base_result(cfg, key, run_data, shape)
    result.lineage = run_line
    result.source_corpus = result.source_corpus if cfg.regime == "finetune" else None
    target = run_data.target
    result.target_corpus, result.val_set = str(cfg.data.target), target.id
    result.target_corpus_chars = target.train.n_chars
    o = cfg.optim
    datamodule = datamodule_for(cfg, [(target.train, 1.0)], target.val, int(float(cfg.data.finetune_chars)),
                                o.batch_size)
    result.finetune_chars, result.finetune_tokens = datamodule.train_chars, datamodule.train_tokens
    result.val_tokens, result.val_chars = datamodule.val_data.n_targets, datamodule.val_data.n_chars
    start_from = None
    if cfg.regime == "finetune":
        if init_from:
            start_from = Path(to_absolute_path(str(init_from)))
            _check_init_from(start_from, shape, run_data.tokenizer.id)
            result.pretrain_key = str(start_from)
        else:
            try:
                pretrained = ensure_pretrained(cfg, run_data, shape)
            except RuntimeError as err:
                result.status, result.error, result.stop_reason = STATUS_FAILED, str(err), "error"
                start_record(cfg, run_dir)
                records.write_result(run_dir, result)
                return "failed"
            start_from = Path(cfg.paths.pretrained_dir) / pretrained.run_key / PRETRAINED_MODEL_DIR
            result.pretrain_key = pretrained.run_key
            _set_pretrain_budget(result, pretrained)
    start_record(cfg, run_dir)  # only now: every check that could refuse this run has passed
    schedule = size_schedule(stopping_rule(cfg), datamodule.train_tokens, o.batch_size * cfg.model.n_ctx)
    kwargs = module_kwargs(cfg, shape, schedule, init_from=str(start_from) if start_from else None)
    train_and_record(cfg, run_dir, result, datamodule, kwargs, schedule)
    if result.status == STATUS_DONE:
        if result.converged is not False:  # a run the ceiling stopped keeps them: a higher ceiling extends it
            shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # the record is the result
        log.info("done %s: best val %.4f nats/token = %.4f bits/char at step %d of %d (%s%s), %.1f s, %.0f tokens/s",
                 key, result.best_val_loss, result.best_val_bits_per_char, result.best_step, result.steps,
                 result.stop_reason, "" if result.converged else f"; NOT converged: {result.not_converged_why}",
                 time.perf_counter() - started, result.tokens_per_s)
        return "done"
    return "failed"
