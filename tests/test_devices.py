"""Several devices: `trainer.devices>1` ends in one line naming the command that uses them (one job
per device), the per-device launcher gives each job a device of its own (at most k per device), and
SIGTERM stops a multi-device launch as it stops a single one. Devices are faked on CPU
(hydra.launcher.devices=N): each worker's CUDA_VISIBLE_DEVICES is set, training stays on the CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT
from run_helpers import paths, run_folders, subprocess_env, train_command

from transfer_lab.errors import ConfigError
from transfer_lab.study import devices, records
from transfer_lab.study.interrupts import JOB_FILE

# the command of issue 26 that hung until SIGKILL
ISSUE_ARGV = ["-m", "experiment=smoke", "threads=1", "regime=scratch", "model.n_layer=1", "data.finetune_chars=1e4",
              "optim.max_steps=40", "hydra/launcher=basic", "trainer.devices=2"]


@pytest.mark.parametrize("asked", ["2", "'2'", "auto", "-1", "[0,1]", "'0,1'", "0"])
def test_more_or_fewer_than_one_device_is_one_config_error_naming_the_per_device_launcher(asked, compose_cfg):
    from transfer_lab.study.validate import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg(f"trainer.devices={asked}"))
    message = str(err.value)
    assert "\n" not in message and "trainer.devices=" in message
    if asked != "0":
        assert "hydra/launcher=per_device" in message and "trainer.devices=1" in message


@pytest.mark.parametrize("asked", [1, "1", [3], "0,"])
def test_one_device_is_accepted_and_several_nodes_are_not(asked):
    devices.check_one_device(asked, None)
    with pytest.raises(ConfigError, match="trainer.num_nodes=2"):
        devices.check_one_device(asked, 2)


def test_the_refusal_names_the_users_own_command_with_one_job_per_device():
    command = devices.per_device_command(ISSUE_ARGV, devices.devices_asked(2), devices_from_argv=True)
    assert command == ("python train.py -m experiment=smoke threads=1 regime=scratch model.n_layer=1 "
                       "data.finetune_chars=1e4 optim.max_steps=40 hydra/launcher=per_device hydra.launcher.devices=2")
    # devices set by an experiment, not the command line: set back to 1 explicitly; "auto": every GPU
    command = devices.per_device_command(["experiment=x"], devices.devices_asked("auto"), devices_from_argv=False)
    assert command == "python train.py -m experiment=x trainer.devices=1 hydra/launcher=per_device"


def test_a_process_started_as_one_rank_of_several_stops_in_one_line():
    devices.check_single_process({"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    for name in devices.RANK_VARIABLES:
        with pytest.raises(ConfigError, match=f"{name}=2 ranks"):
            devices.check_single_process({name: "2"})


def test_workers_spread_over_the_devices_before_packing_and_never_share_a_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    visible, k = ["4", "5", "6", "7"], 2
    held = []
    for _ in range(len(visible) * k):  # one claim per simulated worker: each forgets the others' slots
        monkeypatch.setattr(devices, "_held", [])
        held.append(devices.claim_slot(tmp_path, visible, k))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == held[-1].visible
    assert [s.visible for s in held[:4]] == visible, "first one worker per device"
    assert sorted(s.visible for s in held) == sorted(visible * k)
    assert len({(s.device, s.place) for s in held}) == len(held)
    assert devices.claim_slot(tmp_path, visible, k) is held[-1], "a worker keeps its slot for its life"
    monkeypatch.setattr(devices, "_held", [])
    with pytest.raises(RuntimeError, match="no free device slot"):
        devices.claim_slot(tmp_path, visible, k, wait_s=0.2)
    held[5].lock.release()  # a worker died: its replacement takes the slot over
    assert devices.claim_slot(tmp_path, visible, k, wait_s=0.2).visible == held[5].visible


def test_the_launcher_counts_visible_gpus_or_fakes_them_on_a_cpu_machine(monkeypatch):
    from hydra_plugins.transfer_lab_sweeper.device_launcher import visible_devices

    assert visible_devices(None, {"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert visible_devices(1, {"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2"]
    with pytest.raises(ConfigError, match="2 GPUs are visible"):
        visible_devices(3, {"CUDA_VISIBLE_DEVICES": "2,5"})
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert visible_devices(3, {}) == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="hydra.launcher.devices=N"):
        visible_devices(None, {})


@pytest.mark.parametrize("settings, names", [({"devices": 2, "jobs_per_device": 0}, "jobs_per_device=0"),
                                             ({"devices": 2, "jobs_per_device": 2, "n_jobs": 3}, "n_jobs=3"),
                                             ({"devices": 0}, "devices=0")])
def test_bad_per_device_settings_stop_the_launch_in_one_line(settings, names, monkeypatch, capsys):
    from hydra_plugins.transfer_lab_sweeper.device_launcher import PerDeviceLauncher

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(SystemExit) as stop:
        PerDeviceLauncher(**settings).launch([["regime=scratch"]], initial_job_idx=0)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: hydra.launcher.") and names in line


@pytest.mark.subprocess
def test_the_issues_devices_2_command_ends_at_once_with_one_line(tmp_path):
    proc = subprocess.run(train_command(*ISSUE_ARGV, f"paths.output_root={tmp_path}"), cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: trainer.devices=2 ") and line.endswith(
        f"optim.max_steps=40 paths.output_root={tmp_path} hydra/launcher=per_device hydra.launcher.devices=2")
    assert not (tmp_path / "sweeps").exists(), "refused before Hydra made a launch folder"


def _jobs(out: Path, sweep: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "sweeps" / sweep / "hydra").glob(f"*/*/{JOB_FILE}"))]


@pytest.mark.subprocess
@pytest.mark.trains
def test_each_job_gets_its_own_device_and_sigterm_stops_the_launch_as_it_stops_a_single_one(tmp_path, data_dir,
                                                                                            cache_dir):
    out = tmp_path / "out"
    cmd = train_command("-m", "regime=scratch", "data.finetune_chars=1e4,2e4,3e4", "optim.max_steps=400",
                        "optim.patience=50", "threads=1", "sweep=sig", "hydra/launcher=per_device",
                        "hydra.launcher.devices=2", *paths(out, data_dir, cache_dir))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    runs = out / "sweeps" / "sig" / "runs"
    deadline = time.time() + 300
    while len(list(runs.glob("*/checkpoints/last.ckpt"))) < 2:  # two workers, one per device, are training
        assert proc.poll() is None and time.time() < deadline, "both devices should be training"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, text[-3000:]
    summary = [line for line in text.splitlines() if line.startswith("sweep sig:")]
    assert summary == [f"sweep sig: 0 done, 0 skipped, 0 failed, 2 interrupted, 1 not run (records in {runs}); "
                       "stopped by SIGTERM"], text[-3000:]
    # the per-device launcher prints what the others do: a line per stopped job, not counted
    lines = [line for line in text.splitlines() if re.match(r"\[\d/3\] ", line)]
    assert len(lines) == 2 and all(line.startswith("[0/3] interrupted scratch-") for line in lines), text[-3000:]
    folders = list(run_folders(out, "sig").values())
    assert len(folders) == 2 and all(records.read_result(p).status == "interrupted" for p in folders)
    assert all((p / "checkpoints" / "last.ckpt").exists() for p in folders)
    jobs = [j for j in _jobs(out, "sig") if "run_key" in j]
    assert len(jobs) == 2 and all(j["outcome"] == "interrupted" and j["pid"] == j["worker"] for j in jobs)
    assert sorted(j["device"] for j in jobs) == ["0", "1"], "each running job on a device of its own"
    time.sleep(1)
    alive = [j["worker"] for j in jobs if Path(f"/proc/{j['worker']}").exists()]
    assert not alive, f"workers {alive} outlived the launch"
