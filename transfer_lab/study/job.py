"""One job of a sweep: validate, read the settings, build data, (pre-train once), train, and
leave a run record. The only module below train.py that sees the Hydra config."""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
import warnings
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from transfer_lab.atomic_files import disk_full_path, is_disk_full
from transfer_lab.data.run_data import RunData, load_run_data
from transfer_lab.errors import UserError
from transfer_lab.study import interrupts, lineage, records
from transfer_lab.study.job_settings import JobSettings, identity_of, read_settings
from transfer_lab.study.keys import key_prefix, run_key, run_lineage
from transfer_lab.study.outcomes import (
    BUSY,
    DONE,
    INTERRUPTED,
    NO_SPACE,
    NOT_RUN,
    SKIPPED,
    Outcome,
    failed,
    one_line,
)
from transfer_lab.study.pretraining import (
    PRETRAINED_MODEL_DIR,
    check_init_from,
    ensure_pretrained,
    set_pretrain_budget,
    stopped_before_budget,
)
from transfer_lab.study.records import STATUS_DONE, STATUS_FAILED, RunResult
from transfer_lab.study.training_run import (
    base_result,
    datamodule_for,
    module_kwargs,
    remove_torn_writes,
    train_and_record,
)
from transfer_lab.study.validate import validate_config
from transfer_lab.training.callbacks import RunInterrupted
from transfer_lab.training.model import ModelShape
from transfer_lab.training.run_files import CHECKPOINT_DIR
from transfer_lab.training.schedule import size_schedule

log = logging.getLogger("transfer_lab")
logging.raiseExceptions = False  # a log file on a full disk: the job reports it once, not a traceback per line
# a sweep is hundreds of jobs: Lightning's per-job banner (devices, tips) and a torch deprecation
# notice would bury the lines that matter (each run's result)
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*The `srun` command is available.*")  # a SLURM client installed here


def _lineage_of(record: RunResult) -> str:
    """The lineage of a record written before records carried one, from its stored config."""
    if not record.config:
        return ""
    try:
        return run_lineage(identity_of(record.config))
    except Exception:  # noqa: BLE001 - a config of another version: no lineage, no reuse
        return ""


def start_record(settings: JobSettings, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / records.CONFIG_FILE).write_text(OmegaConf.to_yaml(settings.config))


def run_job(cfg: DictConfig) -> str:
    """Run one job; returns one of study/outcomes.py (done, skipped, failed, interrupted, busy,
    no_space, not_run). UserError escapes (train.py exits 2).

    A run is owned by one process at a time: a second launch that reaches a run another process
    holds skips it (busy). A stop request ends the run at a step boundary (interrupted: resumed by
    the next launch); a full disk fails the run with "no space left on <path>" (no_space). The job
    file in the job's Hydra folder tells the launcher its pid, its run, how it ended and when
    (study/progress.py prints a line from it)."""
    interrupts.install_handlers()
    validate_config(cfg)
    settings = read_settings(cfg)
    interrupts.watch(settings.launch_dir)
    # the pid before the first look at the stop marker; the times for the launch's progress lines
    interrupts.note_job(settings.job_dir, pid=os.getpid(), started_at=time.time())
    outcome = _job(settings)
    try:
        interrupts.note_job(settings.job_dir, outcome=str(outcome), error=getattr(outcome, "reason", ""),
                            ended_at=time.time())
    except OSError as err:
        if not is_disk_full(err):
            raise
    return outcome


def _job(settings: JobSettings) -> str:
    if interrupts.requested():
        return NOT_RUN
    if settings.threads:
        torch.set_num_threads(settings.threads)  # parallel CPU jobs would otherwise oversubscribe the cores
    key = run_key(settings.identity)
    run_dir = settings.paths.sweep_dir / "runs" / key
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        interrupts.note_job(settings.job_dir, run_key=key, run_dir=str(run_dir))
        lock_file = settings.paths.sweep_dir / "locks" / f"{key}.lock"
        lock_file.parent.mkdir(exist_ok=True)
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("skipped %s: another process holds %s and is training it", key, lock.lock_file)
            return BUSY
        try:
            return _owned_job(settings, key, run_dir)
        finally:
            lock.release()
    except RunInterrupted as err:
        log.warning("%s: %s; its checkpoint is kept and the next launch resumes it", key, err)
        return INTERRUPTED
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever fails, the job says why: one line, its record, the summary
        if not is_disk_full(err):
            return _failed(settings, key, run_dir, err)
        log.error("%s: no space left on %s; free space and launch again (finished runs are kept)",
                  key, disk_full_path(err, run_dir))
        return Outcome(NO_SPACE, f"no space left on {disk_full_path(err, run_dir)}")


def _failed(settings: JobSettings, key: str, run_dir: Path, err: Exception) -> Outcome:
    """A failure nothing below foresaw (a folder where a file belongs, a bug): one line on the
    console, the traceback in the job file, and the reason in the run's record, so that the
    summary, the record and the analysis all say why."""
    reason = f"{type(err).__name__}: {one_line(str(err))}"
    log.error("%s failed: %s (traceback in %s)", key, reason, settings.job_dir / interrupts.JOB_FILE
              if settings.job_dir else "no job file: a single run")
    interrupts.note_job(settings.job_dir, traceback=traceback.format_exc(limit=8))
    try:
        records.mark_failed(run_dir, reason, RunResult(run_key=key, sweep=settings.sweep, regime=settings.regime,
                                                       config=settings.config))
    except (OSError, UserError) as unwritable:  # the run folder itself is what broke: the job file keeps it
        log.error("%s: its record could not be written either (%s)", key, one_line(str(unwritable)))
    return failed(f"{key}: {reason}")


def _owned_job(settings: JobSettings, key: str, run_dir: Path) -> str:
    """The job, with the run's lock held."""
    remove_torn_writes(run_dir)
    previous = records.read_own_result(run_dir, log.warning)
    if previous is not None and stopped_before_budget(previous) and settings.pretrain.on_plateau != "stop":
        aside = records.set_aside(run_dir, "pretrained-early")
        log.warning("%s was fine-tuned from a pre-training the old rule stopped before its budget; trained "
                    "again from the full budget (the old record is kept as %s)", key, aside.name)
        previous = None
    if previous is not None and previous.status == STATUS_DONE:
        log.info("skipped %s: already done (best val %.4f nats/token)", key, previous.best_val_loss)
        return SKIPPED
    run_line = run_lineage(settings.identity) if settings.regime != "pretrain" else ""
    if run_line and previous is None:
        ceiling = settings.optim.max_steps
        donor, how = lineage.predecessor(settings.paths.sweeps_dir, key_prefix(settings.identity), key, run_line,
                                         ceiling, _lineage_of) or (None, None)
        if how == "reuse" and donor.parents[1] == run_dir.parents[1]:
            log.info("skipped %s: converged as %s in this sweep (a higher ceiling changes nothing)", key, donor.name)
            return SKIPPED
        if how == "reuse":
            lineage.copy_run(donor, run_dir, settings.sweep, with_checkpoints=False, lineage=run_line)
            log.info("skipped %s: the same run finished in sweep %s (copied)", key, donor.parents[1].name)
            return SKIPPED
        if how == "extend":
            lineage.copy_run(donor, run_dir, settings.sweep, with_checkpoints=True, lineage=run_line)
            log.info("extending %s from %s (stopped below the ceiling optim.max_steps=%d)", key, donor.name, ceiling)
    started = time.perf_counter()
    init_from = settings.pretrain.init_from
    need_source = settings.regime == "pretrain" or (settings.regime == "finetune" and not init_from)
    run_data = load_run_data(settings.data, need_source=need_source, need_target=settings.regime != "pretrain",
                             log=log.info)
    if interrupts.requested():
        return NOT_RUN
    shape = settings.model.shape(run_data.tokenizer.vocab_size)
    if settings.regime == "pretrain":
        start_record(settings, run_dir)
        try:
            pretrained, trained = ensure_pretrained(settings, run_data, shape)
        except RuntimeError as err:
            log.error("%s", err)
            return failed(f"{key}: {err}")
        pretrained.sweep = settings.sweep
        records.write_result(run_dir, pretrained)
        if not trained:
            log.info("skipped %s: pre-trained already (%s)", key, settings.paths.pretrained_dir / pretrained.run_key)
        return DONE if trained else SKIPPED
    return _target_run(settings, key, run_line, run_dir, run_data, shape, started)


def _target_run(settings: JobSettings, key: str, run_line: str, run_dir: Path, run_data: RunData, shape: ModelShape,
                started: float) -> str:
    result = base_result(settings, key, run_data, shape)
    result.lineage = run_line
    if settings.regime != "finetune":  # a from-scratch run has no source
        result.source_corpus, result.source_weights = None, {}
    target = run_data.target
    result.target_corpus, result.val_set = settings.data.target, target.id
    result.target_corpus_chars = target.train.n_chars
    batch_size = settings.optim.batch_size
    datamodule = datamodule_for(settings, [(target.train, 1.0)], target.val, settings.data.finetune_chars, batch_size)
    result.finetune_chars, result.finetune_tokens = datamodule.train_chars, datamodule.train_tokens
    result.val_tokens, result.val_chars = datamodule.val_data.n_targets, datamodule.val_data.n_chars
    start_from = None
    if settings.regime == "finetune":
        if settings.pretrain.init_from:
            start_from = settings.pretrain.init_from
            check_init_from(start_from, shape, run_data.tokenizer.id)
            result.pretrain_key = str(start_from)
        else:
            try:
                pretrained, _ = ensure_pretrained(settings, run_data, shape)
            except RuntimeError as err:
                result.status, result.error, result.stop_reason = STATUS_FAILED, str(err), "error"
                start_record(settings, run_dir)
                records.write_result(run_dir, result)
                return failed(f"{key}: {err}")
            start_from = settings.paths.pretrained_dir / pretrained.run_key / PRETRAINED_MODEL_DIR
            result.pretrain_key = pretrained.run_key
            set_pretrain_budget(result, pretrained)
    start_record(settings, run_dir)  # only now: every check that could refuse this run has passed
    schedule = size_schedule(settings.stopping, datamodule.train_tokens, batch_size * settings.model.n_ctx)
    kwargs = module_kwargs(settings, shape, schedule, init_from=str(start_from) if start_from else None)
    train_and_record(settings, run_dir, result, datamodule, kwargs, schedule)
    if result.status == STATUS_DONE:
        if result.converged is not False:  # a run the ceiling stopped keeps them: a higher ceiling extends it
            shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)  # the record is the result
        log.info("done %s: best val %.4f nats/token = %.4f bits/char at step %d of %d (%s%s), %.1f s, %.0f tokens/s",
                 key, result.best_val_loss, result.best_val_bits_per_char, result.best_step, result.steps,
                 result.stop_reason, "" if result.converged else f"; NOT converged: {result.not_converged_why}",
                 time.perf_counter() - started, result.tokens_per_s)
        return DONE
    return failed(f"{key}: {result.error}")
