"""analyze.py's config (conf/analyze.yaml), read and checked once into typed settings.

Every number in range and every name known before any run is read; a bad key is a one-line
ConfigError naming the fix. The defaults live in the yaml; this module only reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from transfer_lab.analysis.fit.result import FitSettings
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

ANALYZE_ACTIONS = ("fit", "plan", "compare", "atlas", "mix", "collect", "predict", "verify")  # analysis/actions.py
ANALYZE_SOURCES = ("local", "table", "wandb", "wandb_offline")
ANALYZE_LOSSES = ("per_char", "per_token")
ANALYZE_METHODS = ("interp", "kaplan")
PREDICT_LAWS = ("transfer", "unified")


@dataclass(frozen=True)
class AnalyzeSettings:
    action: str
    sweep: str | None
    source: str
    table: Path | None
    output_root: Path
    report_dir: Path | None
    fit: FitSettings
    plots: bool = True
    pdf: bool = True
    html: bool = True
    reference: dict = field(default_factory=dict)  # atlas.* / mix.* reference N and D_F (None: the default)
    compare_sweeps: tuple[str, ...] = ()
    compare_by: str | None = None
    predict_n: tuple[float, ...] = ()
    predict_finetune_chars: tuple[float, ...] = ()
    predict_scratch_chars: tuple[float, ...] = ()
    predict_law: str = "transfer"
    predict_save: Path | None = None
    verify_predictions: Path | None = None
    verify_plan: Path | None = None
    plan_budget_hours: float | None = None
    plan_workers: int = 2
    plan_save: Path | None = None
    wandb: dict = field(default_factory=dict)


def _numbers(cfg: DictConfig, key: str, example: str) -> tuple[float, ...]:
    """A positive number or a list of them (predict.n=3.4e5 or predict.n=[1e5,3.4e5]); () when null."""
    value = get(cfg, key)
    if value is None:
        return ()
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{key}={value!r} must be a positive number or a list of them; e.g. {example}")
    return tuple(float(v) for v in values)


def _plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _sweep(cfg: DictConfig) -> str | None:
    sweep = get(cfg, "sweep")
    if sweep is not None and not _plain_name(sweep):
        raise ConfigError(f"sweep={sweep!r} must be the name of a folder under <output_root>/sweeps; "
                          "e.g. sweep=demo, or sweep=null for the latest")
    return sweep


def _compare_sweeps(cfg: DictConfig) -> tuple[str, ...]:
    """Sweep names only: a path would read, and write the comparison, outside the output root."""
    sweeps = get(cfg, "compare.sweeps") or []
    if isinstance(sweeps, str):
        sweeps = [sweeps]
    bad = [str(s) for s in sweeps if not _plain_name(s)]
    if bad:
        raise ConfigError(f"compare.sweeps names {bad[0]!r}, not a folder under <output_root>/sweeps; name sweeps "
                          "(compare.sweeps=[demo_cosine,demo]) and point paths.output_root at another root instead")
    return tuple(str(s) for s in sweeps)


def _path(cfg: DictConfig, key: str) -> Path | None:
    value = get(cfg, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={value!r} must be a file path; e.g. {key}=docs/results/my_study/predictions.json")
    return Path(value)


def _fit_settings(cfg: DictConfig) -> FitSettings:
    choice(cfg, "loss", ANALYZE_LOSSES)
    choice(cfg, "effective_data.method", ANALYZE_METHODS)
    optional_float(cfg, "effective_data.low_data_fraction", 0.0, 1.0,
                   "effective_data.low_data_fraction=0.1 (or null: no cut)")
    optional_float(cfg, "fit.huber_delta", 0.0, math.inf, "fit.huber_delta=1e-3 (or null)")
    return FitSettings(
        n_bootstrap=as_int(cfg, "fit.n_bootstrap", minimum=0, example="fit.n_bootstrap=1000"),
        seed=as_int(cfg, "fit.seed", minimum=0, maximum=MAX_SEED, example="fit.seed=0"),
        ci=as_float(cfg, "fit.ci", 0.0, 0.999999, example="fit.ci=0.95"),
        huber=get(cfg, "fit.huber_delta"), method=get(cfg, "effective_data.method"),
        low_data_fraction=get(cfg, "effective_data.low_data_fraction"), loss=get(cfg, "loss"),
        monotone_tolerance=as_float(cfg, "checks.monotone_tolerance", 0.0, 1.0, low_inclusive=True,
                                    example="checks.monotone_tolerance=0.003"))


def _reference(cfg: DictConfig) -> dict:
    out = {}
    for study, default in (("atlas", "1e4"), ("mix", "7.7e4")):
        optional_float(cfg, f"{study}.reference_n", 0.0, math.inf, f"{study}.reference_n={default} (or null: the largest N)")
        optional_float(cfg, f"{study}.reference_finetune_chars", 0.0, math.inf,
                       f"{study}.reference_finetune_chars=1e4 (or null: the smallest D_F)")
        out[study] = (get(cfg, f"{study}.reference_n"), get(cfg, f"{study}.reference_finetune_chars"))
    return out


def read_settings(cfg: DictConfig) -> AnalyzeSettings:
    """analyze.py's keys, checked and typed; the first problem is a one-line ConfigError."""
    choice(cfg, "action", ANALYZE_ACTIONS)
    choice(cfg, "source", ANALYZE_SOURCES)
    choice(cfg, "predict.law", PREDICT_LAWS)
    for key in ("plots", "pdf", "html", "wandb.enabled"):
        flag(cfg, key)
    optional_float(cfg, "plan.budget_hours", 0.0, math.inf, "plan.budget_hours=6 (hours of this machine; > 0)")
    root = get(cfg, "paths.output_root")
    return AnalyzeSettings(
        action=get(cfg, "action"), sweep=_sweep(cfg), source=get(cfg, "source"), table=_path(cfg, "table"),
        output_root=Path(root or "outputs"), report_dir=_path(cfg, "paths.report_dir"), fit=_fit_settings(cfg),
        plots=get(cfg, "plots"), pdf=get(cfg, "pdf"), html=get(cfg, "html"), reference=_reference(cfg),
        compare_sweeps=_compare_sweeps(cfg), compare_by=get(cfg, "compare.by"),
        predict_n=_numbers(cfg, "predict.n", "predict.n=3.4e5"),
        predict_finetune_chars=_numbers(cfg, "predict.finetune_chars", "predict.finetune_chars=[1e4,1e5]"),
        predict_scratch_chars=_numbers(cfg, "predict.scratch_chars", "predict.scratch_chars=[1e5,1e6]"),
        predict_law=get(cfg, "predict.law"), predict_save=_path(cfg, "predict.save"),
        verify_predictions=_path(cfg, "verify.predictions"), verify_plan=_path(cfg, "verify.plan"),
        plan_budget_hours=get(cfg, "plan.budget_hours"), plan_save=_path(cfg, "plan.save"),
        plan_workers=as_int(cfg, "plan.workers", minimum=1, example="plan.workers=2"),
        wandb={k: get(cfg, f"wandb.{k}") for k in ("enabled", "mode", "entity", "project", "group", "offline_dir")})
