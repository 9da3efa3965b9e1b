"""Helpers for tests that run real jobs: compose the shrunk config, name the folders, read what runs left."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import CONF_DIR, TINY

from transfer_lab.study import records


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=TINY + list(overrides))


def compose_analyze(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("analyze", overrides=list(overrides))


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
