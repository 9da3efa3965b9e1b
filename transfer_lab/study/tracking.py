"""Weights & Biases for training runs: one W&B run per run key, grouped by sweep, tagged by regime."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^[0-9a-f]{40}$|^(local|wandb)-[0-9a-f]{40,}$")  # W&B API key shapes, a whole value
# known token formats, wherever they sit inside a value (a token reaches a config through any key:
# '+note=${oc.env:HF_TOKEN}'): Hugging Face, GitHub, OpenAI-style, AWS access key ids
# (a name such as hf_fineweb_german_subset is no token: the formats have long runs of letters and digits)
SECRET_INSIDE = re.compile(r"(?<![A-Za-z0-9_])(hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}"
                           r"|github_pat_[A-Za-z0-9_]{40,}|sk-(?:proj-)?[A-Za-z0-9_-]{32,}|AKIA[0-9A-Z]{16})")


def scrub(node: Any) -> Any:
    """Drop values whose key or shape says 'secret' before a config is saved or logged."""
    if isinstance(node, dict):
        return {k: "<redacted>" if isinstance(v, str) and SECRET_KEY.search(str(k)) else scrub(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [scrub(v) for v in node]
    if isinstance(node, str) and SECRET_VALUE.match(node.strip()):
        return "<redacted>"
    if isinstance(node, str):
        return SECRET_INSIDE.sub("<redacted>", node)
    return node


@dataclass(frozen=True)
class TrackingSpec:
    """conf/logger: where a run's curves go besides its own folder."""

    enabled: bool = False
    project: str | None = None
    entity: str | None = None
    group: str | None = None  # the sweep
    mode: str | None = None  # None: follow WANDB_MODE; or online / offline / disabled
    save_dir: Path | None = None


def make_logger(spec: TrackingSpec, run_key: str, config: dict[str, Any], tags: list[str], job_type: str):
    """A WandbLogger for this run (its W&B config: the run's scrubbed config), or None when disabled."""
    if not spec.enabled:
        return None
    from pytorch_lightning.loggers import WandbLogger

    save_dir = str(spec.save_dir or "wandb")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=spec.project, entity=spec.entity, group=spec.group, name=run_key, id=run_key, resume="allow",
        tags=tags, job_type=job_type, save_dir=save_dir, config=scrub(config),
        mode=spec.mode or os.environ.get("WANDB_MODE"))


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
