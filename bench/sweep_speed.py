"""Figure 5: a whole sweep's wall time.

CPU: the real demo sweep (`train.py -m experiment=demo`: 3 sizes × (5 scratch D + 3 fine-tune D_F) +
3 pre-trainings). With --demo-sweep it is run here in a subprocess, outputs under
<outputs>/bench-data/demo-sweep (prepared corpora shared with <outputs>/data; the data stage
`python -m transfer_lab.prepare experiment=demo` runs first, untimed, as `make demo` runs `make data`
first; previous runs and pre-trainings are deleted, so nothing is skipped). Without it, the latest
finished demo sweep on disk is read instead (the bench's own, else <outputs>/sweeps/demo): the sum of
the run records' wall_time_s (pre-trainings included) and the span of the latest Hydra multirun
folder (its timestamped name → the last file written in it).

GPU: a grid of tiny scratch runs launched sequentially (Hydra's basic launcher) against the same grid
with several jobs sharing the GPU at once (hydra/launcher=joblib, n_jobs workers): wall time ratio.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH_DATA, ROOT, SMALL_DATA, outputs_root


def _env(output_root: Path) -> dict:
    env = dict(os.environ, TRANSFER_LAB_OUTPUTS=str(output_root), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("OMP_NUM_THREADS", None)
    return env


def _run(cmd: list[str], env: dict, log_path: Path, timeout: float | None = None) -> tuple[int, float]:
    started = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, time.perf_counter() - started


def read_sweep(sweep_dir: Path, pretrained_dir: Path) -> dict | None:
    """Wall time of the latest finished sweep from its records; None if there is none."""
    runs = []
    for path in sorted((sweep_dir / "runs").glob("*/results.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    done = [r for r in runs if r.get("status") == "done"]
    if not done:
        return None
    pre_keys = {r.get("pretrain_key") for r in done if r.get("regime") == "finetune" and r.get("pretrain_key")}
    pre = []
    for key in pre_keys:
        path = pretrained_dir / str(key) / "results.json"
        if path.exists():
            pre.append(json.loads(path.read_text()))
    out = {"sweep_dir": str(sweep_dir), "runs": len(runs), "done": len(done),
           "runs_wall_s": sum(r.get("wall_time_s", 0.0) for r in done),
           "pretrain_wall_s": sum(r.get("wall_time_s", 0.0) for r in pre), "pretrainings": len(pre)}
    out["records_wall_s"] = out["runs_wall_s"] + out["pretrain_wall_s"]
    hydra_dirs = sorted(p for p in (sweep_dir / "hydra").glob("*") if p.is_dir())
    if hydra_dirs:
        latest = hydra_dirs[-1]
        try:
            start = dt.datetime.strptime(latest.name, "%Y-%m-%d_%H-%M-%S").timestamp()
            end = max(p.stat().st_mtime for p in latest.rglob("*") if p.is_file())
            out.update(hydra_dir=str(latest), hydra_wall_s=end - start,
                       hydra_jobs=sum(1 for p in latest.iterdir() if p.is_dir() and p.name.isdigit()))
        except (ValueError, OSError):
            pass
    return out


def demo_sweep_on_disk() -> dict | None:
    for root in (BENCH_DATA / "demo-sweep", outputs_root()):
        found = read_sweep(root / "sweeps" / "demo", root / "pretrained")
        if found:
            found["source"] = "bench --demo-sweep" if root != outputs_root() else "outputs/sweeps/demo"
            return found
    return None


def run_demo_sweep(log=print) -> dict:
    root = BENCH_DATA / "demo-sweep"
    for stale in ("sweeps", "pretrained"):
        shutil.rmtree(root / stale, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    env = _env(root)
    data_dir = f"paths.data_dir={outputs_root() / 'data'}"
    log("    preparing the demo's data (untimed, as `make data`) ...")
    code, prep_s = _run([sys.executable, "-m", "transfer_lab.prepare", "experiment=demo", data_dir], env,
                        root / "prepare.log")
    if code != 0:
        return {"error": f"data preparation failed (exit {code}); see {root / 'prepare.log'}", "prepare_s": prep_s}
    log("    running `train.py -m experiment=demo` (10-20 min on 2 cores) ...")
    code, wall = _run([sys.executable, "train.py", "-m", "experiment=demo", data_dir], env, root / "sweep.log")
    found = read_sweep(root / "sweeps" / "demo", root / "pretrained") or {}
    found.update(exit_code=code, wall_s=wall, prepare_s=prep_s, log=str(root / "sweep.log"), source="measured now")
    return found


def gpu_grid(n_jobs: int, max_steps: int, log=print) -> dict:
    """The same grid of tiny scratch runs, sequential vs n_jobs joblib workers sharing the device."""
    root = BENCH_DATA / "fig5-gpu"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = _env(root)
    grid = ["experiment=demo", *SMALL_DATA, f"paths.data_dir={outputs_root() / 'data'}", "regime=scratch",
            "model.n_layer=1,2", "data.finetune_chars=1e4,3e4,1e5,3e5", f"optim.max_steps={max_steps}"]
    # prepare data once (untimed), so neither launch pays tokenisation
    _run([sys.executable, "-m", "transfer_lab.prepare", *grid[:3], "regime=scratch"], env, root / "prepare.log")
    out = {"runs": 8, "max_steps": max_steps, "n_jobs": n_jobs}
    for name, extra in (("sequential", []), ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"])):
        code, wall = _run([sys.executable, "train.py", "-m", *grid, f"sweep=grid-{name}", *extra], env,
                          root / f"{name}.log")
        done = read_sweep(root / "sweeps" / f"grid-{name}", root / "pretrained") or {}
        out[name] = {"wall_s": wall, "exit_code": code, "done": done.get("done", 0)}
        log(f"    {name}: {wall:.1f} s, {done.get('done', 0)} runs done (exit {code})")
    out["ratio"] = out["sequential"]["wall_s"] / out["joblib"]["wall_s"]
    return out
