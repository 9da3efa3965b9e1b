"""Helpers for tests that run real jobs: the train.py command at test size, the folders, what runs left."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import at_test_size

from transfer_lab.study import records


def train_command(*args: str) -> list[str]:
    """`python train.py ARGS` at test size (conftest.at_test_size), flags (-m) ahead of the overrides
    as argparse wants them. Run it with cwd=ROOT."""
    flags = [a for a in args if a.startswith("-")]
    return [sys.executable, "train.py", *flags, *at_test_size(a for a in args if not a.startswith("-"))]


def paths(root: Path, data_dir: Path, cache_dir: Path, pretrained_dir: Path | None = None) -> list[str]:
    out = [f"paths.output_root={root}", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
    return out + ([f"paths.pretrained_dir={pretrained_dir}"] if pretrained_dir else [])


def run_folders(root: Path, sweep: str) -> dict[str, Path]:
    folder = root / "sweeps" / sweep / "runs"
    return {p.name: p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")} if folder.is_dir() else {}


def temp_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def val_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in records.read_metrics(run_dir) if r["split"] == "val"]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", **extra}
    env.pop("TRANSFER_LAB_OUTPUTS", None)
    return env
