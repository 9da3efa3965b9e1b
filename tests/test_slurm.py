"""The SLURM launcher on a real one-node cluster (tools/slurm_cluster.sh: munge, MariaDB, slurmdbd,
slurmctld, slurmd from Debian's packages), through hydra/launcher=slurm:

  a small multirun: the summary line, a progress line per job as it ends, the run records and sacct's states;
  jobs killed from outside, gracefully (scancel: the run stops at a step and keeps its checkpoint)
  and outright (SIGKILL to the job's process, as the kernel's OOM killer does: the run is recorded
  failed with SLURM's state and the job id): the sweep still ends with its summary and loses nothing;
  the same command again: finished runs are skipped, the killed ones trained (resumed) to the end.

Needs root (the daemons) and SLURM installed (`tools/slurm_cluster.sh install`; .ci/run does it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT
from run_helpers import paths, run_folders, subprocess_env, train_command

from transfer_lab.study import records
from transfer_lab.study.interrupts import JOB_FILE

pytestmark = [pytest.mark.subprocess, pytest.mark.network, pytest.mark.trains]  # a SLURM cluster runs the sweep
CLUSTER = ROOT / "tools" / "slurm_cluster.sh"
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "hydra.launcher.timeout_min=30"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts system daemons: it needs root")
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed: run `tools/slurm_cluster.sh install` as root (.ci/run does)")
    state = Path(tempfile.mkdtemp(prefix="transfer_lab_slurm_"))  # not under pytest's 0700 folders: the
    state.chmod(0o755)  # daemons' own users (mysql, munge) must reach it
    env = {**os.environ, "SLURM_STATE": str(state)}
    started = subprocess.run([str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**subprocess_env(), "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, timeout=120)
        alive = [p for p in ("run/slurmd.pid", "run/slurmctld.pid", "run/slurmdbd.pid", "mysql-run/mariadbd.pid")
                 if (state / p).exists() and _alive(int((state / p).read_text()))]
        shutil.copytree(state / "log", tmp_path_factory.mktemp("slurm-logs"), dirs_exist_ok=True)  # for a post-mortem
        shutil.rmtree(state, ignore_errors=True)
        assert not alive, f"daemons still running after stop: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _sacct(env, array: str, settle_s: float = 120.0) -> dict[str, str]:
    """{task: state} from accounting, once no task is still running (results land before SLURM
    closes a job: its step and epilogue end a moment later)."""
    deadline = time.time() + settle_s
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,State"], env=env,
                             capture_output=True, text=True, timeout=60).stdout
        states = dict(line.split("|")[:2] for line in out.splitlines() if line.strip())
        if not any(s in ("RUNNING", "PENDING", "COMPLETING") for s in states.values()) or time.time() > deadline:
            return {task: state.split()[0] for task, state in states.items()}  # "CANCELLED by 0": CANCELLED
        time.sleep(1)


def _launch_dir(out: Path, sweep: str) -> Path:
    return max((out / "sweeps" / sweep / "hydra").iterdir(), key=lambda p: p.stat().st_mtime)


def _task_of(launch: Path, run_dir: Path) -> int:
    for pointer in launch.glob(f"*/{JOB_FILE}"):
        if json.loads(pointer.read_text())["run_dir"] == str(run_dir):
            return int(pointer.parent.name)
    raise AssertionError(f"no job names {run_dir}")


def _array_id(launch: Path) -> str:
    ids = {p.name.split("_")[0] for p in (launch / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)}
    assert len(ids) == 1, ids
    return ids.pop()


def test_a_multirun_on_slurm_survives_killed_jobs_and_the_rerun_resumes_them(slurm, tmp_path, data_dir, cache_dir):
    out = tmp_path / "out"
    base = train_command("-m", *LAUNCHER, "regime=scratch", *paths(out, data_dir, cache_dir))

    # three cells that train for a while; two are killed from outside once they have a checkpoint, the
    # third finishes (COMPLETED in SLURM's accounting)
    cmd = base + ["sweep=killed", "data.finetune_chars=1e4,2e4,3e4", "optim.max_steps=3000", "optim.patience=20",
                  "hydra.launcher.array_parallelism=3"]
    # `with` kills the launcher if an assertion fails first: a launcher left polling a stopped cluster
    # would outlive the test
    with subprocess.Popen(cmd, cwd=ROOT, env=slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        try:
            runs = out / "sweeps" / "killed" / "runs"
            deadline = time.time() + 600
            while time.time() < deadline and len(list(runs.glob("*/checkpoints/last.ckpt"))) < 2:
                assert proc.poll() is None, proc.communicate()[0][-4000:]
                time.sleep(0.5)
            graceful, hard = sorted(p.parents[1] for p in runs.glob("*/checkpoints/last.ckpt"))[:2]
            launch = _launch_dir(out, "killed")
            array = _array_id(launch)
            subprocess.run(["scancel", f"{array}_{_task_of(launch, graceful)}"], env=slurm, check=True)
            os.kill(json.loads((launch / str(_task_of(launch, hard)) / JOB_FILE).read_text())["pid"], signal.SIGKILL)
            text, _ = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, text[-4000:]  # a job failed: the launch says so
    assert "sweep killed: 1 done, 0 skipped, 1 failed, 1 interrupted" in text, text[-4000:]
    assert "1 failed: " in text and "the job ended without a result: SLURM state" in text, text[-4000:]
    # a line per job as SLURM finishes it, as on one machine: the done and the killed one count, the stopped one not
    lines = [line for line in text.splitlines() if re.match(r"\[\d/3\] ", line)]
    counted = [line for line in lines if line.split()[1] != "interrupted"]
    assert [line[:5] for line in counted] == ["[1/3]", "[2/3]"], text[-4000:]
    assert sorted(line.split()[1] for line in counted) == ["done", "failed"] and all(" ETA " in line for line in lines)
    (killed_line,) = [line for line in counted if line.split()[1] == "failed"]
    (stopped_line,) = [line for line in lines if line.split()[1] == "interrupted"]
    assert killed_line.split()[2] == hard.name and "SLURM state" in killed_line, killed_line
    assert stopped_line.split()[2] == graceful.name and "not counted" in stopped_line, stopped_line
    stopped, killed = records.read_result(graceful), records.read_result(hard)
    assert stopped.status == "interrupted" and "SIGTERM" in stopped.error
    assert (graceful / "checkpoints" / "last.ckpt").exists()
    assert killed.status == "failed" and "ended without a result: SLURM state" in killed.error
    assert f"(job {array}_{_task_of(launch, hard)})" in killed.error
    states = _sacct(slurm, array)
    assert states[f"{array}_{_task_of(launch, graceful)}"] == "CANCELLED"
    assert states[f"{array}_{_task_of(launch, hard)}"] not in ("COMPLETED", "CANCELLED"), states
    assert sorted(states.values()).count("COMPLETED") == 1, states
    done_before = {p: (p / records.RESULTS_FILE).read_bytes() for p in run_folders(out, "killed").values()
                   if records.read_result(p).status == "done"}

    # the same command: the finished run is skipped, the two killed ones resume and finish
    again = subprocess.run(cmd, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "sweep killed: 2 done, 1 skipped, 0 failed" in again.stdout
    lines = [line for line in again.stdout.splitlines() if re.match(r"\[\d/3\] ", line)]
    assert [line[:5] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"], again.stdout[-4000:]
    assert sorted(line.split()[1] for line in lines) == ["done", "done", "skipped"]
    assert all(records.read_result(p).status == "done" for p in run_folders(out, "killed").values())
    assert all((p / records.RESULTS_FILE).read_bytes() == data for p, data in done_before.items())


def test_a_submission_slurm_rejects_is_one_line(slurm, tmp_path, data_dir, cache_dir):
    cmd = train_command("-m", *LAUNCHER, "hydra.launcher.partition=no_such_partition", "regime=scratch",
                        "sweep=rejected", *paths(tmp_path / "out", data_dir, cache_dir))
    done = subprocess.run(cmd, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SLURM refused the submission" in errors[0] and "partition" in errors[0]
    assert "Traceback" not in done.stderr
