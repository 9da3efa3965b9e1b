"""This round's fault probes (issue 28), each driven for real on tiny runs: a pre-training killed
while its weights are saved, corrupt weights without their checksum, a folder (or a link loop) in
place of a record, a file in place of the checkpoints, a job that fails unexpectedly, weights and
the umask, a token through any config key, and pre-trainings reused by a second sweep."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import string
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, compose
from run_helpers import paths, run_folders, subprocess_env, train_command

from transfer_lab.errors import DataError
from transfer_lab.study import records
from transfer_lab.study.pretraining import (
    PRETRAINED_MODEL_DIR,
    TOKENIZER_NOTE,
    WEIGHTS_FILE,
    weights_missing,
)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so no handler records it as a failure."""


def _pretrained(root: Path) -> Path:
    (folder,) = [p for p in (root / "pretrained").iterdir() if p.is_dir()]
    return folder


@pytest.mark.trains
@pytest.mark.parametrize("fault", ["killed", "disk_full"])
def test_a_pretraining_cut_short_while_saving_its_weights_recovers_by_itself(fault, tmp_path, data_dir, cache_dir,
                                                                             monkeypatch):
    from transformers import PreTrainedModel

    from transfer_lab.study.job import run_job

    real_save = PreTrainedModel.save_pretrained

    def torn_save(self, folder, **kwargs):  # half the weights reach the disk, then the process is gone
        real_save(self, folder, **kwargs)
        weights = Path(folder) / WEIGHTS_FILE
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        if fault == "killed":
            raise Killed()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(weights))

    common = ["regime=finetune", *paths(tmp_path / "out", data_dir, cache_dir)]
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", torn_save)
    if fault == "killed":
        with pytest.raises(Killed):
            run_job(compose(*common, "sweep=first"))
    else:
        assert run_job(compose(*common, "sweep=first")) == "no_space"
    folder = _pretrained(tmp_path / "out")
    assert records.read_result(folder).status != "done", "done was recorded before the weights were in place"
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)

    assert run_job(compose(*common, "sweep=first")) == "done"  # the same command: no hand work
    assert records.read_result(folder).status == "done" and weights_missing(folder / PRETRAINED_MODEL_DIR) == ""
    assert run_job(compose(*common, "sweep=first", "regime=scratch")) == "done"


@pytest.mark.trains
def test_a_done_pretraining_without_weights_is_set_aside_and_trained_again_and_reuse_is_skipped(
        tmp_path, data_dir, cache_dir, caplog):
    from transfer_lab.study.job import run_job

    out = tmp_path / "out"
    common = [*paths(out, data_dir, cache_dir)]
    assert run_job(compose("regime=pretrain", "sweep=a", *common)) == "done"
    assert run_job(compose("regime=pretrain", "sweep=b", *common)) == "skipped"  # reused: not trained again
    folder = _pretrained(out)
    done = (folder / records.RESULTS_FILE).read_bytes()
    old = os.umask(0o002)  # a group shares this results folder
    try:
        for path in (folder / PRETRAINED_MODEL_DIR).iterdir():
            path.unlink()
        (folder / PRETRAINED_MODEL_DIR).rmdir()  # the weights were deleted by hand
        assert run_job(compose("regime=finetune", "sweep=a", *common)) == "done"
    finally:
        os.umask(old)
    assert any("is recorded done, but" in r.getMessage() for r in caplog.records)
    (aside,) = folder.glob(f"{records.RESULTS_FILE}.without-weights-*")
    assert aside.read_bytes() == done and records.read_result(folder).status == "done"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (folder / PRETRAINED_MODEL_DIR).iterdir()}
    assert set(modes) >= {WEIGHTS_FILE, TOKENIZER_NOTE, "config.json"} and set(modes.values()) == {0o664}, modes
    assert (folder / records.RESULTS_FILE).stat().st_mode & 0o777 == 0o664


@pytest.mark.trains
def test_corrupt_weights_without_their_checksum_are_never_taken(tmp_path, data_dir, cache_dir, caplog):
    from transfer_lab.study import pretraining
    from transfer_lab.study.job import run_job
    from transfer_lab.study.pretraining import check_init_from, check_weights

    out = tmp_path / "out"
    common = ["regime=finetune", *paths(out, data_dir, cache_dir)]
    assert run_job(compose(*common, "sweep=a")) == "done"
    model = _pretrained(out) / PRETRAINED_MODEL_DIR
    data = bytearray((model / WEIGHTS_FILE).read_bytes())
    data[-64] ^= 0xFF  # flipped bytes in a weight, and the checksum that would tell is gone
    (model / WEIGHTS_FILE).write_bytes(bytes(data))
    (model / TOKENIZER_NOTE).unlink()
    pretraining._CHECKED.clear()  # a new process
    with pytest.raises(DataError, match="cannot be checked: .*checksum, is missing"):
        check_weights(model)
    assert not (model / TOKENIZER_NOTE).exists(), "a checksum of the corrupt weights was written"
    saved = json.loads((model / "config.json").read_text())
    shape = type("Shape", (), {k: saved[k] for k in ("n_layer", "n_embd", "n_head", "vocab_size")})()
    with pytest.raises(DataError, match="cannot be checked"):
        check_init_from(model, shape, "any")  # as pretrain.init_from, it is refused too

    assert run_job(compose(*common, "sweep=a", "data.finetune_chars=2e4")) == "done"
    assert any("checksum, is missing" in r.getMessage() and "training it again" in r.getMessage()
               for r in caplog.records)
    assert (model / WEIGHTS_FILE).read_bytes() != bytes(data) and weights_missing(model) == ""
    check_weights(model)


@pytest.mark.trains
@pytest.mark.parametrize("blocker", ["folder", "link_loop"])
def test_a_folder_or_link_loop_in_place_of_a_record_is_one_runs_business(blocker, tmp_path, data_dir, cache_dir,
                                                                        capsys):
    from transfer_lab.analysis import collect_local
    from transfer_lab.study.job import run_job
    from transfer_lab.study.launch_checks import warn_unreadable_records

    out = tmp_path / "out"
    cfg = compose("regime=scratch", "sweep=s", "optim.max_steps=600", *paths(out, data_dir, cache_dir))
    assert run_job(cfg) == "done"
    (run,) = run_folders(out, "s").values()
    path = run / records.RESULTS_FILE
    path.unlink()
    path.mkdir() if blocker == "folder" else os.symlink(records.RESULTS_FILE, path)
    table = collect_local(out, "s").table  # the analysis goes on, naming the run
    (row,) = table.to_dict("records")
    assert row["status"] == "unreadable" and row["excluded"] and "is not a file" in row["reason"]
    assert warn_unreadable_records(out / "sweeps" / "s") == [path]
    assert "is not a readable file" in capsys.readouterr().err
    assert run_job(cfg) == "done"  # set aside, kept, trained again
    assert records.read_result(run).status == "done" and len(list(run.glob("results.json.unreadable-*"))) == 1


@pytest.mark.trains
def test_a_file_in_place_of_the_checkpoints_is_set_aside_and_the_run_trains(tmp_path, data_dir, cache_dir):
    from transfer_lab.study.job import run_job
    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import run_key

    out = tmp_path / "out"
    cfg = compose("regime=scratch", "sweep=c", "optim.max_steps=600", *paths(out, data_dir, cache_dir))
    run = out / "sweeps" / "c" / "runs" / run_key(identity_of(cfg))
    run.mkdir(parents=True)
    (run / "checkpoints").write_text("not a folder")
    assert run_job(cfg) == "done"
    result = records.read_result(run)
    assert result.status == "done" and result.converged
    (aside,) = run.glob("checkpoints.not-a-folder-*")
    assert aside.read_text() == "not a folder"


def _hf_token() -> str:
    return "hf_" + "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(34))


def test_tokens_are_scrubbed_whatever_their_key():
    from transfer_lab.study.tracking import scrub

    token, wandb_key = _hf_token(), "".join(random.choice("0123456789abcdef") for _ in range(40))
    scrubbed = json.dumps(scrub({"note": token, "nested": {"label": [f"see {token}."], "run": wandb_key},
                                 "data": {"target": "hf_fineweb_german_subset", "revision": "main"}}))
    assert token not in scrubbed and wandb_key not in scrubbed and scrubbed.count("<redacted>") == 3
    assert "hf_fineweb_german_subset" in scrubbed  # a name is no token


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_job_that_fails_unexpectedly_says_why_and_the_launch_exits_non_zero(tmp_path, data_dir, cache_dir):
    """A folder where the run's config.yaml belongs (nothing below the job foresees it), in a
    multirun of two cells and in a single run."""
    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import run_key

    out = tmp_path / "out"
    cells = ["regime=scratch", "sweep=f", "optim.max_steps=20", *paths(out, data_dir, cache_dir)]
    broken = run_key(identity_of(compose(*cells, "data.finetune_chars=2e4")))
    (out / "sweeps" / "f" / "runs" / broken / "config.yaml").mkdir(parents=True)
    multi = subprocess.run(train_command("-m", *cells, "data.finetune_chars=1e4,2e4"), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    text = multi.stdout + multi.stderr
    assert multi.returncode == 1, text[-3000:]
    (summary,) = [line for line in multi.stdout.splitlines() if line.startswith("sweep f:")]
    assert summary.startswith("sweep f: 1 done, 0 skipped, 1 failed") and f"1 failed: {broken}: IsADirectoryError" \
        in summary, summary
    assert "Traceback" not in text and "job(s) failed" in multi.stderr
    lines = [line for line in multi.stdout.splitlines() if re.match(r"\[\d/2\] ", line)]
    assert [line[:5] for line in lines] == ["[1/2]", "[2/2]"], multi.stdout[-3000:]  # a failed job counts
    (failed_line,) = [line for line in lines if line.split()[1] == "failed"]
    assert failed_line.split()[2] == broken and ": IsADirectoryError" in failed_line, failed_line
    record = records.read_result(out / "sweeps" / "f" / "runs" / broken)
    assert record.status == "failed" and record.error.startswith("IsADirectoryError")
    (job,) = [json.loads(p.read_text()) for p in (out / "sweeps" / "f" / "hydra").glob("*/*/job.json")
              if json.loads(p.read_text()).get("run_key") == broken]
    assert job["outcome"] == "failed" and job["error"].startswith(broken) and "Traceback" in job["traceback"]

    single = subprocess.run(train_command(*cells, "data.finetune_chars=2e4"), cwd=ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 1, (single.stdout + single.stderr)[-3000:]
    assert f"{broken} failed: IsADirectoryError" in single.stdout + single.stderr
