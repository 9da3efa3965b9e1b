"""Run keys did not move with the code: every shipped experiment's cells keep the keys (and
lineages and pre-training keys) recorded by the code before the layout move (commit 5015c86),
so an outputs/ folder from before is reused, not retrained. The four *_hub experiments were
recorded again when their corpora were replaced (OSCAR and OpenWebText2 by FineWeb-2 and
OpenWebText): they name other datasets, so they are other runs. The demo was recorded again when it
was redesigned (other sizes and budget: other runs); no study inherits from it any more."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose

FIXTURE = Path(__file__).parent / "data" / "run_keys.json"
BASES = {"cpu_base"}  # settings other experiments start from; not launched on their own, so no cells
TEST_ONLY = {"tiny_test"}  # the test suite's size (conftest.TEST_SIZE): its runs live in temp folders, no key to keep


def _cells(experiment: str) -> list:
    """The cells `python train.py -m experiment=EXPERIMENT` plans (the sweeper's own planning)."""
    from omegaconf import OmegaConf

    from transfer_lab.study import protocol

    params = OmegaConf.to_container(compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params) or {}
    lines = protocol.experiment_params(params, [f"experiment={experiment}"]) + [f"experiment={experiment}"]
    return protocol.expand(protocol.sweep_dimensions(lines))


def _sample(rows: list[dict], experiment: str) -> list[dict]:
    """One cell of each regime per experiment, a different place in each experiment's list (the whole
    list is planned and compared; composing all 660 cells would take minutes)."""
    out = []
    for regime in ("pretrain", "scratch", "finetune"):
        cells = [r for r in rows if f"regime={regime}" in r["overrides"]]
        if cells:
            out.append(cells[zlib.crc32(f"{experiment}/{regime}".encode()) % len(cells)])
    return out


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


def test_every_shipped_experiment_is_recorded(recorded):
    shipped = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if p.stem not in BASES | TEST_ONLY)
    missing = [e for e in shipped if e not in recorded]
    assert not missing, f"experiments without recorded keys: {missing} (a new experiment has no keys to keep)"


def test_cells_and_keys_are_unchanged(recorded):
    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import pretrain_key, run_key, run_lineage

    changed = []
    for experiment, rows in sorted(recorded.items()):
        cells = [c.overrides for c in _cells(experiment)]
        assert cells == [r["overrides"] for r in rows], f"{experiment}: the protocol plans other cells"
        for row in _sample(rows, experiment):
            identity = identity_of(compose(*row["overrides"], test_size=False))
            now = {"run_key": run_key(identity)}
            if "lineage" in row:
                now["lineage"] = run_lineage(identity)
            if "pretrain_key" in row:
                now["pretrain_key"] = pretrain_key(identity)
            if now != {k: row[k] for k in now}:
                changed.append(f"{experiment} [{' '.join(row['overrides'])}]: {now}")
    assert not changed, f"{len(changed)} cells changed key: " + "; ".join(changed[:3])


def record(experiments: list[str]) -> None:
    """Add new experiments' cells and keys to the fixture (the current code's keys, from now on kept):
    python tests/test_run_keys.py EXPERIMENT..."""
    from transfer_lab.study.job_settings import identity_of
    from transfer_lab.study.keys import pretrain_key, run_key, run_lineage

    fixture = json.loads(FIXTURE.read_text())
    for experiment in experiments:
        rows = []
        for cell in _cells(experiment):
            identity = identity_of(compose(*cell.overrides, test_size=False))
            row = {"overrides": cell.overrides, "run_key": run_key(identity)}
            if cell.regime != "pretrain":
                row["lineage"] = run_lineage(identity)
            if cell.regime != "scratch":
                row["pretrain_key"] = pretrain_key(identity)
            rows.append(row)
        fixture[experiment] = rows
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import sys
    record(sys.argv[1:])
