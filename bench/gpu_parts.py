"""The three parts of `make gpu-check` (bench/gpu_check.py), each a measurement on the real code path.

mfu       the project's training path (transfer_lab.training.fit.fit: Lightning, callbacks,
          checkpoints) on the configured shape, tokens/s over the steps after warm-up, as model FLOPs
          utilisation against the data sheet's peak and against a matmul measured on the device
packing   k tiny scratch runs launched one at a time (hydra/launcher=basic) against k at once on one
          device (hydra/launcher=per_device jobs_per_device=k): aggregate training tokens/s of each
grid      a 3-size text -> Python study (conf/experiment/gpu_check.yaml) packed on the device, then
          analyze.py on it

Runs go under a work folder, each launch in its own output root (a second launch would otherwise
reuse the first one's runs); the packing's corpora are prepared before it is timed (as `make data`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT

LAUNCH_GRACE_S = 60  # after the time cap's SIGTERM: runs stop at a step with their checkpoint


def spec_peak(device_name: str, table: list) -> float | None:
    """The data sheet's dense bf16 TFLOP/s of the first table entry whose name the device's contains."""
    return next((float(tflops) for name, tflops in table if str(name) in device_name), None)


def matmul_tflops(n: int, repeats: int) -> dict:
    """Achievable TFLOP/s of an n x n bf16 matmul on the training device (the MFU's measured ceiling)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = time.perf_counter() - started
    return {"n": n, "repeats": repeats, "dtype": "bfloat16", "tflops": 2 * n**3 * repeats / seconds / 1e12}


def mfu(settings, matmul: dict, peak: float | None, log=print) -> dict:
    """Tokens/s of fit() over `steps` steps after `warm`, as a fraction of the peaks."""
    import tempfile

    import torch
    import train_speed
    from common import BENCH_DATA

    from transfer_lab.training.model import build_gpt2, count_params, flops_per_token

    warm, steps = int(settings.warm), int(settings.steps)
    overrides = list(settings.overrides)
    cfg, data, shape, kwargs = train_speed.setup(overrides, warm + steps)
    log(f"  mfu: {' '.join(overrides)}: {warm} + {steps} steps (compile {'on' if kwargs['compile'] else 'off'})")
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-check-mfu-", dir=BENCH_DATA))
    try:
        window = train_speed.lightning_window(cfg, data, kwargs, warm + steps, run_dir / "run")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    ends = window["step_ends"]
    tokens_per_step = int(cfg.optim.batch_size) * int(cfg.model.n_ctx)
    tokens_per_s = (len(ends) - warm) * tokens_per_step / (ends[-1] - ends[warm - 1])
    with torch.device("meta"):
        n, total = count_params(build_gpt2(shape, cfg.model.attn_implementation))
    per_token = flops_per_token(n, shape.n_layer, int(cfg.model.n_ctx), shape.n_embd)
    head = 6.0 * shape.vocab_size * shape.n_embd  # the tied LM head's matmul: outside 6N, real work all the same
    achieved = per_token * tokens_per_s / 1e12
    return {"overrides": overrides, "non_embedding_params": n, "total_params": total, "n_ctx": int(cfg.model.n_ctx),
            "tokens_per_step": tokens_per_step, "warm_steps": warm, "timed_steps": len(ends) - warm,
            "precision": str(cfg.trainer.precision), "compile_requested": bool(cfg.model.compile),
            "compiled": bool(kwargs["compile"]), "tokens_per_s": tokens_per_s, "flops_per_token": per_token,
            "model_tflops": achieved, "mfu_vs_spec": None if peak is None else achieved / peak,
            "mfu_vs_matmul": achieved / matmul["tflops"],
            "mfu_with_head_vs_matmul": (per_token + head) * tokens_per_s / 1e12 / matmul["tflops"],
            "first_loss": window["losses"][0] if window["losses"] else None}


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TRANSFER_LAB_OUTPUTS", None)  # every path is given on the command line
    env.pop("WANDB_MODE", None)  # set, it makes analyze.py log an analysis run into the report folder
    return env


def launch(args: list[str], log_path: Path, timeout_s: float) -> dict:
    """`python <args>` from the repository root; at the time cap, SIGTERM (runs stop at a step,
    recorded interrupted) and then, after a grace, SIGKILL. Never a figure from a launch that hung."""
    started = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=LAUNCH_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"exit_code": proc.returncode, "wall_s": time.perf_counter() - started, "timed_out": timed_out,
            "log": str(log_path)}


def _paths(root: Path, data_dir: Path, cache_dir: Path) -> list[str]:
    return [f"paths.output_root={root}", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]


def prepare(overrides: list[str], work: Path, data_dir: Path, log_name: str) -> dict:
    """Corpora, tokenizer and token files of a launch, before it is timed (sweeps stay out: one config)."""
    fixed = [o for o in overrides if "," not in o.partition("=")[2] and not o.startswith("hydra")]
    return launch(["-m", "transfer_lab.prepare", *fixed, *_paths(work / "prepare", data_dir, work / "cache")],
                  work / log_name, timeout_s=600)


def runs_of(root: Path, sweep: str) -> list[dict]:
    """Every run record of a launch, as plain dicts (status, regime, N, D, loss, tokens, wall time)."""
    from transfer_lab.study import records

    out = []
    for path in sorted((root / "sweeps" / sweep / "runs").glob(f"*/{records.RESULTS_FILE}")):
        r = records.read_result(path.parent)
        out.append({"run_key": r.run_key, "status": r.status, "regime": r.regime, "n": r.non_embedding_params,
                    "chars": r.finetune_chars, "bits_per_char": r.best_val_bits_per_char, "steps": r.steps,
                    "tokens": r.tokens_seen, "wall_s": r.wall_time_s, "converged": r.converged})
    return out


def jobs_of(root: Path, sweep: str) -> list[dict]:
    """The job files of a launch (each job's device, worker, start and end)."""
    return [json.loads(p.read_text()) for p in sorted((root / "sweeps" / sweep / "hydra").glob("*/*/job.json"))]


def packing(settings, work: Path, data_dir: Path, device_args: list[str], log=print) -> dict:
    """The same k runs one at a time, then k at once on one device: aggregate tokens/s of each."""
    chars = ",".join(str(c) for c in settings.chars)
    k = len(settings.chars)
    grid = [*settings.overrides, "regime=scratch", f"data.finetune_chars={chars}"]
    prep = prepare(grid, work, data_dir, "packing-prepare.log")
    out = {"k": k, "overrides": grid, "prepare_exit_code": prep["exit_code"]}
    modes = (("one_at_a_time", ["hydra/launcher=basic"]),
             ("packed", ["hydra/launcher=per_device", *device_args, f"hydra.launcher.jobs_per_device={k}"]))
    for name, launcher in modes:
        root = work / f"packing-{name}"
        shutil.rmtree(root, ignore_errors=True)
        log(f"  packing: {k} runs {name.replace('_', ' ')} ...")
        args = ["train.py", "-m", *grid, *launcher, f"sweep=pack_{name}", *_paths(root, data_dir, work / "cache")]
        run = launch(args, work / f"packing-{name}.log", float(settings.timeout_s))
        runs = runs_of(root, f"pack_{name}")
        tokens = sum(r["tokens"] or 0 for r in runs if r["status"] == "done")
        out[name] = {**run, "done": sum(r["status"] == "done" for r in runs), "tokens": tokens,
                     "tokens_per_s": tokens / run["wall_s"], "jobs": jobs_of(root, f"pack_{name}")}
    complete = all(out[m]["done"] == k and not out[m]["timed_out"] for m, _ in modes)
    out["throughput_gain"] = out["packed"]["tokens_per_s"] / out["one_at_a_time"]["tokens_per_s"] if complete else None
    return out


def grid(settings, work: Path, data_dir: Path, report_dir: Path, device_args: list[str], log=print) -> dict:
    """The 3-size study packed on the device, then its analysis (report under report_dir/grid)."""
    root = work / "grid"
    shutil.rmtree(root, ignore_errors=True)
    overrides = list(settings.overrides)  # its wall time includes preparing its corpora, as a study's would
    log(f"  grid: {' '.join(overrides)}, {settings.jobs_per_device} jobs per device ...")
    run = launch(["train.py", "-m", *overrides, "hydra/launcher=per_device", *device_args,
                  f"hydra.launcher.jobs_per_device={settings.jobs_per_device}", "sweep=gpu_check",
                  *_paths(root, data_dir, work / "cache")], work / "grid.log", float(settings.timeout_s))
    runs = runs_of(root, "gpu_check")
    analysis = launch(["analyze.py", "sweep=gpu_check", f"paths.output_root={root}",
                       f"paths.report_dir={report_dir / 'grid'}", "html=false", "pdf=false"],
                      work / "grid-analysis.log", timeout_s=300)
    lines = Path(analysis["log"]).read_text(errors="replace").strip().splitlines()
    summary = next((line for line in lines if line.startswith(("sweep gpu_check:", "error:"))), lines[-1:] or [""])
    return {**run, "overrides": overrides, "runs": runs,
            "done": sum(r["status"] == "done" for r in runs), "jobs": jobs_of(root, "gpu_check"),
            "analysis": {**analysis, "summary": summary, "report": str(report_dir / "grid" / "report.md")}}
