"""Nothing lost under concurrency, signals, corruption and a full disk: each test drives the real
failure (two processes on one sweep, a real SIGTERM / SIGINT, corrupted files, a torn record, a
deleted donor, a full tmpfs) and checks what is left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose, fill
from run_helpers import paths, run_folders, subprocess_env, train_command, val_steps

from transfer_lab.errors import ConfigError, DataError, ResultsError
from transfer_lab.study import records


def _status(run_dir: Path) -> str:
    path = run_dir / records.RESULTS_FILE
    return records.read_result(run_dir).status if path.exists() else ""


def _wait_for(predicate, proc, timeout: float = 300.0, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: exit {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- 1. a run is owned by one process at a time -----------------------------------------------------

@pytest.mark.subprocess
def test_a_second_launch_skips_the_run_the_first_is_training_and_never_overwrites_it(tmp_path, data_dir, cache_dir):
    out = tmp_path / "out"
    # a run that keeps training (it never plateaus: patience 1000, a 100,000-step ceiling) until it is stopped
    cmd = train_command("-m", "regime=scratch", "data.finetune_chars=3e4", "sweep=twice", "optim.max_steps=100000",
                        "optim.patience=1000", *paths(out, data_dir, cache_dir))
    first = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    runs = out / "sweeps" / "twice" / "runs"
    _wait_for(lambda: any(runs.glob("*/checkpoints/last.ckpt")), first, what="the first launch's first checkpoint")
    (run,) = run_folders(out, "twice").values()
    second = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first launch was still training while the second ran"
    first.send_signal(signal.SIGTERM)
    first_out, _ = first.communicate(timeout=300)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "sweep twice: 0 done, 0 skipped, 0 failed, 1 running in another launch" in second.stdout
    assert first.returncode == 143, first_out[-3000:]
    assert "sweep twice: 0 done, 0 skipped, 0 failed, 1 interrupted" in first_out
    result = records.read_result(run)  # the first launch's own record: the second wrote nothing over it
    assert result.status == "interrupted" and (run / "checkpoints" / "last.ckpt").exists()
    steps = val_steps(run)
    assert steps and steps == sorted(set(steps)), "validation points written twice"
    launches = sorted(p.name for p in (out / "sweeps" / "twice" / "hydra").iterdir())
    assert len(launches) == 2, f"two launches share a Hydra folder: {launches}"


@pytest.mark.subprocess
def test_two_identical_launches_train_every_cell_once_and_count_only_their_own(tmp_path, data_dir, cache_dir):
    out = tmp_path / "out"
    cmd = train_command("-m", "regime=scratch", "data.finetune_chars=1e4,2e4,3e4", "sweep=pair", "optim.max_steps=60",
                        *paths(out, data_dir, cache_dir))
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    counts = []
    for proc, text in zip(procs, outputs):
        assert proc.returncode == 0, text[-3000:]
        (line,) = [x for x in text.splitlines() if x.startswith("sweep pair:")]
        numbers = dict((label, int(n)) for n, label in re.findall(r"(\d+) ([a-z ]+?)(?:,| \()", line))
        assert sum(numbers.values()) == 3, line  # each launch counts its own three cells, no more
        assert numbers.get("failed") == 0, line
        counts.append(numbers)
    assert sum(c.get("done", 0) for c in counts) == 3, counts  # every cell trained exactly once
    folders = run_folders(out, "pair")
    assert len(folders) == 3 and all(_status(p) == "done" for p in folders.values())
    for folder in folders.values():
        steps = val_steps(folder)
        assert steps == sorted(set(steps)), f"{folder.name}: validation points written twice: {steps}"


def test_a_finished_record_is_never_replaced_by_an_unfinished_one(tmp_path):
    done = records.RunResult(run_key="k", sweep="s", regime="scratch", status="done")
    records.write_result(tmp_path, done)
    for status in ("failed", "running", "interrupted"):
        with pytest.raises(ResultsError, match="finished run"):
            records.write_result(tmp_path, records.RunResult(run_key="k", sweep="s", regime="scratch", status=status))
    assert records.read_result(tmp_path).status == "done"


# --- 2. signals ---------------------------------------------------------------------------------------

@pytest.mark.trains
@pytest.mark.subprocess
def test_a_killed_launchs_half_written_job_file_is_removed_by_the_next_launch(tmp_path):
    from transfer_lab.study.interrupts import JOB_FILE, remove_torn_job_files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: a writer a SIGKILL ended
    killed, live = tmp_path / "2026-12-01_15-06-52_1" / "1", tmp_path / "2026-12-01_15-07-00_2" / "0"
    for folder in (killed, live):
        folder.mkdir(parents=True)
        (folder / JOB_FILE).write_text("{}")
    torn = killed / f".{JOB_FILE}.{gone.pid}-644c2bbf.tmp"
    writing = live / f".{JOB_FILE}.{os.getpid()}-0a1b2c3d.tmp"  # a live writer about to rename it
    torn.write_text("{")
    writing.write_text("{")
    remove_torn_job_files(tmp_path)
    assert not torn.exists() and writing.exists() and (killed / JOB_FILE).exists()


@pytest.mark.trains  # the uninterrupted twin trains in this process
@pytest.mark.subprocess
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_at_a_step_keeps_its_checkpoint_and_the_next_launch_resumes_it(
        signum, code, tmp_path, data_dir, cache_dir):
    from transfer_lab.study.job import run_job

    out = tmp_path / "out"
    cells = ["regime=scratch", "data.finetune_chars=2e4,3e4", "optim.max_steps=80", "sweep=sig"]
    cmd = train_command("-m", *cells, *paths(out, data_dir, cache_dir))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    runs = out / "sweeps" / "sig" / "runs"
    _wait_for(lambda: any(runs.glob("*/checkpoints/last.ckpt")), proc, what="a first checkpoint")
    proc.send_signal(signum)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == code, text[-3000:]
    name = signal.Signals(signum).name
    (summary,) = [line for line in text.splitlines() if line.startswith("sweep sig:")]
    # two workers: the second cell was interrupted too, or never started
    assert summary.startswith("sweep sig: 0 done, 0 skipped, 0 failed, ") and f"stopped by {name}" in summary
    assert summary.count("interrupted") == 1 and ("2 interrupted" in summary or "1 interrupted, 1 not run" in summary)
    # each stopped job has its line, which does not count: the next launch resumes it and counts it then
    stopped_lines = [line for line in text.splitlines() if re.match(r"\[\d+/2\] ", line)]
    assert stopped_lines and len(stopped_lines) == int(re.search(r"(\d) interrupted", summary).group(1)), text[-3000:]
    assert all(line.startswith("[0/2] interrupted scratch-") and "not counted" in line for line in stopped_lines)
    folders = [p for p in run_folders(out, "sig").values() if (p / records.RESULTS_FILE).exists()]
    assert folders and all(records.read_result(p).status == "interrupted" for p in folders)
    stopped = folders[0]
    assert f"stopped by {name}" in records.read_result(stopped).error
    assert all((p / "checkpoints" / "last.ckpt").exists() for p in folders)
    if signum != signal.SIGTERM:
        return  # the resume below does not depend on which signal stopped the run: SIGTERM's variant checks it

    again = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "sweep sig: 2 done, 0 skipped, 0 failed" in again.stdout
    assert sorted(line[:11] for line in again.stdout.splitlines() if re.match(r"\[\d/2\] ", line)) == [
        "[1/2] done ", "[2/2] done "]
    assert f"resuming {stopped.name} from step" in again.stdout + again.stderr
    resumed = records.read_result(stopped)
    # the same run uninterrupted, in this process: a resumed run is the run it would have been
    d = "2e4" if "df2e4" in stopped.name else "3e4"
    twin = compose(*[o for o in cells if not o.startswith("data.")], f"data.finetune_chars={d}", "sweep=twin",
                   *paths(tmp_path / "twin", data_dir, cache_dir))
    assert run_job(twin) == "done"
    (twin_run,) = run_folders(tmp_path / "twin", "twin").values()
    assert resumed.best_val_loss == pytest.approx(records.read_result(twin_run).best_val_loss, rel=1e-6)
    assert val_steps(stopped) == val_steps(twin_run)


@pytest.mark.trains
def test_a_signal_at_a_validation_step_stops_after_that_validation_and_the_resume_misses_none(
        tmp_path, data_dir, cache_dir, monkeypatch):
    """A stop requested at a step whose validation is still to come (step 20 of a run validating every
    10) waits for that validation: a checkpoint saved before it would resume past it, one point short."""
    from transfer_lab.study import interrupts
    from transfer_lab.study.job import run_job

    cells = ["regime=scratch", "data.finetune_chars=2e4", "optim.max_steps=80", "optim.val_every_n_steps=10"]
    steps = []

    def at_step_20():  # the stopper asks once after each optimizer step (others ask too: not counted)
        if sys._getframe(1).f_code.co_name == "on_train_batch_end":
            steps.append(len(steps) + 1)
        return signal.SIGTERM if len(steps) >= 20 else None

    stopped_cfg = compose(*cells, "sweep=stopped", *paths(tmp_path / "stopped", data_dir, cache_dir))
    monkeypatch.setattr(interrupts, "requested", at_step_20)
    assert run_job(stopped_cfg) == "interrupted"
    (stopped,) = run_folders(tmp_path / "stopped", "stopped").values()
    assert val_steps(stopped)[-1] == 20 and "at step 20" in records.read_result(stopped).error
    monkeypatch.undo()
    assert run_job(stopped_cfg) == "done"  # resumed from the last.ckpt of step 20's validation
    assert run_job(compose(*cells, "sweep=twin", *paths(tmp_path / "twin", data_dir, cache_dir))) == "done"
    (twin,) = run_folders(tmp_path / "twin", "twin").values()
    assert val_steps(stopped) == val_steps(twin)
    assert records.read_result(stopped).best_val_loss == pytest.approx(records.read_result(twin).best_val_loss, rel=1e-6)


# --- 3. content checks --------------------------------------------------------------------------------

def _token_file(data_dir, cache_dir, tmp_path):
    from transfer_lab.data.run_data import load_run_data
    from transfer_lab.study.job_settings import read_settings

    spec = read_settings(compose("regime=scratch", *paths(tmp_path / "o", data_dir, cache_dir))).data
    return load_run_data(spec, need_source=False, need_target=True, log=lambda *_: None), spec


@pytest.mark.parametrize("damage", ["valid_ids_reshuffled", "ids_past_the_vocabulary", "meta_without_splits",
                                    "a_folder_in_its_place"])
@pytest.mark.trains
@pytest.mark.subprocess
def test_a_damaged_token_file_is_rebuilt_before_any_training(damage, tmp_path, data_dir, cache_dir):
    from transfer_lab.data import token_files

    data, spec = _token_file(data_dir, cache_dir, tmp_path)
    folder = data.target.directory
    train = folder / "train.tokens.bin"
    original = train.read_bytes()
    if damage == "valid_ids_reshuffled":  # same size, every id valid: only the checksum can tell
        ids = np.frombuffer(original, dtype=data.target.meta["splits"]["train"]["dtype"]).copy()
        np.random.default_rng(0).shuffle(ids)
        train.write_bytes(ids.tobytes())
    elif damage == "ids_past_the_vocabulary":
        train.write_bytes(b"\xff" * len(original))
    elif damage == "a_folder_in_its_place":
        train.unlink()
        train.mkdir()
    else:
        meta = json.loads((folder / "meta.json").read_text())
        del meta["splits"]
        (folder / "meta.json").write_text(json.dumps(meta))
    token_files._VERIFIED.clear()  # a new process
    lines = []
    from transfer_lab.data.run_data import load_run_data

    again = load_run_data(spec, need_source=False, need_target=True, log=lines.append)
    assert any(line.startswith("warning:") and "re-tokenising" in line for line in lines), lines
    assert (again.target.directory / "train.tokens.bin").read_bytes() == original


def test_a_corrupted_checkpoint_restarts_the_run_and_corrupted_weights_stop_it(tmp_path):
    import torch

    from transfer_lab.study.pretraining import check_weights
    from transfer_lab.training.callbacks import (
        CorruptCheckpoint,
        load_checkpoint_file,
        save_checkpoint_file,
    )

    path = tmp_path / "last.ckpt"
    save_checkpoint_file({"global_step": 3, "w": torch.arange(1000.0)}, path)
    assert load_checkpoint_file(path)["global_step"] == 3
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="does not match its checksum"):
        load_checkpoint_file(path)

    from safetensors.torch import save_file

    model = tmp_path / "pre" / "model"
    model.mkdir(parents=True)
    save_file({"w": torch.arange(1000.0)}, model / "model.safetensors")
    with pytest.raises(DataError, match="cannot be checked: .*checksum, is missing"):
        check_weights(model)  # weights without a checksum are never taken: one would be of whatever bytes are there
    assert not (model / "transfer_lab.json").exists()
    from transfer_lab.atomic_files import digest

    (model / "transfer_lab.json").write_text(json.dumps({"weights_blake2b": digest(model / "model.safetensors")}))
    check_weights(model)
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-8] ^= 0xFF
    (model / "model.safetensors").write_bytes(bytes(data))
    from transfer_lab.study import pretraining

    pretraining._CHECKED.clear()  # a new process
    with pytest.raises(DataError, match="do not match their checksum"):
        check_weights(model)


# --- 4. torn and invalid records -----------------------------------------------------------------------

@pytest.mark.parametrize("tear", ["cut", "converged_no", "schedule_not_a_mapping"])
@pytest.mark.trains
@pytest.mark.subprocess
def test_a_torn_or_invalid_record_is_a_warning_and_its_run_is_trained_again(tear, tmp_path, data_dir, cache_dir,
                                                                            capsys):
    from transfer_lab.study.job import run_job
    from transfer_lab.study.launch_checks import warn_unreadable_records

    cfg = compose("regime=scratch", "sweep=torn", "optim.max_steps=60", *paths(tmp_path / "out", data_dir, cache_dir))
    assert run_job(cfg) == "done"
    (run,) = run_folders(tmp_path / "out", "torn").values()
    path = run / records.RESULTS_FILE
    if tear == "cut":
        path.write_bytes(path.read_bytes()[:500])
    else:
        data = json.loads(path.read_text())
        data.update({"converged": "no"} if tear == "converged_no" else {"schedule": [1, 2]})
        path.write_text(json.dumps(data))
    with pytest.raises(ResultsError):
        records.read_result(run)  # never read as something it is not
    assert warn_unreadable_records(tmp_path / "out" / "sweeps" / "torn") == [path]
    assert "its run will be trained again" in capsys.readouterr().err
    assert run_job(cfg) == "done"  # no exit: set aside, trained again
    assert records.read_result(run).status == "done"
    assert list(run.glob("results.json.unreadable-*")), "the torn record was not kept"


# --- 5. extension owns what it needs ---------------------------------------------------------------------

@pytest.mark.trains
@pytest.mark.subprocess
def test_an_extended_run_keeps_training_after_its_donor_is_deleted(tmp_path, data_dir, cache_dir, monkeypatch):
    from transfer_lab.study import job, lineage
    from transfer_lab.study.job import run_job

    out = tmp_path / "out"
    common = ["regime=scratch", "data.finetune_chars=3e4", "optim.patience_fraction=0", *paths(out, data_dir, cache_dir)]
    assert run_job(compose(*common, "sweep=short", "optim.max_steps=30")) == "done"  # capped: kept to extend
    (donor,) = run_folders(out, "short").values()
    assert records.read_result(donor).converged is False

    real_copy = lineage.copy_run

    def copy_then_delete_donor(src, dst, sweep, with_checkpoints, lineage=""):
        real_copy(src, dst, sweep, with_checkpoints, lineage)
        shutil.rmtree(src)  # the donor's sweep is cleaned up while the extension trains
        # Lightning restores best_model_path from a checkpoint whatever its folder: the first anneal
        # after the copy would load it. The copy's checkpoints restore a state inside its own folder.
        from pytorch_lightning.callbacks import ModelCheckpoint

        from transfer_lab.training.callbacks import load_checkpoint_file

        state = load_checkpoint_file(dst / "checkpoints" / "last.ckpt")["callbacks"]
        assert str(src) not in repr(state), "a copied checkpoint still points at its donor"
        best = ModelCheckpoint(dirpath=dst / "checkpoints", filename="best", monitor="val/loss", mode="min")
        best.load_state_dict(next(v for k, v in state.items() if "val/loss" in k))
        assert best.best_model_score is not None and Path(best.best_model_path).exists()

    monkeypatch.setattr(job.lineage, "copy_run", copy_then_delete_donor)
    assert run_job(compose(*common, "sweep=long", "optim.max_steps=600")) == "done"
    (extended,) = run_folders(out, "long").values()
    result = records.read_result(extended)
    assert not donor.exists() and result.status == "done" and result.converged and result.steps > 30


# --- 6. a full disk ---------------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_a_full_disk_fails_one_run_stops_the_sweep_with_its_summary_and_the_rerun_resumes(
        small_disk, tmp_path, data_dir, cache_dir):
    out = small_disk / "out"
    cmd = train_command("-m", "regime=scratch", "data.finetune_chars=1e4,2e4,3e4", "sweep=full", "optim.max_steps=60",
                        *paths(out, data_dir, cache_dir))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    first = _wait_for(lambda: next((p for p in run_folders(out, "full").values() if _status(p) == "done"), None), proc,
                      what="a first finished run")
    finished = (first / records.RESULTS_FILE).read_bytes()
    filler = fill(small_disk)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, text[-3000:]
    assert "no space left on" in text and "free space and run the same command again" in text
    (line,) = [line for line in text.splitlines() if line.startswith("error: no space left on ")]
    assert str(small_disk) in line, line  # the path the full disk named, not "the output disk"
    (summary,) = [line for line in text.splitlines() if line.startswith("sweep full:")]
    assert re.search(r", [1-9]\d* failed", summary) and "no space left on" in summary, summary
    assert "Traceback" not in text
    assert (first / records.RESULTS_FILE).read_bytes() == finished
    failed = [p for p in run_folders(out, "full").values() if p != first and _status(p) == "failed"]
    for run in failed:  # where the record could still be written, it names the cause
        assert "no space left on" in records.read_result(run).error

    filler.unlink()
    again = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    (summary,) = [line for line in again.stdout.splitlines() if line.startswith("sweep full:")]
    done, skipped = (int(n) for n in re.match(r"sweep full: (\d+) done, (\d+) skipped, 0 failed \(", summary).groups())
    assert done + skipped == 3 and skipped >= 1, summary  # what finished before the disk filled is kept
    assert (first / records.RESULTS_FILE).read_bytes() == finished
    assert all(_status(p) == "done" for p in run_folders(out, "full").values())


# --- 7. one line, never a traceback ---------------------------------------------------------------------

@pytest.mark.parametrize("key", ["sweep_dir", "cache_dir", "data_dir"])
def test_a_path_that_is_a_file_is_one_config_error(key, tmp_path):
    from transfer_lab.study.validate import validate_config

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for value in (blocker, blocker / "below"):
        with pytest.raises(ConfigError, match=f"paths.{key}=.*(is a file|lies under the file)"):
            validate_config(compose("regime=scratch", f"paths.{key}={value}"))


def test_a_manifest_whose_sources_is_not_a_list_is_one_data_error(tmp_path, data_dir, cache_dir):
    from transfer_lab.data.corpora import load_corpus_spec, prepare_corpus
    from transfer_lab.data.corpora.build import MANIFEST, open_prepared

    corpus = prepare_corpus(load_corpus_spec("python_small"), data_dir=data_dir)
    copy = tmp_path / corpus.directory.name
    shutil.copytree(corpus.directory, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["sources"] = "stdlib"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="broken manifest.json"):
        open_prepared(copy, corpus.spec)


# --- 8. permissions follow the umask -------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(umask, mode, tmp_path):
    from transfer_lab.atomic_files import atomic_write_text
    from transfer_lab.training.callbacks import save_checkpoint_file

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "results.json", "{}")
        save_checkpoint_file({"global_step": 1}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    for name in ("results.json", "last.ckpt", "last.ckpt.blake2b"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
