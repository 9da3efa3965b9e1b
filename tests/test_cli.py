"""The design card's command, as a user types it (in a subprocess, shrunk to CPU size)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from run_helpers import train_command

from transfer_lab.study import records


def train(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFER_LAB_OUTPUTS": str(tmp_path / "outputs"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(train_command(f"paths.data_dir={data_dir}", *args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.subprocess
def test_design_card_sweep_runs_every_cell(tmp_path, data_dir):
    # the card's `-m model.n_layer=2,4,8 data.finetune_chars=1e5,1e6`, at test size, with one scratch D
    # of its own (the test-size experiment's scratch grid would add four runs per size)
    card = ["-m", "model.n_layer=1,2", "data.finetune_chars=1e4,2e4", "data.scratch_chars=3e4"]
    first = train(tmp_path, data_dir, *card)
    assert first.returncode == 0, first.stderr[-2000:]
    # per size: one pre-training job, scratch at each D, fine-tunes at each D_F
    assert "sweep tiny_test: 8 done, 0 skipped, 0 failed" in first.stdout
    runs = [records.read_result(p) for p in (tmp_path / "outputs/sweeps/tiny_test/runs").iterdir()]
    target = [r for r in runs if r.regime != "pretrain"]
    cells = {(r.regime, r.n_layer, r.finetune_chars // 1000) for r in target}
    assert cells == {(regime, n, d) for n in (1, 2) for regime, ds in (("scratch", (30,)), ("finetune", (10, 20)))
                     for d in ds}
    assert all(r.status == "done" for r in runs)
    pretrained = [p for p in (tmp_path / "outputs/pretrained").iterdir() if p.is_dir()]
    assert len(pretrained) == 2, "one pre-training per size, not one per D_F"
    # the same command again skips finished cells: test_faults.py (a re-run after SIGKILL) checks it


@pytest.mark.subprocess
def test_bad_config_is_one_line_and_exit_2(tmp_path, data_dir):
    result = train(tmp_path, data_dir, "model.n_embd=30", "model.n_head=4")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.n_head" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "sweeps" / "tiny_test" / "runs").exists(), "nothing trained or written"


@pytest.mark.parametrize("argv,named", [
    (["-m", "model.n_head=2,3", "model.n_embd=64"], "model.n_head=3"),
    (["-m", "optim.lr=1e-3,-1"], "optim.lr=-1"),
    (["-m", "experiment=smoke", "model.n_layer=1,0"], "model.n_layer=0"),
])
def test_every_sweep_cell_is_checked_before_the_first_trains(argv, named, capsys):
    from transfer_lab.study.launch_checks import check_sweep_cells

    with pytest.raises(SystemExit) as exit_info:
        check_sweep_cells(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and named in err[0]


def test_a_good_sweep_passes_the_cell_check(capsys):
    from transfer_lab.study.launch_checks import check_sweep_cells

    check_sweep_cells(["-m", "model.n_layer=2,4,8", "data.finetune_chars=1e5,1e6"])  # the design card: no exit
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):  # and the same check does stop the card with one bad size
        check_sweep_cells(["-m", "model.n_layer=2,4,0", "data.finetune_chars=1e5,1e6"])
