"""The measured answer a report opens with: every cell's multiplier (D_F + D_T)/D_F with its own
interval, on a synthetic sweep with a known law and measured seed noise: the intervals hold the truth."""

from __future__ import annotations

import analysis_synth as syn
import numpy as np

from transfer_lab.analysis.collect import records_to_table
from transfer_lab.analysis.studies.sweep_analysis import run_analysis

SIZES = (1e5, 1e6, 1e7)
D_FS = (1e4, 3e4, 1e5, 3e5)
NOISE = 0.004


def _runs(seed=2):
    rng = np.random.default_rng(seed)
    out = []
    for n in SIZES:
        for s in range(3):
            for d in np.geomspace(1e4, 1e11, 22):  # dense: D_E is read between neighbouring points
                out.append(syn.result("a", f"sc-{n:.0e}-{d:.2e}-{s}", "scratch", n, d,
                                      float(syn.scratch_loss(n, d) * np.exp(rng.normal(0, NOISE))), seed=s))
            for d in D_FS:
                out.append(syn.result("a", f"ft-{n:.0e}-{d:.0e}-{s}", "finetune", n, d,
                                      float(syn.finetune_loss(n, d) * np.exp(rng.normal(0, NOISE))), seed=s))
    return out


def test_every_measured_multiplier_interval_holds_the_truth():
    res = run_analysis(records_to_table(_runs(), "a"), n_bootstrap=300)
    assert len(res.answer) == len(SIZES) * len(D_FS)
    inside = 0
    for c in res.answer:
        truth = 1 + float(syn.laws.transfer_dt(c["D_F"], c["N"], **syn.TRANSFER)) / c["D_F"]
        assert c["lo"] <= c["multiplier"] <= c["hi"] and c["seeds"] == 3 and c["method"] == "interpolated"
        inside += c["lo"] <= truth <= c["hi"]
        assert abs(np.log(c["multiplier"] / truth)) < 0.5, (c, truth)
    assert inside >= len(res.answer) - 1  # 95% intervals: at most one of twelve may miss
    assert all(c["identified"] for c in res.answer)  # every cell transfers, measurably
