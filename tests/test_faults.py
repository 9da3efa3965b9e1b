"""Faults during an overnight sweep: kills (training, checkpoint write, results write), two jobs that
need the same pre-trained model, diverging runs, determinism, and what must never leak or run.

The SIGKILL, parallel-launch and secret tests run train.py in subprocesses (marked slow); the kills
at a precise write are simulated in-process by letting the write tear its temp file and then
raising a BaseException (what a kill leaves behind, without a cleanup handler running).
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import secrets
import signal
import string
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose
from run_helpers import (
    paths,
    run_folders,
    subprocess_env,
    temp_files,
    train_command,
    val_steps,
)

from transfer_lab.study import records

PACKAGE = ROOT / "transfer_lab"


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so no handler records it as a failure."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, cache_dir):
    """One uninterrupted finetune cell (its pre-training included): what every fault must reproduce."""
    from transfer_lab.study.job import run_job

    root = tmp_path_factory.mktemp("reference")
    assert run_job(compose("regime=finetune", "sweep=ref", *paths(root, data_dir, cache_dir))) == "done"
    (run,) = run_folders(root, "ref").values()
    (pretrained,) = [p for p in (root / "pretrained").iterdir() if p.is_dir()]
    return {"root": root, "finetune": records.read_result(run), "pretrain": records.read_result(pretrained),
            "pretrained_dir": root / "pretrained", "finetune_val_steps": val_steps(run)}


# --- SIGKILL in the middle of a sweep (real signal, real subprocess) -------------------------------

@pytest.mark.subprocess
def test_sigkill_mid_sweep_then_the_same_command_completes_the_grid(tmp_path, data_dir, cache_dir):
    from transfer_lab.analysis import collect_local

    out = tmp_path / "out"
    cmd = train_command("-m", "regime=scratch", "data.finetune_chars=1e4,2e4,3e4", "optim.max_steps=40", "sweep=killed",
                        *paths(out, data_dir, cache_dir))
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    done, resumable, deadline = {}, None, time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            folders = run_folders(out, "killed")
            done = {k: p for k, p in folders.items() if (p / records.RESULTS_FILE).exists()
                    and records.read_result(p).status == "done"}
            with_ckpt = [k for k, p in folders.items() if k not in done and (p / "checkpoints" / "last.ckpt").exists()]
            if done and with_ckpt:
                resumable = with_ckpt[0]
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and resumable is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert resumable is not None, "no kill window (a run done and another with a checkpoint): " + \
        (tmp_path / "first.log").read_text()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    finished = {k: ((p / records.RESULTS_FILE).read_bytes(), (p / records.RESULTS_FILE).stat().st_mtime_ns)
                for k, p in done.items()}

    again = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert f"sweep killed: {3 - len(done)} done, {len(done)} skipped, 0 failed" in output
    lines = [line for line in again.stdout.splitlines() if re.match(r"\[\d/3\] ", line)]
    assert [line[:5] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"], output[-3000:]  # each cell counted once
    assert sorted(line.split()[2] for line in lines if line.split()[1] == "skipped") == sorted(done)
    assert f"resuming {resumable} from step" in output

    folders = run_folders(out, "killed")
    results = {k: records.read_result(p) for k, p in folders.items()}  # every record parses
    assert len(folders) == 3 and all(r.status == "done" and r.steps == 40 for r in results.values())
    assert sorted(round(r.finetune_chars, -4) for r in results.values()) == [10_000, 20_000, 30_000]
    for key, (data, mtime) in finished.items():  # finished runs were skipped, not redone
        path = folders[key] / records.RESULTS_FILE
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    for key, folder in folders.items():
        steps = val_steps(folder)
        assert steps == sorted(set(steps)), f"{key}: validation points repeated or lost order: {steps}"
        # 40 steps is the ceiling, not a converged stop: the checkpoints stay for a higher ceiling to extend
        assert not results[key].converged and (folder / "checkpoints" / "last.ckpt").exists()
    assert temp_files(out) == []
    table = collect_local(out, "killed").table
    assert len(table) == 3 and table["run_key"].is_unique  # each run once, and none fitted: all hit the ceiling
    assert table["excluded"].all() and table["reason"].str.contains("ceiling").all()


# --- kill during a checkpoint write (pre-training) -------------------------------------------------

@pytest.mark.trains
@pytest.mark.subprocess
def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(reference, tmp_path, data_dir, cache_dir,
                                                                     monkeypatch):
    from transfer_lab.study.job import run_job

    real_save = torch.save
    torn = []

    def dying_save(obj, f, *args, **kwargs):
        temp_of_last = isinstance(f, (str, Path)) and re.fullmatch(r"\.last\.ckpt\..*\.tmp", Path(f).name)
        if temp_of_last and obj.get("global_step") == 20:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            torn.append(Path(f))
            raise Killed()
        return real_save(obj, f, *args, **kwargs)

    cfg = lambda: compose("regime=finetune", "sweep=ref", *paths(tmp_path, data_dir, cache_dir))  # noqa: E731
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Killed):
        run_job(cfg())
    monkeypatch.setattr(torch, "save", real_save)

    (ckpt_tmp,) = torn
    folder = ckpt_tmp.parent.parent  # the pre-training folder, killed at its step-20 checkpoint
    assert records.read_result(folder).status == "running"
    previous = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert previous["global_step"] == 10, "the previous last.ckpt must survive a torn write"
    with pytest.raises(Exception):
        torch.load(ckpt_tmp, map_location="cpu", weights_only=True)  # the torn file really is torn

    assert run_job(cfg()) == "done"  # the same command again: resumes the pre-training, then fine-tunes
    pretrain = records.read_result(folder)
    (run,) = run_folders(tmp_path, "ref").values()
    finetune = records.read_result(run)
    assert pretrain.status == finetune.status == "done"
    assert pretrain.best_val_loss == pytest.approx(reference["pretrain"].best_val_loss, abs=1e-6)
    assert finetune.best_val_loss == pytest.approx(reference["finetune"].best_val_loss, abs=1e-6)
    assert val_steps(folder) == [10, 20]
    assert temp_files(tmp_path) == [] and not (folder / "checkpoints").exists()


# --- kill during a results write -------------------------------------------------------------------

@pytest.fixture(scope="module")
def killed_in_results_write(reference, tmp_path_factory, data_dir, cache_dir):
    """A finetune killed while writing its final results.json, then the same command again."""
    from transfer_lab.study.job import run_job

    root = tmp_path_factory.mktemp("killed_results")
    real_write = records.atomic_write_text
    state = {}

    def dying_write(path, text):
        path = Path(path)
        if path.name == records.RESULTS_FILE and '"status": "done"' in text and path.parent.name.startswith("finetune"):
            state["before_kill"] = path.read_bytes()
            (path.parent / f".{path.name}.k1ll3d.tmp").write_text(text[: len(text) // 2])  # mkstemp's torn file
            raise Killed()
        return real_write(path, text)

    pretrained_before = {p: p.read_bytes() for p in reference["pretrained_dir"].rglob("*") if p.is_file()
                         and not p.name.endswith(".lock")}
    cfg = lambda: compose("regime=finetune", "sweep=ref",  # noqa: E731
                          *paths(root, data_dir, cache_dir, pretrained_dir=reference["pretrained_dir"]))
    records.atomic_write_text = dying_write
    try:
        with pytest.raises(Killed):
            run_job(cfg())
    finally:
        records.atomic_write_text = real_write
    (run,) = run_folders(root, "ref").values()
    state["after_kill"] = (run / records.RESULTS_FILE).read_bytes()
    state["outcome"] = run_job(cfg())
    state.update(root=root, run=run, pretrained_before=pretrained_before)
    return state


@pytest.mark.trains
@pytest.mark.subprocess
def test_kill_during_results_write_keeps_the_previous_record(reference, killed_in_results_write):
    from transfer_lab.analysis import collect_local

    state = killed_in_results_write
    assert state["after_kill"] == state["before_kill"], "the record on disk must be the previous, whole one"
    assert json.loads(state["after_kill"])["status"] == "running"
    assert state["outcome"] == "done"
    result = records.read_result(state["run"])
    assert result.status == "done" and result.best_val_loss == pytest.approx(reference["finetune"].best_val_loss,
                                                                             abs=1e-6)
    assert result.pretrain_key == reference["pretrain"].run_key
    assert val_steps(state["run"]) == reference["finetune_val_steps"]  # the curve of the uninterrupted run, once
    table = collect_local(state["root"], "ref").table
    assert len(table) == 1 and table["run_key"].is_unique, "a row was duplicated or lost"
    for path, data in state["pretrained_before"].items():  # the shared pre-trained model was only read
        assert path.read_bytes() == data


@pytest.mark.trains
@pytest.mark.subprocess
def test_no_temp_file_survives_the_rerun_after_a_results_kill(killed_in_results_write):
    assert temp_files(killed_in_results_write["root"]) == []


# --- two jobs need the same pre-trained model at once ----------------------------------------------

@pytest.mark.subprocess
def test_two_jobs_needing_one_pretrained_model_train_it_once(tmp_path, data_dir, cache_dir):
    """Two launches of train.py that fine-tune from the same pre-training, at once.

    The test holds the pre-training's lock until both jobs are blocked on it, so they surely
    overlap; then exactly one pre-trains and the other waits for it and reuses the model."""
    from filelock import FileLock

    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import pretrain_key

    out = tmp_path / "out"
    common = ["regime=finetune", "sweep=pair", "optim.max_steps=10", *paths(out, data_dir, cache_dir)]
    key = pretrain_key(identity_of(compose(*common)))
    (out / "pretrained").mkdir(parents=True)
    lock = FileLock(str(out / "pretrained" / key) + ".lock")
    logs = [tmp_path / f"job_{d_f}.log" for d_f in ("1e4", "2e4")]
    lock.acquire()
    try:
        procs = [subprocess.Popen(train_command(*common, f"data.finetune_chars={d_f}", "hydra.verbose=filelock",
                                                f"hydra.run.dir={tmp_path / f'hydra_{d_f}'}"),
                                  cwd=ROOT, env=subprocess_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
                 for d_f, log in zip(("1e4", "2e4"), logs)]
        deadline = time.time() + 300
        while not all(f"{key}.lock, waiting" in log.read_text() for log in logs):
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                "the jobs never both waited on the pre-training lock: " + logs[0].read_text()[-1500:]
            time.sleep(0.1)
    finally:
        lock.release()
    for proc in procs:
        proc.wait(timeout=600)
    outputs = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    (folder,) = [p for p in (out / "pretrained").iterdir() if p.is_dir()]
    assert folder.name == key
    assert (folder / "model" / "model.safetensors").exists() and not (folder / "checkpoints").exists()
    assert sum(f"pre-training {key}" in o for o in outputs) == 1, "exactly one job pre-trains, the other reuses"
    steps = val_steps(folder)
    assert steps == sorted(set(steps)) and len(steps) >= 2, f"the pre-training metrics show more than one run: {steps}"
    pretrain = records.read_result(folder)
    runs = [records.read_result(p) for p in run_folders(out, "pair").values()]
    assert len(runs) == 2 and all(r.status == "done" and r.pretrain_key == key for r in runs)
    assert all(r.pretrain_tokens == pretrain.pretrain_tokens for r in runs)
    assert temp_files(out) == []


# --- diverging runs ----------------------------------------------------------------------------------

@pytest.mark.trains
@pytest.mark.subprocess
def test_diverging_cell_is_stopped_and_marked_and_the_sweep_goes_on(tmp_path, data_dir, cache_dir, monkeypatch):
    from transfer_lab.analysis import collect_local
    from transfer_lab.study.job import run_job
    from transfer_lab.training.lightning_module import CausalLM

    original = CausalLM.training_step

    def explode_at_high_lr(self, batch, batch_idx):  # the lr=2e-2 cell blows up to +inf
        loss = original(self, batch, batch_idx)
        return loss * float("inf") if self.hparams.lr > 1e-2 else loss

    monkeypatch.setattr(CausalLM, "training_step", explode_at_high_lr)
    base = ("regime=scratch", "sweep=div", *paths(tmp_path, data_dir, cache_dir))
    assert run_job(compose(*base, "optim.lr=2e-2")) == "failed"
    assert run_job(compose(*base, "optim.lr=3e-3")) == "done"  # the next cell runs, to its early-stopping point
    results = {r.best_val_loss is None: r for r in map(records.read_result, run_folders(tmp_path, "div").values())}
    bad, good = results[True], results[False]
    assert bad.status == "failed" and bad.stop_reason == "diverged" and re.search("inf|nan", bad.error)
    logged = [r["step"] for r in records.read_metrics(run_folders(tmp_path, "div")[bad.run_key])]
    assert max(logged, default=0) < 30, "a diverged run is stopped, not trained to the end"
    assert good.status == "done" and good.converged and good.stop_reason == "early_stop"
    table = collect_local(tmp_path, "div").table.set_index("run_key")
    assert table.loc[bad.run_key, "excluded"] and "DivergedError" in table.loc[bad.run_key, "reason"]
    assert not table.loc[good.run_key, "excluded"]


@pytest.mark.trains
@pytest.mark.subprocess
def test_nan_first_seen_by_validation_is_marked_diverged(tmp_path, data_dir, cache_dir, monkeypatch):
    from transfer_lab.study.job import run_job
    from transfer_lab.training.lightning_module import CausalLM

    original = CausalLM.training_step

    def nan_from_step_15(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 15 else loss

    monkeypatch.setattr(CausalLM, "training_step", nan_from_step_15)
    # train-loss checks at steps 7, 14, 21, 28; validations at 10, 20, 30: step 20 sees the NaN first
    cfg = compose("regime=scratch", "sweep=nanrun", "trainer.log_every_n_steps=7", *paths(tmp_path, data_dir, cache_dir))
    run_job(cfg)
    (run,) = run_folders(tmp_path, "nanrun").values()
    result = records.read_result(run)
    assert result.stop_reason == "diverged" and result.status == "failed", (result.status, result.stop_reason)


# --- determinism -----------------------------------------------------------------------------------

@pytest.mark.trains
@pytest.mark.subprocess
def test_same_seed_same_config_same_finetune_result(reference, tmp_path, data_dir, cache_dir):
    """Pre-training and fine-tuning again from nothing (CPU, same seed) give the same best losses."""
    from transfer_lab.study.job import run_job

    assert run_job(compose("regime=finetune", "sweep=ref", *paths(tmp_path, data_dir, cache_dir))) == "done"
    (run,) = run_folders(tmp_path, "ref").values()
    again = records.read_result(run)
    assert again.run_key == reference["finetune"].run_key
    assert again.best_val_loss == pytest.approx(reference["finetune"].best_val_loss, abs=1e-6)
    assert again.pretrain_key == reference["pretrain"].run_key


# --- security ----------------------------------------------------------------------------------------

def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + [ROOT / "train.py", ROOT / "analyze.py"]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_source_never_unpickles_evals_or_trusts_remote_code():
    problems = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal", "shelve") for n in names):
                    problems.append(f"{rel}:{node.lineno} imports a pickle module")
        for node, owner, name in _calls(tree):
            where = f"{rel}:{node.lineno}"
            kwargs = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec") and owner == "":
                problems.append(f"{where} calls {name}()")
            if owner == "torch" and name == "load":
                flag = kwargs.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where} torch.load without weights_only=True")
            if name in ("load", "unsafe_load", "full_load") and owner == "yaml":
                problems.append(f"{where} yaml.{name} (use yaml.safe_load)")
            if name in ("read_pickle", "loads") and owner in ("pd", "pandas", "pickle"):
                problems.append(f"{where} {owner}.{name}")
            if "allow_pickle" in kwargs and not (isinstance(kwargs["allow_pickle"], ast.Constant)
                                                 and kwargs["allow_pickle"].value is False):
                problems.append(f"{where} allow_pickle")
            if "trust_remote_code" in kwargs and not (isinstance(kwargs["trust_remote_code"], ast.Constant)
                                                      and kwargs["trust_remote_code"].value is False):
                problems.append(f"{where} trust_remote_code is not False")
            if name == "register_new_resolver":
                problems.append(f"{where} registers an OmegaConf resolver (config strings must not run code)")
            if name == "save_pretrained" and not (isinstance(kwargs.get("safe_serialization"), ast.Constant)
                                                  and kwargs["safe_serialization"].value is True):
                problems.append(f"{where} save_pretrained without safe_serialization=True")
            if name == "fit" and "ckpt_path" in kwargs and not (
                    isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True):
                problems.append(f"{where} Trainer.fit(ckpt_path=...) without weights_only=True")
    assert problems == []


def test_no_config_resolver_can_run_code():
    from omegaconf import OmegaConf

    import transfer_lab.analysis.actions  # noqa: F401
    import transfer_lab.study.job  # noqa: F401

    for name in ("eval", "exec", "python", "import", "shell"):
        assert not OmegaConf.has_resolver(name)


class _Payload:
    """Unpickling this object creates `marker`: proof that pickle code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path, data_dir, cache_dir):
    from transfer_lab.study.job import run_job
    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import run_key
    from transfer_lab.training.callbacks import AtomicCheckpointIO

    marker = tmp_path / "pwned"
    cfg = compose("regime=scratch", "sweep=evil", "optim.max_steps=10", *paths(tmp_path / "out", data_dir, cache_dir))
    run_dir = tmp_path / "out" / "sweeps" / "evil" / "runs" / run_key(identity_of(cfg))
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 10, "state_dict": {}, "payload": _Payload(marker)}, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert not marker.exists()
    assert run_job(cfg) == "done"  # the unreadable checkpoint is dropped, the run starts over
    assert not marker.exists()
    assert records.read_result(run_dir).steps == 10


def test_a_pickle_payload_in_a_model_to_fine_tune_never_runs(tmp_path):
    from transfer_lab.training.model import ModelShape, build_gpt2

    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    build_gpt2(ModelShape(n_layer=1, n_embd=32, n_head=2, n_ctx=64, vocab_size=320)).config.save_pretrained(folder)
    torch.save({"payload": _Payload(marker)}, folder / "pytorch_model.bin")
    from transfer_lab.training.lightning_module import CausalLM

    with pytest.raises(Exception):
        CausalLM(shape={}, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.95), warmup_steps=1, horizon_steps=2,
                 min_lr_ratio=0.1, init_from=str(folder))
    assert not marker.exists()


@pytest.mark.subprocess
def test_secrets_never_reach_logs_results_reports_or_saved_config(tmp_path, data_dir, cache_dir):
    # HF_TOKEN in the hub's format (hf_ and 34 letters and digits): a value of that shape is scrubbed under any key
    hf_token = "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))
    secret_values = {"WANDB_API_KEY": secrets.token_hex(20), "HF_TOKEN": hf_token,
                     "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    out = tmp_path / "out"
    proc = subprocess.run(
        train_command("regime=scratch", "sweep=secret", "logger=wandb", "optim.max_steps=10",
                      "+logger.api_key=${oc.env:WANDB_API_KEY}", f"hydra.run.dir={out / 'hydra'}",
                      *paths(out, data_dir, cache_dir),
                      "+note=${oc.env:HF_TOKEN}", "+run_label=${oc.env:WANDB_API_KEY}"),  # keys that name no secret
        cwd=ROOT, env=subprocess_env(**secret_values), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    from transfer_lab.analysis.actions import run_cli

    run_cli(compose(f"paths.output_root={out}", "sweep=secret", "action=collect", config="analyze"))  # its table
    assert (out / "sweeps" / "secret" / "report" / "table.csv").exists()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == records.RESULTS_FILE for p in files) and any("wandb" in p.parts for p in files)
    assert any(p.name == "config.yaml" and ".hydra" in p.parts for p in files)
    leaks = [f"{name} in {where}" for name, value in secret_values.items()
             for where, blob in [(str(p.relative_to(out)), p.read_bytes()) for p in files]
             + [("train stdout/stderr", (proc.stdout + proc.stderr).encode())]
             if value.encode() in blob]
    assert leaks == []
