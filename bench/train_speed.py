"""Figures 1 and 2: the project's Lightning training path against a bare PyTorch loop.

Both sides train the same GPT-2 (built from the same seed) on the same batches (the same
TokenDataModule's train_dataloader over a real token file) with the same optimiser (AdamW with the
project's decay groups, LambdaLR warm-up + cosine, gradient clipping at optim.gradient_clip) and
read the loss back every trainer.log_every_n_steps steps, as RunRecorder does.

The Lightning side is `transfer_lab.training.fit` itself: the real Trainer settings, RunRecorder,
ModelCheckpoint, EarlyStopping and AtomicCheckpointIO. The only addition is a subclass of
RunRecorder (patched into transfer_lab.training for the call) that takes one perf_counter() per
step after the recorder's own hook. Validation is pushed past the timed steps (val_every_n_steps =
max_steps), so neither side validates inside the window; checkpoint saves happen at validation, so
none falls inside the window either.

Each window trains `warm + steps` steps from step 0 and times the last `steps`; windows alternate
Lightning / bare in one process (and which side goes first), so machine load from other processes
on the same cores hits both sides alike. Per window, tokens/s is tokens per step over the median
step duration on CPU (robust to load spikes; see _window_rate) and steps over elapsed time on CUDA.
The headline ratio is the median over windows of the per-pair ratio Lightning / bare; the ratio of
the per-side medians and the ratio from whole-window means (which also counts the periodic
every-10-steps work) are kept in the JSON.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import BENCH_DATA, compose, median, run_data, spread

# ---------------------------------------------------------------------------------------------
# shared set-up


def setup(overrides: list[str], steps_total: int):
    """(cfg, run data, module kwargs) for a scratch run of the demo model on python_small."""
    from transfer_lab.pipeline import model_shape, module_kwargs

    cfg = compose("regime=scratch", f"optim.max_steps={steps_total}", f"optim.val_every_n_steps={steps_total}",
                  "data.finetune_chars=9e5", *overrides)
    data = run_data(cfg)
    shape = model_shape(cfg, data)
    kwargs = module_kwargs(cfg, shape, cfg.optim.lr, cfg.optim.warmup_steps, steps_total, 1)
    return cfg, data, shape, kwargs


def datamodule(cfg, data):
    from transfer_lab.datamodule import TokenDataModule

    o = cfg.optim
    return TokenDataModule([(data.target.train, 1.0)], data.target.val, train_chars=int(float(cfg.data.finetune_chars)),
                           val_tokens=cfg.data.val_tokens, n_ctx=cfg.model.n_ctx, batch_size=o.batch_size,
                           val_batch_size=o.val_batch_size, seed=cfg.seed)


# ---------------------------------------------------------------------------------------------
# the Lightning side: transfer_lab.training.fit


def _timed_recorder_class():
    import torch

    from transfer_lab.callbacks import RunRecorder

    class TimedRecorder(RunRecorder):
        """RunRecorder plus one timestamp per finished step (and the first loss values, for the check)."""
        instances: list = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.step_ends: list[float] = []
            self.losses: list = []
            self.val_seconds = 0.0
            self._val_started = None
            self.first_batch_start = self.train_started = None
            TimedRecorder.instances.append(self)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.first_batch_start is None:
                self.first_batch_start = time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            super().on_train_start(trainer, pl_module)
            self.train_started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if len(self.losses) < 8:
                self.losses.append(outputs["loss"].detach())
            if trainer.global_step >= trainer.max_steps and torch.cuda.is_available():
                torch.cuda.synchronize()  # the window's end: one sync, after the last step only
            self.step_ends.append(time.perf_counter())

        def on_validation_start(self, trainer, pl_module):
            self._val_started = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            super().on_validation_end(trainer, pl_module)
            if self._val_started is not None:
                self.val_seconds += time.perf_counter() - self._val_started
                self._val_started = None

    return TimedRecorder


@contextlib.contextmanager
def timed_recorder():
    """Patch transfer_lab.training.RunRecorder (what fit() builds) with the timing subclass."""
    import transfer_lab.training as training

    cls = _timed_recorder_class()
    original = training.RunRecorder
    training.RunRecorder = cls
    try:
        yield cls
    finally:
        training.RunRecorder = original


def lightning_window(cfg, data, kwargs, n_steps: int, run_dir: Path, profiler=None) -> dict:
    from transfer_lab.training import fit

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    dm = datamodule(cfg, data)
    with timed_recorder() as cls, contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        outcome = fit(run_dir, cfg, dm, kwargs, max_steps=n_steps, patience=10**6, log=lambda *a: None)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - started
    rec = cls.instances[-1]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"step_ends": rec.step_ends, "losses": [float(x) for x in rec.losses], "wall_s": wall,
            "steps": outcome.steps, "val_s": rec.val_seconds, "started": started,
            "train_started": rec.train_started, "first_batch_start": rec.first_batch_start}


# ---------------------------------------------------------------------------------------------
# the bare side: a plain PyTorch loop doing the same work


def bare_window(cfg, data, shape, kwargs, n_steps: int) -> dict:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from transfer_lab.datamodule import IGNORE_INDEX
    from transfer_lab.model import ModelShape, build_gpt2
    from transfer_lab.module import lr_factor

    hp = kwargs
    pl.seed_everything(int(cfg.seed), verbose=False)  # as fit(): same seed, same initial weights
    model = build_gpt2(ModelShape(**hp["shape"]), hp["attn_implementation"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    forward = torch.compile(model) if hp["compile"] else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=hp["lr"], betas=tuple(hp["betas"]), fused=device.type == "cuda")
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, hp["warmup_steps"], hp["total_steps"], hp["min_lr_ratio"]))
    from transfer_lab.training import precision_for
    precision = precision_for(cfg.trainer)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision.startswith("bf16")
                else contextlib.nullcontext())
    clip, log_every = float(cfg.optim.gradient_clip), int(cfg.trainer.log_every_n_steps)
    loader = datamodule(cfg, data).train_dataloader()
    step_ends, losses = [], []
    started = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step >= n_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            logits = forward(input_ids=x).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        if (step + 1) % log_every == 0:  # RunRecorder's one host sync every log_every_n_steps
            if not torch.isfinite(loss):
                raise RuntimeError("bare loop diverged")
            float(loss.detach())
        if len(losses) < 8:
            losses.append(loss.detach())
        step_ends.append(time.perf_counter())
    if device.type == "cuda":
        torch.cuda.synchronize()
        step_ends[-1] = time.perf_counter()
    return {"step_ends": step_ends, "losses": [float(v) for v in losses], "wall_s": time.perf_counter() - started}


def _window_rate(step_ends: list[float], warm: int, tokens_per_step: int, estimator: str) -> float:
    """tokens/s over the steps after the first `warm`.

    "median_step": tokens per step / the median step duration; robust to load spikes from other
    processes on a shared CPU (used on CPU). "window": timed steps / elapsed time of the whole window
    (used on CUDA, where host-side step times are asynchronous and only the total is meaningful).
    """
    if estimator == "median_step":
        durations = [b - a for a, b in zip(step_ends[warm - 1:-1], step_ends[warm:])]
        return tokens_per_step / median(durations)
    n = len(step_ends) - warm
    return n * tokens_per_step / (step_ends[-1] - step_ends[warm - 1])


def _sync_cuda():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------


def compare(overrides: list[str], *, windows: int, steps: int, warm: int, label: str, log=print) -> dict:
    """Alternate `windows` pairs of (Lightning, bare) windows; medians and ratios."""
    total = warm + steps
    cfg, data, shape, kwargs = setup(overrides, total)
    tokens_per_step = int(cfg.optim.batch_size) * int(cfg.model.n_ctx)
    tmp = Path(tempfile.mkdtemp(prefix="fig1-", dir=BENCH_DATA))
    light, bare, pair_ratios, loss_diffs = [], [], [], []
    means = {"L": [], "B": []}
    import torch
    estimator = "window" if torch.cuda.is_available() else "median_step"
    try:
        for w in range(windows):
            # alternate which side goes first, so neither always follows the other
            order = ("L", "B") if w % 2 == 0 else ("B", "L")
            rates = {}
            for side in order:
                if side == "L":
                    r = lightning_window(cfg, data, kwargs, total, tmp / "run")
                    lw = r
                else:
                    _sync_cuda()
                    r = bare_window(cfg, data, shape, kwargs, total)
                    bw = r
                rates[side] = _window_rate(r["step_ends"], warm, tokens_per_step, estimator)
            means["L"].append(_window_rate(lw["step_ends"], warm, tokens_per_step, "window"))
            means["B"].append(_window_rate(bw["step_ends"], warm, tokens_per_step, "window"))
            light.append(rates["L"])
            bare.append(rates["B"])
            pair_ratios.append(rates["L"] / rates["B"])
            n = min(len(lw["losses"]), len(bw["losses"]))
            loss_diffs.append(max(abs(a - b) for a, b in zip(lw["losses"][:n], bw["losses"][:n])))
            log(f"    {label} window {w + 1}/{windows}: lightning {rates['L']:,.0f} tok/s, bare {rates['B']:,.0f} tok/s, "
                f"ratio {rates['L'] / rates['B']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from transfer_lab.model import build_gpt2, count_params, flops_per_token
    n_params, total_params = count_params(build_gpt2(shape, cfg.model.attn_implementation))
    return {
        "label": label, "overrides": overrides, "n_layer": shape.n_layer, "n_embd": shape.n_embd, "n_ctx": shape.n_ctx,
        "vocab_size": shape.vocab_size, "non_embedding_params": n_params, "total_params": total_params,
        "batch_size": int(cfg.optim.batch_size), "tokens_per_step": tokens_per_step,
        "flops_per_token": flops_per_token(n_params, shape.n_layer, shape.n_ctx, shape.n_embd),
        "windows": windows, "timed_steps": steps, "warmup_steps": warm,
        "lightning_tokens_per_s": median(light), "bare_tokens_per_s": median(bare),
        "lightning_range": spread(light), "bare_range": spread(bare),
        "estimator": estimator,
        "ratio": median(pair_ratios), "ratio_of_medians": median(light) / median(bare),
        "ratio_whole_window_means": median([a / b for a, b in zip(means["L"], means["B"])]),
        "pair_ratios": [round(r, 4) for r in pair_ratios],
        "max_loss_diff_first_steps": max(loss_diffs) if loss_diffs else None,
        "precision": __import__("transfer_lab.training", fromlist=["x"]).precision_for(cfg.trainer),
    }


def profile_lightning(overrides: list[str], steps: int, warm: int, top: int = 25) -> dict:
    """cProfile of one Lightning window and one bare window: where the extra time per step goes."""
    import cProfile
    import pstats

    total = warm + steps
    cfg, data, shape, kwargs = setup(overrides, total)
    tmp = Path(tempfile.mkdtemp(prefix="prof-", dir=BENCH_DATA))
    out = {}
    try:
        prof = cProfile.Profile()
        r = lightning_window(cfg, data, kwargs, total, tmp / "run", profiler=prof)
        stats = pstats.Stats(prof)
        out["lightning_wall_s"] = r["wall_s"]
        out["lightning"] = _top(stats, top)
        prof_b = cProfile.Profile()
        prof_b.enable()
        rb = bare_window(cfg, data, shape, kwargs, total)
        prof_b.disable()
        out["bare_wall_s"] = rb["wall_s"]
        out["bare"] = _top(pstats.Stats(prof_b), top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["steps"] = total
    return out


def _top(stats, top: int) -> list[dict]:
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append({"function": f"{Path(filename).name}:{line}({func})", "calls": nc, "tottime_s": round(tt, 4),
                     "cumtime_s": round(ct, 4), "file": filename})
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    return rows[: top * 4]
