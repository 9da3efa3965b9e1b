"""Stable run keys: a readable prefix plus a hash of exactly what defines the run's result.

Two jobs with the same key would train the same model on the same data, so the second one is
skipped (or resumed). Paths, loggers and launcher settings are not part of a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

MODEL_KEYS = ("n_layer", "n_embd", "n_head", "n_ctx", "n_positions", "dropout", "pad_vocab_multiple")
# the optim settings a pre-training reads (its lr, warm-up, batch and patience are pretrain.*);
# the rest size target runs and must not invalidate a cached pre-trained model
PRETRAIN_OPTIM_KEYS = ("weight_decay", "betas", "min_lr_ratio", "gradient_clip", "val_every_n_steps", "min_rel_improvement")
# settings added after runs were recorded: at these values a run is the one recorded before the
# setting existed, so they stay out of its key (finished work keeps its key)
LATER_DEFAULTS = {"optim": {"anneal_window": "run"}}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def compact_number(value: float) -> str:
    """1e5 -> '1e5', 30000 -> '3e4', 2.5e6 -> '2.5e6'."""
    mantissa, exponent = f"{float(value):.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def pretrain_identity(cfg: DictConfig, source_weights: dict[str, float]) -> dict:
    optim = {k: v for k, v in _plain(cfg.optim).items() if k in PRETRAIN_OPTIM_KEYS}
    pretrain = {k: v for k, v in _plain(cfg.pretrain).items() if k != "init_from"}
    return {"regime": "pretrain", "model": {k: cfg.model[k] for k in MODEL_KEYS}, "tokenizer": _plain(cfg.tokenizer),
            "source": source_weights, "seed": cfg.seed, "optim": optim, "pretrain": pretrain,
            "val_tokens": cfg.data.val_tokens, "stopping_val_tokens": cfg.data.stopping_val_tokens}


def pretrain_key(cfg: DictConfig, source_weights: dict[str, float]) -> str:
    identity = pretrain_identity(cfg, source_weights)
    return f"pretrain-L{cfg.model.n_layer}-d{cfg.model.n_embd}-{_digest(identity)}"


def _without_later_defaults(group: str, settings: dict) -> dict:
    later = LATER_DEFAULTS.get(group, {})
    return {k: v for k, v in settings.items() if k not in later or v != later[k]}


def _run_identity(cfg: DictConfig, source_weights: dict[str, float]) -> dict:
    identity = {"regime": cfg.regime, "model": {k: cfg.model[k] for k in MODEL_KEYS},
                "tokenizer": _plain(cfg.tokenizer), "seed": cfg.seed,
                "optim": _without_later_defaults("optim", _plain(cfg.optim)),
                "target": cfg.data.target, "finetune_chars": int(float(cfg.data.finetune_chars)),
                "val_tokens": cfg.data.val_tokens, "stopping_val_tokens": cfg.data.stopping_val_tokens}
    if cfg.regime == "finetune":
        identity["finetune"] = _plain(cfg.finetune)
        init_from = cfg.pretrain.get("init_from")
        identity["pretrained"] = str(init_from) if init_from else pretrain_identity(cfg, source_weights)
    return identity


def key_prefix(cfg: DictConfig) -> str:
    """The readable part of a run key (regime, shape, data size): runs that could share a lineage."""
    return f"{cfg.regime}-L{cfg.model.n_layer}-d{cfg.model.n_embd}-df{compact_number(int(float(cfg.data.finetune_chars)))}"


def run_key(cfg: DictConfig, source_weights: dict[str, float]) -> str:
    """Key of a job of any regime; a finetune's key includes the pre-trained model it starts from."""
    if cfg.regime == "pretrain":
        return pretrain_key(cfg, source_weights)
    return f"{key_prefix(cfg)}-{_digest(_run_identity(cfg, source_weights))}"


def run_lineage(cfg: DictConfig, source_weights: dict[str, float]) -> str:
    """The key without the step ceiling: under the plateau rule the ceiling changes where a run may
    stop, never its trajectory, so runs of one lineage are one run extended (a cosine's horizon is
    its ceiling: there the ceiling stays in)."""
    identity = _run_identity(cfg, source_weights)
    if identity["optim"].get("schedule", "plateau") == "plateau":
        identity["optim"] = {k: v for k, v in identity["optim"].items() if k != "max_steps"}
    return f"{key_prefix(cfg)}-{_digest(identity)}"

