"""Figures 1 and 2: the project's Lightning training path against a bare PyTorch loop.

Both sides train the same GPT-2 (built from the same seed) on the same batches (the same
TokenDataModule's train_dataloader over a real token file) with the same optimiser (AdamW with the
project's decay groups, LambdaLR warm-up + cosine, gradient clipping at optim.gradient_clip) and
read the loss back every trainer.log_every_n_steps steps, as RunRecorder does.

The Lightning side is `transfer_lab.training.fit.fit` itself: the real Trainer settings, RunRecorder,
ModelCheckpoint, EarlyStopping and AtomicCheckpointIO. The only addition is a subclass of
RunRecorder (patched into transfer_lab.training.fit for the call) that takes one perf_counter() per
step after the recorder's own hook. Validation is pushed past the timed steps (val_every_n_steps =
max_steps), so neither side validates inside the timed steps; checkpoints are saved at validation,
so none falls inside them either. The first losses of both sides are compared (same model, same
batches, same optimiser give the same numbers; the JSON keeps the largest difference).

On CPU (other processes share the 2 cores, and their load swings on a scale of seconds) the two
sides run in lockstep inside one fit(): after each Lightning step, the recorder subclass runs one
bare step (see lockstep_window), so both see the same load; tokens/s of each side is tokens per step
over its median step time over the timed steps (the whole-run means, which also count the periodic
every-10-steps work, are kept in the JSON). Several such runs ("windows") are made per size; the
headline ratio is the median over windows of Lightning / bare.

On CUDA a per-step sync would change what is measured (the Lightning path never syncs per step), so
whole windows alternate instead: a fit() of warm + steps steps, then a bare loop of as many, which
side goes first alternating, each timed over its last `steps` steps (one sync at the end).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

from common import BENCH_DATA, compose, median, run_data, spread

# ---------------------------------------------------------------------------------------------
# shared set-up


def setup(overrides: list[str], steps_total: int):
    """(cfg, run data, module kwargs) for a scratch run of the demo model on python_small."""
    from transfer_lab.study.job_settings import read_settings
    from transfer_lab.study.training_run import module_kwargs

    cfg = compose("regime=scratch", f"optim.max_steps={steps_total}", f"optim.val_every_n_steps={steps_total}",
                  "data.finetune_chars=5e5", *overrides)
    data = run_data(cfg)
    settings = read_settings(cfg)
    shape = settings.model.shape(data.tokenizer.vocab_size)
    kwargs = module_kwargs(settings, shape, steps_schedule(cfg, steps_total))
    return cfg, data, shape, kwargs


def steps_schedule(cfg, n_steps: int, patience: int = 10**6):
    """Exactly n_steps steps, one validation at the end: the demo's LR and warm-up, cosine over n_steps."""
    from transfer_lab.training.schedule import Schedule

    o = cfg.optim
    return Schedule(lr=float(o.lr), warmup_steps=min(int(o.warmup_steps), n_steps), horizon_steps=n_steps,
                    min_lr_ratio=float(o.min_lr_ratio), max_steps=n_steps, val_every_n_steps=n_steps,
                    patience=patience, min_rel_improvement=0.0, decay=None, fixed_budget=True)


def fit_steps(run_dir, cfg, dm, kwargs, n_steps: int, patience: int = 10**6):
    """transfer_lab.training.fit.fit for n_steps steps (what the benchmark times)."""
    from omegaconf import OmegaConf

    from transfer_lab.training.fit import fit

    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return fit(run_dir, dm, kwargs, steps_schedule(cfg, n_steps, patience), trainer, seed=int(cfg.seed),
               gradient_clip=float(cfg.optim.gradient_clip), log=lambda *a: None)


def datamodule(cfg, data):
    from transfer_lab.study.job_settings import read_settings
    from transfer_lab.study.training_run import datamodule_for

    return datamodule_for(read_settings(cfg), [(data.target.train, 1.0)], data.target.val, int(float(cfg.data.finetune_chars)),
                          cfg.optim.batch_size)


# ---------------------------------------------------------------------------------------------
# the Lightning side: transfer_lab.training.fit.fit


def _timed_recorder_class():
    import torch

    from transfer_lab.training.callbacks import RunRecorder

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
    """Patch transfer_lab.training.fit.RunRecorder (what fit() builds) with the timing subclass."""
    import transfer_lab.training.fit as training

    cls = _timed_recorder_class()
    original = training.RunRecorder
    training.RunRecorder = cls
    try:
        yield cls
    finally:
        training.RunRecorder = original


def lightning_window(cfg, data, kwargs, n_steps: int, run_dir: Path, profiler=None) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    dm = datamodule(cfg, data)
    with timed_recorder() as cls, contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        outcome = fit_steps(run_dir, cfg, dm, kwargs, n_steps)
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


class BareLoop:
    """A plain PyTorch training loop: same model (same seed), batches, optimiser, clipping and schedule."""

    def __init__(self, cfg, data, kwargs):
        import pytorch_lightning as pl
        import torch

        from transfer_lab.training.fit import precision_for
        from transfer_lab.training.model import ModelShape, build_gpt2
        from transfer_lab.training.schedule import lr_factor

        hp = kwargs
        pl.seed_everything(int(cfg.seed), verbose=False)  # as fit(): same seed, same initial weights
        self.model = build_gpt2(ModelShape(**hp["shape"]), hp["attn_implementation"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).train()
        self.forward = torch.compile(self.model) if hp["compile"] else self.model
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=hp["lr"], betas=tuple(hp["betas"]), fused=self.device.type == "cuda")
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, hp["warmup_steps"], hp["horizon_steps"], hp["min_lr_ratio"]))
        self.bf16 = precision_for(cfg.trainer).startswith("bf16")
        self.clip, self.log_every = float(cfg.optim.gradient_clip), int(cfg.trainer.log_every_n_steps)
        self.batches = iter(datamodule(cfg, data).train_dataloader())
        self.step_index, self.losses = 0, []

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        from transfer_lab.data.datamodule import IGNORE_INDEX

        x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.enable_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.forward(input_ids=x).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.schedule.step()
        self.step_index += 1
        if self.step_index % self.log_every == 0:  # RunRecorder's one host sync every log_every_n_steps
            if not torch.isfinite(loss):
                raise RuntimeError("bare loop diverged")
            float(loss.detach())
        if len(self.losses) < 8:
            self.losses.append(loss.detach())


def bare_window(cfg, data, shape, kwargs, n_steps: int) -> dict:
    loop = BareLoop(cfg, data, kwargs)
    step_ends = []
    started = time.perf_counter()
    for _ in range(n_steps):
        loop.step()
        step_ends.append(time.perf_counter())
    if loop.device.type == "cuda":
        import torch
        torch.cuda.synchronize()
        step_ends[-1] = time.perf_counter()
    return {"step_ends": step_ends, "losses": [float(v) for v in loop.losses], "wall_s": time.perf_counter() - started}


def lockstep_window(cfg, data, kwargs, n_steps: int, run_dir: Path) -> dict:
    """One fit() in which every Lightning step is followed, inside RunRecorder's hook, by one bare step.

    Lightning step k takes from the end of bare step k-1 to the end of Lightning step k (the whole
    Lightning loop: data fetch, hooks, logging, training step, clipping, optimiser, scheduler); bare
    step k takes from there to its own end. Load from other processes changes on a scale of
    seconds, so interleaving at the step (tens of ms) cancels it.
    """
    import transfer_lab.training.fit as training

    loop = BareLoop(cfg, data, kwargs)
    base = _timed_recorder_class()

    class Lockstep(base):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # appends the L timestamp
            loop.step()
            self.bare_ends.append(time.perf_counter())

    Lockstep.bare_ends = []
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    original = training.RunRecorder
    training.RunRecorder = Lockstep
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            fit_steps(run_dir, cfg, datamodule(cfg, data), kwargs, n_steps)
    finally:
        training.RunRecorder = original
        shutil.rmtree(run_dir, ignore_errors=True)
    rec = Lockstep.instances[-1]
    l_ends, b_ends = rec.step_ends, Lockstep.bare_ends
    light = [l_ends[k] - b_ends[k - 1] for k in range(1, len(l_ends))]
    bare = [b_ends[k] - l_ends[k] for k in range(1, len(l_ends))]
    return {"light_durations": light, "bare_durations": bare, "losses_l": [float(x) for x in rec.losses],
            "losses_b": [float(x) for x in loop.losses]}


def _window_rate(step_ends: list[float], warm: int, tokens_per_step: int, estimator: str = "window") -> float:
    """tokens/s over the steps after the first `warm` of a whole window (steps / elapsed time)."""
    n = len(step_ends) - warm
    return n * tokens_per_step / (step_ends[-1] - step_ends[warm - 1])


def _sync_cuda():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------


def aa_control(overrides: list[str], *, windows: int, steps: int, warm: int) -> dict:
    """The method's noise floor: two identical bare loops in lockstep (A/A); their ratio should be 1."""
    cfg, data, shape, kwargs = setup(overrides, warm + steps)
    ratios = []
    for _ in range(windows):
        a, b = BareLoop(cfg, data, kwargs), BareLoop(cfg, data, kwargs)
        ta, tb = [], []
        t = time.perf_counter()
        for _ in range(warm + steps):
            a.step()
            t1 = time.perf_counter()
            ta.append(t1 - t)
            b.step()
            t = time.perf_counter()
            tb.append(t - t1)
        ratios.append(median(tb[warm:]) / median(ta[warm:]))
    return {"ratio": median(ratios), "pair_ratios": [round(r, 4) for r in ratios], "range": spread(ratios)}


@contextlib.contextmanager
def without_step_log():
    """Ablation for the profile: CausalLM.training_step without its per-step `self.log("train/loss", ...)`
    (the progress-bar value); everything else in fit() unchanged. Patched in this process only."""
    from transfer_lab.training.lightning_module import CausalLM

    original = CausalLM.training_step

    def training_step(self, batch, batch_idx):
        return self._nll(batch, "mean")

    CausalLM.training_step = training_step
    try:
        yield
    finally:
        CausalLM.training_step = original


def compare(overrides: list[str], *, windows: int, steps: int, warm: int, label: str, log=print,
            variant: str | None = None) -> dict:
    """`windows` runs of both sides (lockstep on CPU, alternated whole windows on CUDA); medians and ratios."""
    if variant == "no_step_log":
        with without_step_log():
            return compare(overrides, windows=windows, steps=steps, warm=warm, label=label, log=log)
    total = warm + steps
    cfg, data, shape, kwargs = setup(overrides, total)
    tokens_per_step = int(cfg.optim.batch_size) * int(cfg.model.n_ctx)
    tmp = Path(tempfile.mkdtemp(prefix="fig1-", dir=BENCH_DATA))
    light, bare, pair_ratios, loss_diffs = [], [], [], []
    means = {"L": [], "B": []}
    import torch
    # CPU: lockstep (one bare step after every Lightning step, median step times); CUDA: whole windows
    estimator = "window" if torch.cuda.is_available() else "lockstep"
    try:
        for w in range(windows):
            if estimator == "lockstep":
                r = lockstep_window(cfg, data, kwargs, total, tmp / "run")
                dl, db = r["light_durations"][warm - 1:], r["bare_durations"][warm - 1:]
                rates = {"L": tokens_per_step / median(dl), "B": tokens_per_step / median(db)}
                means["L"].append(tokens_per_step * len(dl) / sum(dl))
                means["B"].append(tokens_per_step * len(db) / sum(db))
                ll, lb = r["losses_l"], r["losses_b"]
            else:
                # alternate which side goes first, so neither always follows the other
                order = ("L", "B") if w % 2 == 0 else ("B", "L")
                rates = {}
                for side in order:
                    if side == "L":
                        lw = lightning_window(cfg, data, kwargs, total, tmp / "run")
                        rates["L"] = _window_rate(lw["step_ends"], warm, tokens_per_step, "window")
                    else:
                        _sync_cuda()
                        bw = bare_window(cfg, data, shape, kwargs, total)
                        rates["B"] = _window_rate(bw["step_ends"], warm, tokens_per_step, "window")
                means["L"].append(rates["L"])
                means["B"].append(rates["B"])
                ll, lb = lw["losses"], bw["losses"]
            light.append(rates["L"])
            bare.append(rates["B"])
            pair_ratios.append(rates["L"] / rates["B"])
            n = min(len(ll), len(lb))
            loss_diffs.append(max(abs(a - b) for a, b in zip(ll[:n], lb[:n])))
            log(f"    {label} window {w + 1}/{windows}: lightning {rates['L']:,.0f} tok/s, bare {rates['B']:,.0f} tok/s, "
                f"ratio {rates['L'] / rates['B']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from transfer_lab.training.model import build_gpt2, count_params, flops_per_token
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
        "precision": __import__("transfer_lab.training.fit", fromlist=["x"]).precision_for(cfg.trainer),
    }


def profile_lockstep(overrides: list[str], steps: int) -> dict:
    """cProfile of one lockstep fit() (CPU): both sides in one profile, under the same load.

    The Lightning step is fit()'s training loop (`_TrainingEpochLoop.advance`) minus the bare step run
    inside the recorder hook; what it spends beyond the bare step's own work (forward, backward,
    clipping, AdamW, LambdaLR, data) is Lightning's loop and what the project adds (logging, callbacks).
    """
    import cProfile
    import pstats

    cfg, data, shape, kwargs = setup(overrides, steps)
    tmp = Path(tempfile.mkdtemp(prefix="prof-", dir=BENCH_DATA))
    prof = cProfile.Profile()
    try:
        prof.enable()
        lockstep_window(cfg, data, kwargs, steps, tmp / "run")
        prof.disable()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = pstats.Stats(prof).stats
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.items():
        rows.append({"function": f"{Path(filename).name}:{line}({func})", "calls": nc, "tottime_s": tt,
                     "cumtime_s": ct, "file": filename, "callers": [f"{Path(c[0]).name}:{c[1]}({c[2]})" for c in callers]})
    return {"steps": steps, "rows": rows}
