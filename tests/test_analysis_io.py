"""Collection, robustness messages, the CLI end to end, and W&B (fake Api, real offline run)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import analysis_synth as syn
import numpy as np
import pytest

from transfer_lab.analysis import collect_local, records_to_table, run_analysis
from transfer_lab.analysis.collect import latest_sweep
from transfer_lab.analysis.report.sweep_report import write_report
from transfer_lab.errors import ResultsError

ROOT = Path(__file__).resolve().parents[1]


def _analyse(tmp_path, runs, plots=False):
    res = run_analysis(records_to_table(runs, "synth"), n_bootstrap=20)
    write_report(res, tmp_path / "rep", make_plots=plots)
    return res, (tmp_path / "rep" / "report.md").read_text()


def test_mixed_tokenizers_and_duplicate_keys_are_refused(tmp_path):
    runs = syn.make_runs(ns=(1e6, 1e7), extras=False)
    runs[3] = dataclasses.replace(runs[3], tokenizer="bpe-other")
    with pytest.raises(ResultsError, match="tokenizers"):
        records_to_table(runs, "synth")
    runs = syn.make_runs(ns=(1e6, 1e7), extras=False)
    runs[4] = dataclasses.replace(runs[4], val_set="val-other")
    with pytest.raises(ResultsError, match="validation sets"):
        records_to_table(runs, "synth")
    runs = syn.make_runs(ns=(1e6,), extras=False)
    runs.append(dataclasses.replace(runs[0], best_val_loss=runs[0].best_val_loss * 1.01))
    with pytest.raises(ResultsError, match="duplicate run keys"):
        records_to_table(runs, "synth")
    # the same run in two folders (reused under another ceiling's key) is one run, not an error
    from transfer_lab.study import records
    for i, r in enumerate(runs[:-1] + [runs[0]]):
        folder = tmp_path / "sweeps" / "synth" / "runs" / f"{r.run_key}-{i}"
        folder.mkdir(parents=True)
        records.write_result(folder, r)
    assert len(collect_local(tmp_path, "synth").table) == len(runs) - 1


def test_corrupt_results_file_is_one_line_naming_it(tmp_path):
    sweep = syn.make_sweep(tmp_path, ns=(1e6,))
    bad = sweep / "runs" / "broken"
    bad.mkdir()
    (bad / "results.json").write_text('{"run_key": "broken", "sweep": ')
    with pytest.raises(ResultsError) as err:
        collect_local(tmp_path)
    assert str(bad / "results.json") in str(err.value) and "\n" not in str(err.value)


def test_failed_unfinished_and_nan_runs_are_listed_not_dropped(tmp_path):
    runs = syn.make_runs(ns=(1e6, 1e7))
    runs.append(syn.result("synth", "ft-nan", "finetune", 1e6, 5e4, float("nan")))
    sweep = syn.write_runs(tmp_path, "synth", runs)
    (sweep / "runs" / "still-running").mkdir()
    res = run_analysis(collect_local(tmp_path), n_bootstrap=20)
    write_report(res, tmp_path / "rep", make_plots=False)
    text = (tmp_path / "rep" / "report.md").read_text()
    reasons = res.table.set_index("run_key")["reason"]
    assert "CUDA out of memory" in reasons["ft-failed"]
    assert "NaN" in reasons["ft-nan"]
    assert "no results.json" in reasons["still-running"]
    for key in ("ft-failed", "ft-nan", "still-running"):
        assert key in text
    assert res.fits["transfer"].ok


def test_single_n_too_few_points_and_missing_curve_give_messages(tmp_path):
    res, text = _analyse(tmp_path, syn.make_runs(ns=(1e6,), extras=False), plots=True)
    assert "distinct N" in text and res.fits["transfer"].status == "not fitted"
    assert (tmp_path / "rep" / "plots" / "loss_vs_data.png").exists()
    few = syn.make_runs(ns=(1e6, 1e7), scratch_ds=(1e5, 1e7), finetune_ds=(1e4,), extras=False)
    res, text = _analyse(tmp_path, few)
    assert "usable points" in text and not res.fits["kaplan"].ok
    runs = [r for r in syn.make_runs(ns=(1e5, 1e6, 1e7), extras=False)
            if not (r.regime == "scratch" and r.non_embedding_params == int(1e7))]
    res, text = _analyse(tmp_path, runs)
    assert "no usable from-scratch curve" in text and "1e+07" in text
    flags = res.table[(res.table.regime == "finetune") & (res.table.N == 1e7)]["flags"]
    assert flags.str.contains("no_scratch_curve").all()


def test_all_ossified_gives_a_message(tmp_path):
    runs = syn.make_runs(ns=(1e6, 1e7), extras=False)
    runs = [dataclasses.replace(r, best_val_loss_per_char=float(syn.scratch_loss(r.non_embedding_params, r.finetune_chars)) * 1.05)
            if r.regime == "finetune" else r for r in runs]
    res, text = _analyse(tmp_path, runs, plots=True)
    assert "ossification" in text
    assert res.table[res.table.regime == "finetune"]["flags"].str.contains("ossified").all()
    assert not res.fits["transfer"].ok


def test_no_runs_at_all_is_an_error(tmp_path):
    with pytest.raises(ResultsError, match="no runs at all"):
        collect_local(tmp_path)
    (tmp_path / "sweeps" / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(ResultsError, match="no runs at all"):
        collect_local(tmp_path, "empty")


def test_latest_sweep_is_the_most_recently_written(tmp_path):
    syn.make_sweep(tmp_path, sweep="old", ns=(1e6,))
    new = syn.make_sweep(tmp_path, sweep="new", ns=(1e6,))
    os.utime(next(new.glob("runs/*/results.json")), (2e9, 2e9))
    assert latest_sweep(tmp_path) == "new"


@pytest.mark.subprocess
def test_analyze_cli_end_to_end(tmp_path):
    syn.make_sweep(tmp_path, sweep="demo", noise=0.002, ns=(1e5, 1e6, 1e7))
    env = {**os.environ, "TRANSFER_LAB_OUTPUTS": str(tmp_path), "MPLBACKEND": "Agg"}
    env.pop("WANDB_MODE", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "analyze.py"), "fit.n_bootstrap=50"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = tmp_path / "sweeps" / "demo" / "report"
    text = (report / "report.md").read_text()
    answer, laws = text.split("## What pre-training was worth, measured")[1].split("## How it was measured")[0], \
        text.split("## The laws")[1].split("## Measurement checks")[0]
    assert text.index("## What pre-training was worth") < text.index("## The laws")  # the measured answer first
    assert "characters trained from scratch" in answer and "| N \\ D_F |" in answer and "](plots/dt_vs_df.png)" in answer
    headline = laws
    assert "interpolated" in headline and "model-based (unified law" in headline and "1.9e+04" in headline
    assert "## Measurement checks" in text and "Converged early-stopping points" in text
    for name in ("loss_vs_data", "dt_vs_df", "multiplier", "loss_vs_compute", "predicted_vs_observed"):
        assert (report / "plots" / f"{name}.png").exists() and (report / "plots" / f"{name}.pdf").exists()
    assert (report / "report.html").exists() and (report / "table.csv").exists()
    assert list(cwd.iterdir()) == []  # Hydra wrote nothing into the working directory
    empty = subprocess.run([sys.executable, str(ROOT / "analyze.py"), f"paths.output_root={tmp_path / 'none'}"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2
    assert empty.stderr.strip().count("\n") == 0 and "no runs at all" in empty.stderr


class _FakeRun:
    def __init__(self, r, state="finished"):
        self.summary = {"results": dataclasses.asdict(r)} if r.regime == "scratch" else {
            f"results/{k}": v for k, v in dataclasses.asdict(r).items() if k != "config"}
        self.config, self.name, self.id, self.group, self.state = {"regime": r.regime}, r.run_key, r.run_key, "g", state


def test_collect_from_wandb_api_with_a_fake_api():
    from transfer_lab.analysis.wandb_io import collect_wandb
    runs = syn.make_runs(ns=(1e6, 1e7), extras=False)
    calls = []

    class Api:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return [_FakeRun(r) for r in runs] + [_FakeRun(runs[0], "crashed")]

    with pytest.raises(ResultsError, match="duplicate"):
        collect_wandb("me", "proj", "g", api=Api())
    runs[0] = dataclasses.replace(runs[0], status="running")
    runs.append(dataclasses.replace(runs[0], run_key="crashed"))
    fake = [_FakeRun(r) for r in runs]
    fake[-1].state = "crashed"

    class Api2:
        def runs(self, path, filters=None):
            return fake

    coll = collect_wandb("me", "proj", "g", api=Api2())
    assert calls[0] == ("me/proj", {"group": "g"})
    assert len(coll.table) == len(runs)
    assert coll.table.set_index("run_key").loc["crashed", "status"] == "failed"
    assert np.isclose(coll.table.loc[coll.table.run_key == runs[5].run_key, "loss"].iloc[0], runs[5].best_val_loss_per_char)


@pytest.mark.subprocess
def test_collect_a_real_offline_wandb_run(tmp_path):
    wandb = pytest.importorskip("wandb")
    from transfer_lab.analysis.wandb_io import collect_wandb_offline
    r = syn.make_runs(ns=(1e6,), extras=False)[0]
    os.environ.pop("WANDB_MODE", None)
    run = wandb.init(mode="offline", dir=str(tmp_path), project="transfer_lab", group="demo",
                     config={"regime": r.regime, "run_key": r.run_key, "sweep": "demo"}, settings=wandb.Settings(silent=True))
    for step, loss in enumerate([3.0, 2.5, 2.7]):
        run.log({"val/loss": loss * 3, "val/loss_per_char": loss})
    fields = dataclasses.asdict(r)
    for k in ("status", "non_embedding_params", "finetune_chars", "tokenizer", "val_set"):
        run.summary[k] = fields[k]
    run.finish()
    coll = collect_wandb_offline(tmp_path, group="demo")
    row = coll.table.iloc[0]
    assert row["run_key"] == r.run_key and row["N"] == r.non_embedding_params and row["D_F"] == r.finetune_chars
    assert row["loss"] == pytest.approx(2.5)  # the history minimum, read from the binary log
    assert not row["excluded"]


def test_a_cell_rerun_with_other_settings_keeps_only_the_newest_run():
    from transfer_lab.analysis.collect import records_to_table
    from transfer_lab.study.records import RunResult

    def run(key, finished_at, loss, chars=10_000):
        return RunResult(run_key=key, sweep="s", regime="scratch", status="done", non_embedding_params=1000,
                         finetune_chars=chars, best_val_loss=loss, best_val_loss_per_char=loss / 2,
                         tokenizer="t", val_set="v", finished_at=finished_at)

    table = records_to_table([run("old", "2026-01-01T00:00:00+00:00", 3.0),
                              run("new", "2026-01-02T00:00:00+00:00", 2.5),
                              run("other-cell", "2026-01-01T00:00:00+00:00", 2.0, chars=30_000)], "s").table
    table = table.set_index("run_key")
    assert table.loc["old", "excluded"] and "superseded by new" in table.loc["old", "reason"]
    assert not table.loc["new", "excluded"]
    assert not table.loc["other-cell", "excluded"]


def test_a_learning_rate_grid_keeps_each_cells_best_converged_rate():
    from transfer_lab.analysis.collect import records_to_table
    from transfer_lab.study.records import RunResult

    def run(key, lr, loss, converged=True, chars=10_000):
        return RunResult(run_key=key, sweep="s", regime="scratch", status="done", non_embedding_params=1000,
                         finetune_chars=chars, best_val_loss=loss, best_val_loss_per_char=loss / 2, tokenizer="t",
                         val_set="v", schedule={"lr": lr}, converged=converged,
                         stop_reason="early_stop" if converged else "max_steps",
                         finished_at=f"2026-01-0{int(lr * 1000)}T00:00:00+00:00")

    table = records_to_table([run("fast", 1e-2, 3.0), run("slow", 3e-3, 2.8), run("capped", 1e-3, 2.6, converged=False),
                              run("big", 1e-2, 2.0, chars=1e6), run("big-slow", 3e-3, 2.1, chars=1e6)], "s").table
    table = table.set_index("run_key")
    assert not table.loc["slow", "excluded"]  # the best converged rate of its cell, not the newest
    assert table.loc["fast", "excluded"] and "learning-rate grid: lr=0.01" in table.loc["fast", "reason"]
    assert table.loc["capped", "excluded"] and table.loc["capped", "reason"].startswith("not converged")
    assert not table.loc["big", "excluded"] and table.loc["big-slow", "excluded"]  # another cell, another rate


def test_a_run_its_ceiling_stopped_and_a_higher_one_extended_is_counted_once():
    from transfer_lab.analysis.collect import records_to_table
    from transfer_lab.study.records import RunResult

    def run(key, steps, converged, lr=1e-2):
        return RunResult(run_key=key, sweep="s", regime="scratch", status="done", non_embedding_params=1000,
                         finetune_chars=1e6, best_val_loss=2.0, best_val_loss_per_char=1.0, tokenizer="t", val_set="v",
                         schedule={"lr": lr}, converged=converged, steps=steps,
                         stop_reason="early_stop" if converged else "max_steps")

    table = records_to_table([run("capped", 20000, False), run("extended", 33800, True),
                              run("other-rate", 20000, False, lr=3e-3)], "s").table.set_index("run_key")
    assert table.loc["capped", "excluded"] and table.loc["capped", "reason"].startswith("extended")
    assert "extended" in table.loc["capped", "reason"] and not table.loc["extended", "excluded"]
    assert table.loc["other-rate", "reason"].startswith("not converged")  # no converged run of its rate


def test_a_committed_table_reanalyses_to_the_same_fits(tmp_path):
    """source=table: the table.csv a report wrote, read back, gives the same fits as the runs did; the
    exclusions an analysis makes (a rising point) are made again, not carried over."""
    from transfer_lab.analysis.collect import collect_table

    runs = syn.make_runs(noise=0.003, seed=4)
    res = run_analysis(records_to_table(runs, "synth"), n_bootstrap=50)
    write_report(res, tmp_path / "rep", make_plots=False)
    again = run_analysis(collect_table(tmp_path / "rep" / "table.csv"), n_bootstrap=50)
    for law in ("kaplan", "unified", "transfer"):
        assert again.fits[law].params == res.fits[law].params and again.fits[law].ci == res.fits[law].ci
    assert list(again.table["excluded"]) == list(res.table["excluded"])
    with pytest.raises(ResultsError, match="not a runs table"):
        (tmp_path / "other.csv").write_text("a,b\n1,2\n")
        collect_table(tmp_path / "other.csv")
