"""What analyze.py does with its config: read the settings once, then one function per action."""

from __future__ import annotations

import sys
from pathlib import Path

from transfer_lab.analysis import collect
from transfer_lab.analysis.settings import AnalyzeSettings, read_settings
from transfer_lab.errors import ConfigError


def command_line() -> str:
    return " ".join(["python analyze.py", *sys.argv[1:]])


def gather(s: AnalyzeSettings, sweep: str | None = None) -> collect.Collection:
    sweep = sweep or s.sweep
    if s.source == "table":
        if s.table is None:
            raise ConfigError("source=table needs table=PATH, e.g. table=docs/results/demo/table.csv")
        return collect.collect_table(s.table, loss=s.fit.loss)
    if s.source == "local":
        return collect.collect_local(collect.output_root(s.output_root), sweep, loss=s.fit.loss)
    from transfer_lab.analysis import wandb_io
    group = s.wandb["group"] or sweep
    if s.source == "wandb":
        return wandb_io.collect_wandb(s.wandb["entity"], s.wandb["project"], group, loss=s.fit.loss)
    return wandb_io.collect_wandb_offline(Path(s.wandb["offline_dir"] or "wandb"), group, loss=s.fit.loss)


def report_dir_for(s: AnalyzeSettings, sweep: str, leaf: str = "report") -> Path:
    if s.report_dir:
        return Path(s.report_dir)
    return collect.sweep_dir(collect.output_root(s.output_root), sweep) / leaf


def _analysed(s: AnalyzeSettings):
    from transfer_lab.analysis.studies.sweep_analysis import run_analysis
    coll = gather(s)
    return run_analysis(coll, s.fit), coll


def do_atlas(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report.atlas_report import write_atlas
    from transfer_lab.analysis.studies.atlas import load_atlas
    root = collect.output_root(s.output_root)
    sweep = s.sweep or "atlas"
    study = load_atlas(root, sweep, *s.reference["atlas"], s.fit.n_bootstrap, s.fit.seed, s.fit.ci,
                       s.fit.monotone_tolerance)
    path = write_atlas(study, report_dir_for(s, sweep, "atlas"), html=s.html)
    print(f"atlas {sweep}: {len(study.pairs)} ordered pairs → {path}")


def do_mix(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report.mix_report import recommendation, write_mix
    from transfer_lab.analysis.studies.mixing import load_mix
    root = collect.output_root(s.output_root)
    sweep = s.sweep or "mix_text_code_python"
    out = report_dir_for(s, sweep, "mix")
    f = s.fit
    study = load_mix(root, sweep, f.n_bootstrap, f.seed, f.ci, f.monotone_tolerance, *s.reference["mix"])
    path = write_mix(study, out, command_line(), {"n_bootstrap": f.n_bootstrap, "seed": f.seed, "ci": f.ci})
    sentence, narrow = recommendation(study)
    print(sentence)
    if narrow:
        print(f"to narrow it: {narrow}")
    print(f"report → {path}; the runs that test it: {out / 'verify.sh'}")


def do_compare(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report.compare_report import write_compare
    from transfer_lab.analysis.studies.compare import load_compare
    root = collect.output_root(s.output_root)
    out = s.report_dir or root / "compare" / ("_vs_".join(s.compare_sweeps) or "none")
    path = write_compare(load_compare(root, list(s.compare_sweeps), s.compare_by, s.fit.monotone_tolerance), Path(out))
    print(f"comparison → {path}")


def do_collect(s: AnalyzeSettings) -> None:
    coll = gather(s)
    out = report_dir_for(s, coll.sweep)
    out.mkdir(parents=True, exist_ok=True)
    coll.table.to_csv(out / "table.csv", index=False)
    print(f"{len(coll.table)} runs ({len(coll.excluded)} excluded) → {out / 'table.csv'}")


def do_plan(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.studies.plan import format_plan, plan_runs
    res, coll = _analysed(s)
    print(format_plan(plan_runs(res, coll)))
    if s.plan_budget_hours is None:
        return
    from transfer_lab.analysis.report import plan_report
    from transfer_lab.analysis.studies import preregister
    from transfer_lab.analysis.studies.priced_plan import priced_plan
    plan = priced_plan(res, coll.table, s.plan_budget_hours, s.fit, s.plan_workers)
    text = plan_report.format_plan(plan)
    print("\n" + text)
    if s.plan_save:
        keys = preregister.fitted_runs(coll.table)
        doc = plan_report.plan_document(plan, preregister.git_commit(), preregister.runs_hash(coll.table, keys), keys,
                                        command_line())
        print(f"plan → {plan_report.save_plan(s.plan_save, doc, text)}; once its runs are trained: "
              f"analyze.py action=verify verify.plan={s.plan_save}")


def do_predict(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.fit.predict import predict
    from transfer_lab.analysis.report import predictions
    from transfer_lab.analysis.studies import preregister
    if not s.predict_n or not (s.predict_finetune_chars or s.predict_scratch_chars):
        raise ConfigError("action=predict needs predict.n and predict.finetune_chars (one value or a list), "
                          "e.g. predict.n=1e6 predict.finetune_chars=1e6")
    res, _ = _analysed(s)
    if s.predict_save is None:
        for n in s.predict_n:
            for d_f in s.predict_finetune_chars:
                print(predictions.format_prediction(predict(res, n, d_f, s.predict_law)))
        return
    cells = preregister.predict_cells(res, list(s.predict_n), list(s.predict_finetune_chars),
                                      list(s.predict_scratch_chars))
    doc = preregister.predictions_document(res, cells, command_line())
    path = predictions.save(s.predict_save, doc)
    print(predictions.format_cells(doc))
    print(f"{len(cells)} predictions for sweep {res.sweep}, fitted on {len(doc['fitted_on']['runs'])} runs "
          f"(sha256 {doc['fitted_on']['sha256'][:12]}, commit {doc['commit'][:12]}) → {path}; "
          f"commit it before the runs train, then: analyze.py action=verify verify.predictions={path}")


def do_verify(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report import predictions
    from transfer_lab.analysis.studies import preregister
    from transfer_lab.analysis.studies.sweep_analysis import run_analysis
    if s.verify_plan is not None:
        return _verify_plan(s)
    if s.verify_predictions is None:
        raise ConfigError("action=verify needs verify.predictions=FILE (written by action=predict predict.save=FILE) "
                          "or verify.plan=FILE (written by action=plan plan.save=FILE)")
    doc = preregister.load(s.verify_predictions)
    coll = gather(s, doc["sweep"])
    preregister.check_hash(doc, coll.table, s.verify_predictions)
    res = run_analysis(coll, s.fit, n_bootstrap=0)  # measured D_T needs no bootstrap
    rows, cal = preregister.verify(doc, res.table, s.verify_predictions)
    out = s.report_dir or Path(s.verify_predictions).parent
    path = predictions.write_verification(Path(out), doc, s.verify_predictions, rows, cal, command_line())
    print(predictions.format_calibration(cal))
    print(f"{len(rows)} measured quantities → {path}")


def _verify_plan(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report import plan_report
    from transfer_lab.analysis.studies import preregister
    from transfer_lab.analysis.studies.priced_plan import widths
    doc = preregister.load(s.verify_plan, plan_report.FORMAT)
    table = gather(s, doc["sweep"]).table
    text = plan_report.format_check(doc, widths(table, s.fit), preregister.spent_hours(doc, table))
    out = plan_report.write_check(Path(s.report_dir or Path(s.verify_plan).parent), text, command_line(),
                                  Path(s.verify_plan).stem)
    print(text + f"\n→ {out}")


def do_fit(s: AnalyzeSettings) -> None:
    from transfer_lab.analysis.report.sweep_report import write_report
    res, coll = _analysed(s)
    out = report_dir_for(s, coll.sweep)
    write_report(res, out, make_plots=s.plots, html=s.html, pdf=s.pdf, command=command_line())
    print(f"sweep {res.sweep}: {len(res.table)} runs, {int(res.table['excluded'].sum())} excluded, "
          f"{sum(f.ok for f in res.fits.values())} of {len(res.fits)} global fits done "
          f"in {res.timings.get('total_s', 0):.1f} s → {out / 'report.md'}")
    for m in res.messages:
        print(f"  note: {m}")
    if s.wandb["enabled"]:
        from transfer_lab.analysis import wandb_io
        run_dir = wandb_io.log_analysis(res, out, s.wandb["project"], s.wandb["entity"], s.wandb["mode"] or "offline")
        print(f"  logged to W&B as an analysis run ({run_dir})")


ACTIONS = {"fit": do_fit, "plan": do_plan, "predict": do_predict, "verify": do_verify, "collect": do_collect,
           "compare": do_compare, "atlas": do_atlas, "mix": do_mix}


def run_cli(cfg) -> None:
    settings = read_settings(cfg)
    ACTIONS[settings.action](settings)
