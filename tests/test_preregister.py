"""Pre-registered predictions on synthetic sweeps with a known law: predict a size 4× past the
largest trained, add its runs (drawn from the same law and noise), verify; and every way a
predictions file can be wrong gives one line."""

from __future__ import annotations

import json

import analysis_synth as syn
import numpy as np
import pandas as pd
import pytest
from conftest import compose

from transfer_lab.analysis.actions import run_cli
from transfer_lab.errors import ConfigError, ResultsError

TRAINED = (1e5, 3e5, 1e6)
HELD_OUT = 4e6
D_FS = (1e4, 3e4, 1e5, 3e5)
SCRATCH = tuple(np.geomspace(1e4, 1e11, 12))
NOISE = 0.004


def _runs(ns, seed, replicates=3):
    """Seeds on every cell (so seed noise is measured), drawn from the synthetic truth."""
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        for s in range(replicates):
            for d in SCRATCH:
                loss = float(syn.scratch_loss(n, d) * np.exp(rng.normal(0, NOISE)))
                out.append(syn.result("p", f"scratch-N{n:.0e}-D{d:.2e}-s{s}", "scratch", n, d, loss, seed=s))
            for d in D_FS:
                loss = float(syn.finetune_loss(n, d) * np.exp(rng.normal(0, NOISE)))
                out.append(syn.result("p", f"ft-N{n:.0e}-D{d:.0e}-s{s}", "finetune", n, d, loss, seed=s))
    return out


def _cfg(root, *overrides):
    return compose(f"paths.output_root={root}", "sweep=p", "fit.n_bootstrap=200", "plots=false", "html=false",
                   "pdf=false", *overrides, config="analyze")


@pytest.fixture()
def sweep(tmp_path):
    root = tmp_path / "outputs"
    syn.write_runs(root, "p", _runs(TRAINED, seed=0))
    return root


def _predict(root, path):
    run_cli(_cfg(root, "action=predict", f"predict.n={HELD_OUT}", f"predict.finetune_chars=[{','.join(map(str, D_FS))}]",
                 f"predict.scratch_chars=[{SCRATCH[3]},{SCRATCH[6]},{SCRATCH[9]}]", f"predict.save={path}"))


def test_a_held_out_size_lands_inside_its_pre_registered_intervals(sweep, tmp_path, capsys):
    path = tmp_path / "docs" / "predictions.json"
    _predict(sweep, path)
    doc = json.loads(path.read_text())
    assert doc["sweep"] == "p" and len(doc["fitted_on"]["runs"]) == len(_runs(TRAINED, 0))
    assert {c["law"] for c in doc["cells"]} == {"transfer", "unified", "kaplan"}
    truth = {d: float(syn.finetune_loss(HELD_OUT, d)) for d in D_FS}
    for c in doc["cells"]:
        if c["regime"] == "finetune":  # the truth is inside every prediction interval of a correct law
            assert c["loss_ci"][0] <= truth[c["D"]] <= c["loss_ci"][1]
    with pytest.raises(ResultsError, match="none of the"):  # nothing measured yet: one line
        run_cli(_cfg(sweep, "action=verify", f"verify.predictions={path}"))

    syn.write_runs(sweep, "p", _runs((HELD_OUT,), seed=7, replicates=1))
    capsys.readouterr()
    run_cli(_cfg(sweep, "action=verify", f"verify.predictions={path}"))
    rows = pd.read_csv(path.parent / "verify.csv")
    assert len(rows) == 2 * (2 * len(D_FS)) + 3  # per law: loss and D_T per D_F; 3 scratch losses
    assert rows["inside"].sum() >= 0.8 * len(rows), rows
    assert (rows["inside_with_misfit"] >= rows["inside"]).all()  # the law fits: its misfit adds (almost) nothing
    report = (path.parent / "verify.md").read_text()
    assert "## Calibration" in report and doc["commit"][:12] in report


def test_wrong_law_is_caught_by_verify(sweep, tmp_path):
    """Runs from another law (4× less transfer at the held-out size) fall outside: verify can fail."""
    path = tmp_path / "pred.json"
    _predict(sweep, path)
    weak = {**syn.TRANSFER, "k": syn.TRANSFER["k"] / 30}
    rng = np.random.default_rng(3)
    held = [syn.result("p", f"ft-held-D{d:.0e}", "finetune", HELD_OUT, d,
                       float(syn.finetune_loss(HELD_OUT, d, weak) * np.exp(rng.normal(0, NOISE)))) for d in D_FS]
    held += [syn.result("p", f"scratch-held-D{d:.2e}", "scratch", HELD_OUT, d, float(syn.scratch_loss(HELD_OUT, d)))
             for d in SCRATCH]
    syn.write_runs(sweep, "p", held)
    run_cli(_cfg(sweep, "action=verify", f"verify.predictions={path}"))
    rows = pd.read_csv(tmp_path / "verify.csv")
    finetune_loss = rows[(rows["regime"] == "finetune") & (rows["quantity"] == "loss")]
    assert (~finetune_loss["inside"]).sum() >= len(finetune_loss) // 2


def test_changed_runs_missing_and_corrupt_files_are_one_line_errors(sweep, tmp_path):
    path = tmp_path / "pred.json"
    _predict(sweep, path)
    with pytest.raises(ConfigError, match="never overwritten"):
        _predict(sweep, path)
    run = next((sweep / "sweeps" / "p" / "runs").iterdir())
    record = json.loads((run / "results.json").read_text())
    record["best_val_loss_per_char"] *= 1.01  # a fitted run retrained (or edited) after the predictions
    (run / "results.json").write_text(json.dumps(record))
    with pytest.raises(ResultsError, match="changed since"):
        run_cli(_cfg(sweep, "action=verify", f"verify.predictions={path}"))
    with pytest.raises(ConfigError, match="does not exist"):
        run_cli(_cfg(sweep, "action=verify", f"verify.predictions={tmp_path / 'nope.json'}"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="cannot be read"):
        run_cli(_cfg(sweep, "action=verify", f"verify.predictions={bad}"))
    bad.write_text(json.dumps({"cells": []}))
    with pytest.raises(ResultsError, match="not a transfer_lab predictions file"):
        run_cli(_cfg(sweep, "action=verify", f"verify.predictions={bad}"))
    with pytest.raises(ConfigError, match="verify.predictions"):
        run_cli(_cfg(sweep, "action=verify"))
