"""analyze.py's keys (conf/analyze.yaml): every number in range, every name known, before any run is read."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from transfer_lab.errors import ConfigError
from transfer_lab.study.validate import (
    MAX_SEED,
    as_float,
    as_int,
    choice,
    flag,
    get,
    optional_float,
)

ANALYZE_ACTIONS = ("fit", "plan", "compare", "atlas", "mix", "collect", "predict")  # analysis/actions.py
ANALYZE_SOURCES = ("local", "wandb", "wandb_offline")
ANALYZE_LOSSES = ("per_char", "per_token")
ANALYZE_METHODS = ("interp", "kaplan")
PREDICT_LAWS = ("transfer", "unified")


def validate_analyze_config(cfg: DictConfig) -> None:
    """analyze.py's keys (conf/analyze.yaml): every number in range, every name known, before any run is read."""
    choice(cfg, "action", ANALYZE_ACTIONS, "fit")
    choice(cfg, "source", ANALYZE_SOURCES, "local")
    choice(cfg, "loss", ANALYZE_LOSSES, "per_char")
    choice(cfg, "effective_data.method", ANALYZE_METHODS, "interp")
    choice(cfg, "predict.law", PREDICT_LAWS, "transfer")
    sweep = get(cfg, "sweep")
    if sweep is not None and (not isinstance(sweep, str) or not sweep or "/" in sweep or sweep.startswith(".")):
        raise ConfigError(f"sweep={sweep!r} must be the name of a folder under <output_root>/sweeps; "
                          "e.g. sweep=demo, or sweep=null for the latest")
    optional_float(cfg, "effective_data.low_data_fraction", 0.0, 1.0,
                    "effective_data.low_data_fraction=0.1 (or null: no cut)")
    if get(cfg, "fit.n_bootstrap") is not None:
        as_int(cfg, "fit.n_bootstrap", minimum=0, example="fit.n_bootstrap=1000")
    if get(cfg, "fit.seed") is not None:
        as_int(cfg, "fit.seed", minimum=0, maximum=MAX_SEED, example="fit.seed=0")
    if get(cfg, "fit.ci") is not None:
        as_float(cfg, "fit.ci", 0.0, 0.999999, example="fit.ci=0.95")
    optional_float(cfg, "fit.huber_delta", 0.0, math.inf, "fit.huber_delta=1e-3 (or null)")
    optional_float(cfg, "checks.monotone_tolerance", 0.0, 1.0, "checks.monotone_tolerance=0.003")
    optional_float(cfg, "atlas.reference_n", 0.0, math.inf, "atlas.reference_n=1e4 (or null: the largest N)")
    optional_float(cfg, "atlas.reference_finetune_chars", 0.0, math.inf,
                    "atlas.reference_finetune_chars=1e4 (or null: the smallest D_F)")
    optional_float(cfg, "mix.reference_n", 0.0, math.inf, "mix.reference_n=7.7e4 (or null: the largest N)")
    optional_float(cfg, "mix.reference_finetune_chars", 0.0, math.inf,
                    "mix.reference_finetune_chars=1e4 (or null: the smallest D_F)")
    optional_float(cfg, "predict.n", 0.0, math.inf, "predict.n=1e6")
    optional_float(cfg, "predict.finetune_chars", 0.0, math.inf, "predict.finetune_chars=1e6")
    for key in ("plots", "pdf", "html", "wandb.enabled"):
        flag(cfg, key)
