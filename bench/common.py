"""Shared set-up for the benchmark: environment, the real Hydra config composed in-process, data, timers.

The config is composed exactly as tests/conftest.py does (conf/train.yaml + overrides), pointed at
the small real corpora (fortunes_en → python_small) with the demo's model and optimiser settings.
Prepared corpora are read from the project's data folder (<outputs>/data, shared with `make data`);
tokenizers, token files and every run the benchmark trains go under <outputs>/bench-data.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never a hub lookup from the benchmark
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # batched encoding on all cores (figure 3)

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
RESULTS_DIR = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def outputs_root() -> Path:
    return (ROOT / os.environ.get("TRANSFER_LAB_OUTPUTS", "outputs")).resolve()


BENCH_DATA = outputs_root() / "bench-data"

# The small real corpora, the demo's model (tiny: n_embd 64, n_head 2, n_ctx 128), tokenizer (BPE 512)
# and optimiser (batch 16, AdamW, warm-up + cosine, clip 1.0) as conf/ ships them.
SMALL_DATA = ["data.source=fortunes_en", "data.target=python_small"]


def quiet_lightning() -> None:
    import pytorch_lightning  # noqa: F401  (its import sets its loggers to INFO: lower them after)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning", "transfer_lab"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*num_workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")


def compose(*overrides: str, sweep: str = "bench", output_root: Path | None = None):
    """conf/train.yaml as train.py composes it, plus overrides (later ones win)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    root = Path(output_root or BENCH_DATA)
    paths = [f"paths.output_root={root}", f"paths.data_dir={outputs_root() / 'data'}",
             f"paths.cache_dir={BENCH_DATA / 'cache'}", f"sweep={sweep}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=SMALL_DATA + paths + list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def run_data(cfg, need_source: bool = False):
    """Prepared corpora → tokenizer → token files (each built once, then only mapped)."""
    from transfer_lab.data.run_data import load_run_data
    from transfer_lab.study.job_settings import read_settings

    return load_run_data(read_settings(cfg).data, need_source=need_source, need_target=True, log=lambda *a: None)


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values) -> tuple[float, float]:
    return (float(min(values)), float(max(values))) if values else (float("nan"), float("nan"))


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def machine_info() -> dict:
    import torch

    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.is_available(), "device": "cpu"}
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import pytorch_lightning as pl
        import transformers
        info["lightning"], info["transformers"] = pl.__version__, transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    else:
        for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
            if line.startswith("model name"):
                info["device"] = "cpu: " + line.split(":", 1)[1].strip()
                break
    return info


def git_commit() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    # rev-parse only: read-only (git status could rewrite the index while others work in the tree)
    return {"commit": git("rev-parse", "HEAD") or None}
