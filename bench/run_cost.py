"""Figure 4: per-run fixed cost inside a multirun, checkpoint save/load, and validation's share.

Jobs are started with `transfer_lab.study.job.run_job(cfg)` in this process, after torch, Lightning
and transformers are imported and the corpus/tokenizer/token files are cached: what every job of a
Hydra multirun after the first one pays. One untimed job warms the caches first. Timestamps come
from the same RunRecorder subclass as figure 1 (patched in for the call): job start (just before
run_job) → on_train_start → start of step 1 → end of step 1. The jobs use the demo's settings
(plateau rule, early stopping on 4,096 of 32,768 validation tokens) on python_small, so validation's
share of run time is measured on whole runs, the final scoring of the whole set included; its
config bound is the forward-only cost of the validation tokens against the training tokens
between two validations, at the densest interval (see `validation_bound`).

Checkpoints: the demo model's last.ckpt (weights + AdamW state + callbacks, as ModelCheckpoint
writes it) is saved and loaded through AtomicCheckpointIO, medians of several repeats.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import BENCH_DATA, compose, median


def validation_bound(cfg) -> float:
    """Share of run time spent validating, at worst, if a validation token costs 1/3 of a training
    token (forward only vs forward + backward): the smallest subsets validate every
    optim.min_val_every_n_steps steps, on the data.stopping_val_tokens early stopping watches (the
    one scoring of the whole set at the end is left out: it is one validation in a whole run)."""
    per_validation = min(int(cfg.data.stopping_val_tokens or cfg.data.val_tokens), int(cfg.data.val_tokens)) / 3.0
    between = int(cfg.optim.min_val_every_n_steps) * int(cfg.optim.batch_size) * int(cfg.model.n_ctx)
    return per_validation / (between + per_validation)


def job_costs(finetune_chars: list[str], overrides: list[str], log=print) -> dict:
    from train_speed import timed_recorder

    from transfer_lab.study import records
    from transfer_lab.study.job import run_job

    root = Path(tempfile.mkdtemp(prefix="fig4-", dir=BENCH_DATA))
    jobs = []
    try:
        for i, chars in enumerate(["2e4"] + list(finetune_chars)):  # the first job warms the caches, untimed
            cfg = compose("regime=scratch", f"data.finetune_chars={chars}", *overrides, sweep="fig4", output_root=root)
            with timed_recorder() as cls:
                t0 = time.perf_counter()
                status = run_job(cfg)
                t_end = time.perf_counter()
            if status != "done":
                raise RuntimeError(f"fig 4 job finetune_chars={chars} ended {status}")
            rec = cls.instances[-1]
            result = [records.read_result(p) for p in (Path(cfg.paths.sweep_dir) / "runs").iterdir()]
            result = max(result, key=lambda r: r.finetune_chars == round(float(chars)) or r.finetune_chars)
            job = {"finetune_chars": float(chars), "steps": result.steps, "stop_reason": result.stop_reason,
                   "job_s": t_end - t0, "to_train_start_s": rec.train_started - t0,
                   "to_first_step_start_s": rec.first_batch_start - t0, "to_first_step_end_s": rec.step_ends[0] - t0,
                   "train_s": rec.step_ends[-1] - rec.train_started if rec.step_ends else None,
                   "val_s": rec.val_seconds, "val_tokens": result.val_tokens}
            job["val_share_of_job"] = job["val_s"] / job["job_s"]
            if i == 0:
                job["warm_up"] = True
            else:
                log(f"    job D_F={chars}: first step ends {job['to_first_step_end_s']:.2f} s after job start, "
                    f"{job['steps']} steps ({job['stop_reason']}) in {job['job_s']:.1f} s, validation "
                    f"{job['val_share_of_job']:.1%} of it")
            jobs.append(job)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    timed = [j for j in jobs if not j.get("warm_up")]
    cfg = compose("regime=scratch", *overrides)
    return {"jobs": jobs,
            "to_first_step_s": median([j["to_first_step_end_s"] for j in timed]),
            "to_train_start_s": median([j["to_train_start_s"] for j in timed]),
            "first_job_to_first_step_s": jobs[0]["to_first_step_end_s"],
            "val_share": sum(j["val_s"] for j in timed) / sum(j["job_s"] for j in timed),
            "val_share_bound": validation_bound(cfg),
            "val_every_n_steps": int(cfg.optim.val_every_n_steps)}


def checkpoint_io(overrides: list[str], repeats: int = 5) -> dict:
    from train_speed import datamodule, fit_steps, setup

    from transfer_lab.training.callbacks import AtomicCheckpointIO

    cfg, data, shape, kwargs = setup(list(overrides), 5)
    tmp = Path(tempfile.mkdtemp(prefix="fig4ckpt-", dir=BENCH_DATA))
    try:
        (tmp / "run").mkdir()
        fit_steps(tmp / "run", cfg, datamodule(cfg, data), kwargs, 5, patience=10)
        last = tmp / "run" / "checkpoints" / "last.ckpt"
        io = AtomicCheckpointIO()
        loads, saves = [], []
        checkpoint = None
        for i in range(repeats):
            started = time.perf_counter()
            checkpoint = io.load_checkpoint(last)
            loads.append(time.perf_counter() - started)
            started = time.perf_counter()
            io.save_checkpoint(checkpoint, tmp / "copy" / "last.ckpt")
            saves.append(time.perf_counter() - started)
        size = last.stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"save_s": median(saves), "load_s": median(loads), "bytes": size, "repeats": repeats}
