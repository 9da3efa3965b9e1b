"""What analyze.py does with its config (kept here so the script stays thin and testable)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from transfer_lab.analysis import collect
from transfer_lab.analysis.config_checks import ANALYZE_ACTIONS as ACTIONS
from transfer_lab.errors import ConfigError

SOURCES = ("local", "wandb", "wandb_offline")


def _get(cfg, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return node


def gather(cfg) -> collect.Collection:
    source, loss = _get(cfg, "source", "local"), _get(cfg, "loss", "per_char")
    if source not in SOURCES:
        raise ConfigError(f"source={source!r} unknown; use one of {', '.join(SOURCES)}")
    if loss not in collect.LOSS_COLUMNS:
        raise ConfigError(f"loss={loss!r} unknown; use per_char or per_token")
    if source == "local":
        root = collect.output_root(_get(cfg, "paths.output_root"))
        return collect.collect_local(root, _get(cfg, "sweep"), loss=loss)
    from transfer_lab.analysis import wandb_io
    if source == "wandb":
        return wandb_io.collect_wandb(_get(cfg, "wandb.entity"), _get(cfg, "wandb.project"),
                                      _get(cfg, "wandb.group") or _get(cfg, "sweep"), loss=loss)
    return wandb_io.collect_wandb_offline(Path(_get(cfg, "wandb.offline_dir", "wandb")),
                                          _get(cfg, "wandb.group") or _get(cfg, "sweep"), loss=loss)


def report_dir_for(cfg, sweep: str) -> Path:
    configured = _get(cfg, "paths.report_dir")
    if configured:
        return Path(configured)
    return collect.sweep_dir(collect.output_root(_get(cfg, "paths.output_root")), sweep) / "report"


def run_cli(cfg) -> None:
    from transfer_lab.analysis.config_checks import validate_analyze_config
    from transfer_lab.analysis.sweep_analysis import run_analysis

    validate_analyze_config(cfg)
    action = _get(cfg, "action", "fit")
    if action not in ACTIONS:
        raise ConfigError(f"action={action!r} unknown; use one of {', '.join(ACTIONS)}")
    method = _get(cfg, "effective_data.method", "interp")
    if method not in ("interp", "kaplan"):
        raise ConfigError(f"effective_data.method={method!r} unknown; use interp or kaplan")
    n_boot = int(_get(cfg, "fit.n_bootstrap", 1000))
    if n_boot < 0:
        raise ConfigError(f"fit.n_bootstrap={n_boot} must be ≥ 0")
    if action == "atlas":
        from transfer_lab.analysis.atlas import run_atlas
        root = collect.output_root(_get(cfg, "paths.output_root"))
        sweep = _get(cfg, "sweep") or "atlas"
        out = Path(_get(cfg, "paths.report_dir") or collect.sweep_dir(root, sweep) / "atlas")
        path, pairs = run_atlas(root, sweep, out, _get(cfg, "atlas.reference_n"),
                                _get(cfg, "atlas.reference_finetune_chars"), n_boot, int(_get(cfg, "fit.seed", 0)),
                                float(_get(cfg, "fit.ci", 0.95)), float(_get(cfg, "checks.monotone_tolerance", 0.003)),
                                html=bool(_get(cfg, "html", True)))
        print(f"atlas {sweep}: {len(pairs)} ordered pairs → {path}")
        return
    if action == "mix":
        from transfer_lab.analysis.mixing import load_mix
        from transfer_lab.analysis.report_mix import recommendation, write_mix
        root = collect.output_root(_get(cfg, "paths.output_root"))
        sweep = _get(cfg, "sweep") or "mix_text_code_python"
        out = Path(_get(cfg, "paths.report_dir") or collect.sweep_dir(root, sweep) / "mix")
        seed, ci = int(_get(cfg, "fit.seed", 0)), float(_get(cfg, "fit.ci", 0.95))
        study = load_mix(root, sweep, n_boot, seed, ci, float(_get(cfg, "checks.monotone_tolerance", 0.003)),
                         _get(cfg, "mix.reference_n"), _get(cfg, "mix.reference_finetune_chars"))
        path = write_mix(study, out, " ".join(["python analyze.py", *sys.argv[1:]]),
                         {"n_bootstrap": n_boot, "seed": seed, "ci": ci})
        sentence, narrow = recommendation(study)
        print(sentence)
        if narrow:
            print(f"to narrow it: {narrow}")
        print(f"report → {path}; the runs that test it: {out / 'verify.sh'}")
        return
    if action == "compare":
        from transfer_lab.analysis.compare import run_compare
        root = collect.output_root(_get(cfg, "paths.output_root"))
        names = "_vs_".join(str(n) for n in (_get(cfg, "compare.sweeps") or []))
        out = Path(_get(cfg, "paths.report_dir") or root / "compare" / (names or "none"))
        path = run_compare(root, out, list(_get(cfg, "compare.sweeps") or []), _get(cfg, "compare.by"),
                           float(_get(cfg, "checks.monotone_tolerance") or 0.003))
        print(f"comparison → {path}")
        return
    coll = gather(cfg)
    out = report_dir_for(cfg, coll.sweep)
    if action == "collect":
        out.mkdir(parents=True, exist_ok=True)
        coll.table.to_csv(out / "table.csv", index=False)
        print(f"{len(coll.table)} runs ({len(coll.excluded)} excluded) → {out / 'table.csv'}")
        return
    kw = dict(n_bootstrap=n_boot, seed=int(_get(cfg, "fit.seed", 0)), ci=float(_get(cfg, "fit.ci", 0.95)),
              huber=_get(cfg, "fit.huber_delta"), method=method, low_data_fraction=_get(cfg, "effective_data.low_data_fraction"),
              loss=_get(cfg, "loss", "per_char"),
              monotone_tolerance=float(_get(cfg, "checks.monotone_tolerance", 0.003)))
    if action == "plan":
        from transfer_lab.analysis.plan import format_plan, plan_runs
        res = run_analysis(coll, **kw)
        print(format_plan(plan_runs(res, coll)))
        return
    if action == "predict":
        from transfer_lab.analysis.predict import format_prediction, predict
        n, d_f = _get(cfg, "predict.n"), _get(cfg, "predict.finetune_chars")
        if n is None or d_f is None:
            raise ConfigError("action=predict needs predict.n and predict.finetune_chars, "
                              "e.g. predict.n=1e6 predict.finetune_chars=1e6")
        res = run_analysis(coll, **kw)
        print(format_prediction(predict(res, float(n), float(d_f), _get(cfg, "predict.law", "transfer"))))
        return
    res = run_analysis(coll, make_plots=bool(_get(cfg, "plots", True)), report_dir=out,
                       html=bool(_get(cfg, "html", True)), command=" ".join(["python analyze.py", *sys.argv[1:]]),
                       pdf=bool(_get(cfg, "pdf", True)), **kw)
    print(f"sweep {res.sweep}: {len(res.table)} runs, {int(res.table['excluded'].sum())} excluded, "
          f"{sum(f.ok for f in res.fits.values())} of {len(res.fits)} global fits done "
          f"in {res.timings.get('total_s', 0):.1f} s → {out / 'report.md'}")
    for m in res.messages:
        print(f"  note: {m}")
    if _get(cfg, "wandb.enabled", False) or os.environ.get("WANDB_MODE"):
        from transfer_lab.analysis import wandb_io
        run_dir = wandb_io.log_analysis(res, out, _get(cfg, "wandb.project"), _get(cfg, "wandb.entity"),
                                        _get(cfg, "wandb.mode", "offline"))
        print(f"  logged to W&B as an analysis run ({run_dir})")
