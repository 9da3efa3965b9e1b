"""Weights & Biases for training runs: one W&B run per run key, grouped by sweep, tagged by regime."""

from __future__ import annotations

import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^[0-9a-f]{40}$|^(local|wandb)-[0-9a-f]{40,}$")  # W&B API key shapes


def scrub(node: Any) -> Any:
    """Drop values whose key or shape says 'secret' before a config is saved or logged."""
    if isinstance(node, dict):
        return {k: "<redacted>" if isinstance(v, str) and SECRET_KEY.search(str(k)) else scrub(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [scrub(v) for v in node]
    if isinstance(node, str) and SECRET_VALUE.match(node):
        return "<redacted>"
    return node


def make_logger(cfg: DictConfig, run_key: str, run_dir, summary: dict[str, Any]):
    """A WandbLogger for this run, or None when logger.enabled is false."""
    if not cfg.logger.get("enabled"):
        return None
    from pytorch_lightning.loggers import WandbLogger

    settings = cfg.logger
    save_dir = str(settings.save_dir)
    os.makedirs(save_dir, exist_ok=True)
    config = scrub(OmegaConf.to_container(cfg, resolve=True))
    config.update(summary)
    return WandbLogger(
        project=settings.project, entity=settings.entity, group=settings.group, name=run_key, id=run_key,
        resume="allow", tags=[cfg.regime, str(cfg.data.target) if cfg.regime != "pretrain" else "source"],
        job_type=cfg.regime, save_dir=save_dir, config=config, mode=settings.mode or os.environ.get("WANDB_MODE"))


def finish(logger, result: dict[str, Any]) -> None:
    """Put the run record into the W&B summary and close the run (every job, even a failed one).

    The whole record sits under summary["results"] (what analyze.py source=wandb reads back);
    its scalars are also top-level summary keys, for dashboards.
    """
    if logger is None:
        return
    import wandb

    run = logger.experiment
    run.summary["results"] = scrub({k: v for k, v in result.items() if k != "config"})
    for key, value in result.items():
        if isinstance(value, (int, float, str)) and key != "config":
            run.summary[key] = value
    wandb.finish(exit_code=0 if result.get("status") == "done" else 1)
