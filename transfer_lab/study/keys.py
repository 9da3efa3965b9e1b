"""Stable run keys: a readable prefix plus a hash of exactly what defines the run's result.

Two jobs with the same key would train the same model on the same data, so the second one is
skipped (or resumed). Paths, loggers and launcher settings are not part of a key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

MODEL_KEYS = ("n_layer", "n_embd", "n_head", "n_ctx", "n_positions", "dropout", "pad_vocab_multiple")
# the optim settings a pre-training reads (its lr, warm-up, batch and patience are pretrain.*);
# the rest size target runs and must not invalidate a cached pre-trained model
PRETRAIN_OPTIM_KEYS = ("weight_decay", "betas", "min_lr_ratio", "gradient_clip", "val_every_n_steps", "min_rel_improvement")
# settings added after runs were recorded: at these values a run is the one recorded before the
# setting existed, so they stay out of its key (finished work keeps its key). A pre-training the
# old rule stopped before its budget is not that run: pretraining.py trains it again.
LATER_DEFAULTS = {"optim": {"anneal_window": "run"}, "pretrain": {"on_plateau": "continue"}}
NOT_DEFINING = {"pretrain": ("init_from", "max_epochs")}  # a path recorded apart, and a guard


@dataclass(frozen=True)
class RunIdentity:
    """Everything that defines a run's result, as plain values (conf groups as resolved dicts)."""

    regime: str
    model: dict[str, Any]  # the MODEL_KEYS of conf/model
    tokenizer: dict[str, Any]
    seed: int
    optim: dict[str, Any]
    finetune: dict[str, Any]
    pretrain: dict[str, Any]  # init_from included: a fine-tune from your own model is keyed by its path
    sources: dict[str, float]  # data.source as normalised {corpus: weight}
    target: str | None
    finetune_chars: int | None
    val_tokens: int
    stopping_val_tokens: int | None


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def compact_number(value: float) -> str:
    """1e5 -> '1e5', 30000 -> '3e4', 2.5e6 -> '2.5e6'."""
    mantissa, exponent = f"{float(value):.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def pretrain_identity(run: RunIdentity) -> dict:
    optim = {k: v for k, v in run.optim.items() if k in PRETRAIN_OPTIM_KEYS}
    pretrain = {k: v for k, v in _without_later_defaults("pretrain", run.pretrain).items()
                if k not in NOT_DEFINING["pretrain"]}
    return {"regime": "pretrain", "model": run.model, "tokenizer": run.tokenizer, "source": run.sources,
            "seed": run.seed, "optim": optim, "pretrain": pretrain, "val_tokens": run.val_tokens,
            "stopping_val_tokens": run.stopping_val_tokens}


def pretrain_key(run: RunIdentity) -> str:
    return f"pretrain-L{run.model['n_layer']}-d{run.model['n_embd']}-{_digest(pretrain_identity(run))}"


def _without_later_defaults(group: str, settings: dict) -> dict:
    later = LATER_DEFAULTS.get(group, {})
    return {k: v for k, v in settings.items() if k not in later or v != later[k]}


def _run_identity(run: RunIdentity) -> dict:
    identity = {"regime": run.regime, "model": run.model, "tokenizer": run.tokenizer, "seed": run.seed,
                "optim": _without_later_defaults("optim", run.optim), "target": run.target,
                "finetune_chars": run.finetune_chars, "val_tokens": run.val_tokens,
                "stopping_val_tokens": run.stopping_val_tokens}
    if run.regime == "finetune":
        identity["finetune"] = run.finetune
        init_from = run.pretrain.get("init_from")
        identity["pretrained"] = str(init_from) if init_from else pretrain_identity(run)
    return identity


def key_prefix(run: RunIdentity) -> str:
    """The readable part of a run key (regime, shape, data size): runs that could share a lineage."""
    return f"{run.regime}-L{run.model['n_layer']}-d{run.model['n_embd']}-df{compact_number(run.finetune_chars)}"


def run_key(run: RunIdentity) -> str:
    """Key of a job of any regime; a finetune's key includes the pre-trained model it starts from."""
    if run.regime == "pretrain":
        return pretrain_key(run)
    return f"{key_prefix(run)}-{_digest(_run_identity(run))}"


def run_lineage(run: RunIdentity) -> str:
    """The key without the step ceiling: under the plateau rule the ceiling changes where a run may
    stop, never its trajectory, so runs of one lineage are one run extended (a cosine's horizon is
    its ceiling: there the ceiling stays in)."""
    identity = _run_identity(run)
    if identity["optim"].get("schedule", "plateau") == "plateau":
        identity["optim"] = {k: v for k, v in identity["optim"].items() if k != "max_steps"}
    return f"{key_prefix(run)}-{_digest(identity)}"
