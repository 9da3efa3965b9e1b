"""Analysis output is all new or all old: a report set is written into a staging folder and moved
into place whole. Driven for real: SIGTERM and SIGINT at several moments of a running analyze.py, and
a full disk under the report folder; each ends in one line and leaves the last complete report set."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import analysis_synth as syn
import pytest
from conftest import ROOT, fill

pytestmark = pytest.mark.subprocess
SET = ("report.md", "report.html", "fits.json")  # what a new fit seed changes, together


def _analyze(root, report, *extra):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, str(ROOT / "analyze.py"), f"paths.output_root={root}", "sweep=synth",
                             f"paths.report_dir={report}", "fit.n_bootstrap=200", "pdf=false", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    syn.make_sweep(root, noise=0.003)
    return root


def test_a_stop_at_any_moment_leaves_the_old_set_or_the_new_one_whole(sweep, tmp_path):
    report = tmp_path / "rep"
    started = time.monotonic()
    first = _analyze(sweep, report)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    full = time.monotonic() - started  # what each stopped run below would take whole (seed 1 costs the same)
    old = _digests(report)
    outcomes = set()
    for fraction, sig in ((0.35, signal.SIGTERM), (0.7, signal.SIGINT), (0.92, signal.SIGTERM)):
        proc = _analyze(sweep, report, "fit.seed=1")
        time.sleep(full * fraction)
        proc.send_signal(sig)
        rc = proc.wait(timeout=600)
        err = proc.stderr.read().strip().splitlines()
        now = _digests(report)
        changed = {name for name in SET if now.get(name) != old.get(name)}
        assert changed in (set(), set(SET)), f"a torn report set: {changed} changed, the rest did not"
        assert set(now) >= set(old) and not list(report.glob(".staging-*"))
        if rc:
            assert rc == 128 + sig and len(err) == 1 and err[0].startswith("interrupted:"), (rc, err)
            outcomes.add("stopped")
        old = now
    assert "stopped" in outcomes  # at least one signal landed while it worked


def test_a_full_disk_is_one_line_and_the_last_report_set_stays(sweep, small_disk):
    report = small_disk / "rep"
    first = _analyze(sweep, report)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    old = _digests(report)
    filler = fill(small_disk)
    try:
        again = _analyze(sweep, report, "fit.seed=2")
        rc, err = again.wait(timeout=600), again.stderr.read().strip().splitlines()
    finally:
        filler.unlink()
    assert rc == 2 and len(err) == 1 and "no space left" in err[0] and str(report) in err[0], err
    assert _digests(report) == old and not list(report.glob(".staging-*"))
