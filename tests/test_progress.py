"""A multirun's progress lines: done/total over every way a job ends (skipped ones count, an
interrupted one does not), the ETA's arithmetic and sources (the cost model of the sweep's records,
this launch's mean, cells an earlier launch finished), and real launches: a two-run multirun, its
resumed launch, and a single run that keeps Lightning's progress bar instead."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SIZE
from run_helpers import paths, run_folders, subprocess_env

from transfer_lab.study import records
from transfer_lab.study.costs import non_embedding_params
from transfer_lab.study.eta import Eta, duration, finish_in
from transfer_lab.study.interrupts import JOB_FILE
from transfer_lab.study.progress import PlannedJob, Progress

SCRATCH = [TEST_SIZE]  # the test-size experiment; each command names its own D and step ceiling
LINE = re.compile(r"^\[(\d+)/(\d+)\] (\w+) (\S+) \((\w+)\)(?: (?:in|after) \S+)?: (.*) \| elapsed \S+, (ETA .*)$")


class Launch:
    """A launch folder written as jobs write it: job files in hydra/<launch>/<n>/, records in runs/."""

    def __init__(self, root: Path, name: str = "L1", jobs: int = 0, regime: str = "scratch"):
        self.root, self.dir = root, root / "hydra" / name
        self.jobs = [PlannedJob(regime, (f"regime={regime}", f"data.finetune_chars={i + 1}e4")) for i in range(jobs)]
        self.lines: list[str] = []
        self.now = 1000.0

    def progress(self, workers: int = 1) -> Progress:
        return Progress(self.dir, self.root / "runs", self.jobs, lambda: workers, write=self.lines.append,
                        clock=lambda: self.now)

    def end(self, index: int, outcome: str | None, *, began: float = 0.0, took: float = 10.0, bits: float = 4.0,
            error: str = "", record: dict | None = None, key: str = "") -> str:
        """Job `index` started at `began`, and ended after `took` with `outcome` (None: still running)."""
        key = key or f"{self.jobs[index].regime}-run{index}"  # a cell's run key: the same in every launch
        run_dir = self.root / "runs" / key
        job = {"pid": 1, "started_at": began, "run_key": key, "run_dir": str(run_dir)}
        if outcome is not None:
            job |= {"outcome": outcome, "error": error, "ended_at": began + took}
        (self.dir / str(index)).mkdir(parents=True, exist_ok=True)
        (self.dir / str(index) / JOB_FILE).write_text(json.dumps(job))
        (self.dir / str(index) / ".hydra").mkdir(exist_ok=True)
        (self.dir / str(index) / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in self.jobs[index].overrides))
        if outcome in ("done", "skipped", "interrupted"):
            run_dir.mkdir(parents=True, exist_ok=True)
            status = "interrupted" if outcome == "interrupted" else "done"
            records.write_result(run_dir, records.RunResult(run_key=key, sweep="s", regime=self.jobs[index].regime,
                                                            status=status, best_val_bits_per_char=bits,
                                                            **(record or {})))
        return key


def parsed(lines: list[str]) -> list[tuple]:
    out = []
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a progress line: {line!r}"
        out.append(match.groups())
    return out


# --- the arithmetic ---------------------------------------------------------------------------------

def test_the_eta_hands_the_queue_in_order_to_the_first_free_worker():
    assert finish_in([], [10, 10, 10], workers=1) == 30
    assert finish_in([], [10, 10, 10], workers=2) == 20
    assert finish_in([4], [10, 10], workers=2) == 14  # the idle worker takes the first, the running one the second
    assert finish_in([], [10], workers=4) == 10  # more workers than jobs: a job still takes its own time
    assert finish_in([3, 7], [], workers=1) == 7  # jobs already running hold their own workers
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 2 * 3600 + 7 * 60 + 20)] == ["0s", "1m00s", "1m01s",
                                                                                   "59m59s", "2h07m"]


# --- done/total ----------------------------------------------------------------------------------

def test_done_over_total_counts_every_job_the_launch_is_through_with_once(tmp_path):
    launch = Launch(tmp_path, jobs=8)
    progress = launch.progress()
    launch.end(0, "skipped", bits=4.25)
    launch.end(1, "skipped")
    done = launch.end(2, "done", took=60, bits=3.5)
    failed = launch.end(3, "failed", took=5, error="scratch-run3: RuntimeError: boom")
    interrupted = launch.end(4, "interrupted", took=30)
    launch.end(5, "not_run")
    launch.end(6, "busy")
    launch.end(7, None)  # still running
    progress.poll()
    rows = parsed(launch.lines)
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "8", "skipped"), ("2", "8", "skipped"), ("3", "8", "done"),
                                                  ("4", "8", "failed"), ("4", "8", "interrupted"), ("5", "8", "busy")]
    assert launch.lines[0].startswith("[1/8] skipped scratch-run0 (scratch): 4.250 bits/char, finished before")
    assert launch.lines[2].startswith(f"[3/8] done {done} (scratch) in 1m00s: 3.500 bits/char |")
    assert launch.lines[3].startswith(f"[4/8] failed {failed} (scratch) after 5s: RuntimeError: boom |")
    assert launch.lines[4].startswith(f"[4/8] interrupted {interrupted} (scratch) after 30s: not counted, the next")

    launch.end(7, "done", took=20)
    progress.poll()
    progress.poll()
    progress.report(7, "done")  # the launcher's word for a job already printed: no second line
    progress.report(5, "not_run")
    assert [(r[0], r[2]) for r in parsed(launch.lines[6:])] == [("6", "done")]
    assert launch.lines[-1].endswith("ETA 0s (nothing left)")


def test_an_outcome_only_the_launcher_returned_gets_its_line_with_the_reason(tmp_path):
    from transfer_lab.study.outcomes import Outcome

    launch = Launch(tmp_path, jobs=2)
    progress = launch.progress()
    launch.end(0, None)  # its file never got the outcome: a full disk
    progress.report(0, Outcome("no_space", "no space left on /full"))
    assert launch.lines[0].startswith("[1/2] failed scratch-run0 (scratch): no space left on /full |")


def test_a_job_slurm_killed_gets_its_failed_line_when_the_launcher_finds_it_gone(tmp_path):
    import time

    from hydra_plugins.transfer_lab_sweeper.slurm_launcher import StudySlurmLauncher

    class Job:  # what the launcher reads of a submitit job SLURM killed
        job_id = "12_0"

    launch = Launch(tmp_path, jobs=2)
    progress = launch.progress(workers=2)
    launch.now = time.time()
    key = launch.end(0, None, began=launch.now - 30)  # it named its run, then the OOM killer ended it
    StudySlurmLauncher()._killed(Job(), ["regime=scratch"], launch.dir / "0", "OUT_OF_MEMORY")
    progress.poll()
    assert len(launch.lines) == 1 and re.match(
        rf"\[1/2\] failed {key} \(scratch\) after 3\ds: the job ended without a result: SLURM state OUT_OF_MEMORY "
        r"\(job 12_0\) \|", launch.lines[0]), launch.lines


# --- the ETA's sources -----------------------------------------------------------------------------

def test_a_resumed_launch_prices_the_cells_an_earlier_launch_finished_as_skips(tmp_path):
    earlier = Launch(tmp_path, "L0", jobs=3)
    earlier.end(0, "done", took=40)
    earlier.end(1, "done", took=40)
    earlier.end(2, "interrupted", took=40)  # not finished: this launch trains it again
    launch = Launch(tmp_path, "L1", jobs=3)
    progress = launch.progress(workers=1)
    launch.end(2, "done", began=0, took=30)  # the one cell left ends first (workers take it before the skips)
    progress.poll()
    assert launch.lines[0].endswith("ETA 0s (2 to skip, finished in an earlier launch)"), launch.lines
    launch.end(0, "skipped", took=3)  # a skip takes what a job takes to start and read its record
    progress.poll()
    assert launch.lines[1].endswith("ETA 3s (1 to skip, finished in an earlier launch)"), launch.lines
    launch.end(1, "skipped")
    progress.poll()
    assert [r[:3] for r in parsed(launch.lines)] == [("1", "3", "done"), ("2", "3", "skipped"), ("3", "3", "skipped")]

    again = Launch(tmp_path, "L2", jobs=3)  # cell 1's record no longer done: trained again, at this launch's mean
    (tmp_path / "runs" / "scratch-run1" / records.RESULTS_FILE).unlink()
    progress = again.progress(workers=1)
    again.end(2, "done", took=30)
    progress.poll()
    assert again.lines[0].endswith("ETA 30s (mean of this launch's 1 trained run; 1 to skip)"), again.lines


def test_the_eta_prices_what_is_left_with_the_cost_model_of_the_sweeps_records(tmp_path):
    """Records that follow a known cost law: the ETA is that law's price of the jobs left."""
    def seconds_per_token(n):
        return 2e-9 * n ** 0.8

    def tokens(d, n):
        return 30.0 * d ** 0.7 * n ** 0.1

    shapes = [(1, 32), (2, 32), (2, 64)]
    earlier = Launch(tmp_path, "L0", jobs=6)
    for i, (shape, d) in enumerate(zip(shapes * 2, [1e4, 3e4, 1e5, 3e5, 1e4, 1e5])):
        n = non_embedding_params(*shape)
        t = tokens(d, n)
        earlier.end(i, "done", record={"non_embedding_params": int(n), "finetune_chars": int(d), "tokens_seen": int(t),
                                       "wall_time_s": seconds_per_token(int(n)) * int(t)})
    big, small = non_embedding_params(4, 128), non_embedding_params(1, 32)
    launch = Launch(tmp_path, "L1")
    launch.jobs = [PlannedJob("scratch", ("a",), n=small, d=2e4), PlannedJob("scratch", ("b",), n=big, d=3e5),
                   PlannedJob("pretrain", ("c",), n=big, pretrain_tokens=1e7),
                   PlannedJob("finetune", ("d",), n=big, d=1e4)]
    eta = Eta(launch.dir, tmp_path / "runs", launch.jobs)
    price, source = eta.price(1)
    # records keep whole tokens: the law comes back to 1e-4
    assert source == "model" and price == pytest.approx(seconds_per_token(big) * tokens(3e5, big), rel=1e-4)
    price, source = eta.price(2)
    assert source == "model" and price == pytest.approx(seconds_per_token(big) * 1e7, rel=1e-4)
    assert eta.price(3) is None, "no fine-tune recorded, none timed: nothing prices it"
    eta.timed("done", "scratch", 12.0, None)
    eta.timed("done", "scratch", 18.0, None)
    assert eta.price(3) == (15.0, "launch"), "no fine-tune timed yet: the mean of this launch's jobs"

    progress = launch.progress(workers=2)
    launch.now = 1000.0 + 100
    t = int(tokens(2e4, small))
    launch.end(0, "done", began=1000.0, took=100, key="scratch-new", record={
        "non_embedding_params": int(small), "finetune_chars": 20000, "tokens_seen": t,
        "wall_time_s": seconds_per_token(int(small)) * t})
    progress.poll()
    # the job took 100 s, its training less: the rest (starting, loading data) is added to what the model prices;
    # the fine-tune, which the cost model cannot price yet, goes at this launch's one run (100 s); two workers
    overhead = 100 - seconds_per_token(int(small)) * t
    priced = [seconds_per_token(big) * tokens(3e5, big) + overhead, seconds_per_token(big) * 1e7 + overhead, 100.0]
    left = finish_in([], priced, 2)
    assert launch.lines[0].endswith(f"ETA {duration(left)} (cost model of 7 runs; 1 job at the mean of this launch's "
                                    "1 trained run)"), launch.lines


def test_the_workers_are_the_launchers_own_count():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from hydra_plugins.transfer_lab_sweeper.study_sweeper import workers

    class Joblib:
        def __init__(self, n_jobs):
            self.joblib = {"n_jobs": n_jobs}

    class Slurm:
        params = {"array_parallelism": 32, "partition": "cpu"}

    assert workers(BasicLauncher()) == 1
    assert workers(Joblib(2)) == 2
    assert workers(Joblib(-1)) == os.cpu_count()  # joblib's every core
    assert workers(Joblib(None)) == 1  # the per-device launcher before it counted its devices
    assert workers(Slurm()) == 32


# --- real launches -------------------------------------------------------------------------------

def _lines(stdout: str) -> list[tuple]:
    """Every progress line of a launch's output, each checked whole (Hydra's log lines start `[2026-`)."""
    return parsed([line for line in stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)])


@pytest.mark.subprocess
def test_a_two_run_multirun_prints_a_line_per_run_and_its_resumed_launch_counts_the_skipped(tmp_path, data_dir,
                                                                                              cache_dir):
    out = tmp_path / "out"
    # 400 steps ≈ 4.5 s a run at 55k tokens/s, well past the line's one-second poll (80 steps took 0.9 s once the
    # corpora were prepared: the two runs could end inside one poll, and [1/2] then had nothing left to price)
    cmd = [sys.executable, "train.py", "-m", *SCRATCH, "regime=scratch", "optim.max_steps=400", "threads=1",
           "hydra/launcher=joblib_cpu", "sweep=p", *paths(out, data_dir, cache_dir)]
    # one joblib worker: the second run is still to come when the first ends, so [1/2] has an ETA to price
    first = subprocess.run(cmd + ["data.finetune_chars=1e4,2e4", "hydra.launcher.n_jobs=1"], cwd=ROOT,
                           env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    rows = _lines(first.stdout)
    assert [r[:3] for r in rows] == [("1", "2", "done"), ("2", "2", "done")], first.stdout
    assert re.fullmatch(r"ETA \d+s \(mean of this launch's 1 trained run\)", rows[0][-1]), rows[0]
    assert rows[1][-1] == "ETA 0s (nothing left)"
    runs = {key: records.read_result(folder) for key, folder in run_folders(out, "p").items()}
    assert {r[3] for r in rows} == set(runs)
    assert all(r[5] == f"{runs[r[3]].best_val_bits_per_char:.3f} bits/char" for r in rows), rows
    summary = first.stdout.splitlines().index(f"sweep p: 2 done, 0 skipped, 0 failed (records in {out}/sweeps/p/runs)")
    assert all(first.stdout.splitlines().index(line) < summary for line in first.stdout.splitlines()
               if line.startswith(("[1/2]", "[2/2]")))

    # the same sweep with one cell more, on two workers: the two finished runs are skipped, and counted, once each
    again = subprocess.run(cmd + ["data.finetune_chars=1e4,2e4,3e4"], cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    rows = _lines(again.stdout)
    assert [r[:2] for r in rows] == [("1", "3"), ("2", "3"), ("3", "3")], again.stdout
    assert sorted(r[2] for r in rows) == ["done", "skipped", "skipped"]
    skipped = [r for r in rows if r[2] == "skipped"]
    assert {r[3] for r in skipped} == set(runs)
    assert all(r[5] == f"{runs[r[3]].best_val_bits_per_char:.3f} bits/char, finished before this launch"
               for r in skipped)
    assert rows[-1][-1] == "ETA 0s (nothing left)"
    assert "sweep p: 1 done, 2 skipped, 0 failed" in again.stdout


def _on_a_terminal(cmd: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run `cmd` with a pseudo-terminal as stdout and stderr (Lightning draws its bar only there)."""
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.subprocess
def test_a_single_run_keeps_lightnings_bar_and_a_basic_multirun_prints_lines_instead(tmp_path, data_dir, cache_dir):
    base = [sys.executable, "train.py", *SCRATCH, "regime=scratch", "data.finetune_chars=1e4", "optim.max_steps=40",
            "threads=1", *paths(tmp_path / "out", data_dir, cache_dir)]
    code, single = _on_a_terminal(base + ["sweep=one"])
    assert code == 0, single[-3000:]
    assert "Epoch 0" in single and "it/s" in single, single[-3000:]
    assert not re.search(r"^\[\d+/\d+\] ", single, re.MULTILINE), "a single run prints no progress line"
    # the basic launcher runs the job in the launching process: its thread prints the line (joblib's: above)
    code, multi = _on_a_terminal(base[:2] + ["-m"] + base[2:] + ["sweep=many", "hydra/launcher=basic"])
    assert code == 0, multi[-3000:]
    assert re.search(r"^\[1/1\] done \S+ \(scratch\) in \d+s: [\d.]+ bits/char \| elapsed \S+, ETA 0s", multi,
                     re.MULTILINE), multi[-3000:]
    assert "Epoch 0" not in multi and "it/s" not in multi, "the lines replace the bars of parallel jobs"
