"""A sweep with several pre-training budgets and repeated seeds (synthetic, from known laws): the
budget axis, per-budget laws, the transfer gap and the better buy, predictions checked on held-out
runs, and seed noise measured per regime and size (used by the bootstrap and the monotone check)."""

from __future__ import annotations

import analysis_synth as syn
import numpy as np
import pytest

from transfer_lab.analysis.collect import records_to_table
from transfer_lab.analysis.fit import checks
from transfer_lab.analysis.report.sweep_report import write_report
from transfer_lab.analysis.studies.sweep_analysis import run_analysis


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = tmp_path_factory.mktemp("budgets")
    res = run_analysis(records_to_table(syn.make_budget_runs(), "budgets"), n_bootstrap=100)
    write_report(res, out, html=False, make_plots=True, pdf=False)
    return res, (out / "report.md").read_text(), out


def test_each_budget_gets_its_own_laws_and_transfer_grows_with_the_budget(analysed):
    res, text, _ = analysed
    study = res.budgets
    assert study.budgets == [1e7, 3e7, 1e8, 3e8]
    assert all(entry["transfer"].ok and entry["unified"].ok for entry in study.per_budget)
    # k, α and β trade off on 15 points a budget: the truth's α and β lie inside the intervals
    inside = [all(e["transfer"].ci[name][0] <= syn.TRANSFER[name] <= e["transfer"].ci[name][1]
                  for name in ("alpha", "beta")) for e in study.per_budget]
    assert sum(inside) >= 3, [e["transfer"].ci for e in study.per_budget]
    assert (study.doubling["per_doubling"] > 1.1).all()  # every doubling of p buys target characters
    assert res.main_budget == 3e8 and "## Pre-training budget" in text and "× per doubling" in text


def test_the_gap_law_is_fitted_per_size_with_a_better_buy_at_the_largest_budget(analysed):
    res, text, _ = analysed
    assert len([f for f in res.budgets.gap if f.ok]) == 3
    assert all(np.isfinite(f.ci["G"]).all() for f in res.budgets.gap)
    bb = res.budgets.better_buy
    t = res.table
    top = t[(t["regime"] == "finetune") & ~t["excluded"] & (t["pretrain_budget"] == 3e8)]
    assert len(bb) == len(top.groupby(["N", "D_F"])) >= 12
    verdicts = {"pre-train more", "collect target data", "indistinguishable"}
    assert set(bb["law_verdict"]) <= verdicts
    for r in bb.itertuples():  # a verdict only where the raw cells say the same; else the table says why
        if r.verdict in verdicts:
            assert r.verdict == r.law_verdict and r.raw_verdict in (r.law_verdict, "tie")
        else:
            assert r.verdict.startswith(("law and data disagree", "no verdict: ")), r.verdict
    assert (bb["gain_f"] > 0).all()  # more target data always lowers the loss
    assert "## Transfer gap (Barnett 2024)" in text and "gap law not fitted" not in text


def test_held_out_runs_are_predicted_then_checked(analysed):
    res, text, _ = analysed
    held = res.budgets.held_out
    kinds = set(held["held_out"])
    assert any("largest budget" in k for k in kinds) and any("largest N" in k for k in kinds)
    size = held[held["held_out"].str.contains("largest N")]
    assert len(size) == 5 and size["loss_inside"].mean() >= 0.6  # the unified law is the truth here
    assert all(lo <= hi for lo, hi in held["loss_ci"])
    assert "## Predicted, then measured" in text


def test_seed_noise_is_measured_per_regime_and_size_and_used(analysed):
    res, text, _ = analysed
    assert res.noise.measured
    for regime in ("scratch", "finetune"):
        sigma = res.noise.sigma(regime, 1e6)
        assert sigma == pytest.approx(0.003, rel=0.6)  # the truth's noise
    assert "seeds of" in res.settings["scratch_run_noise_from"]
    assert set(res.noise_effect) == {"k", "alpha", "beta"} and "## Seed noise" in text
    tolerance = checks.monotone_tolerance(res.table[~res.table["excluded"]], 0.0001)
    assert tolerance("scratch", 1e6) == pytest.approx(2 * np.sqrt(2) * res.noise.sigma("scratch", 1e6))


def test_the_budget_plots_are_drawn_and_linked(analysed):
    """Each budget plot is a real image (not blank, not a copy of another) that the report shows."""
    import matplotlib.image

    _, text, out = analysed
    images = {}
    for name in ("transfer_vs_budget", "exponents_vs_budget", "held_out"):
        assert f"(plots/{name}.png)" in text, f"report.md does not show {name}"
        pixels = matplotlib.image.imread(out / "plots" / f"{name}.png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and pixels[..., :3].std() > 0.05, name
        images[name] = pixels
    shapes = {v.shape for v in images.values()}
    assert len(shapes) > 1 or not np.array_equal(*list(images.values())[:2])


def test_a_size_trained_at_the_largest_budget_only_gets_no_gap_law_and_stops_nothing():
    """The held-out size of a budget study (docs/results/predicted_343k) is pre-trained at the largest budget
    only: the gap law and its held-out check skip it, with one line, and the other sizes keep theirs."""
    runs = syn.make_budget_runs() + syn.make_budget_runs(ns=(3e7,), budgets=(3e8,), replicates=1, seed=1)
    res = run_analysis(records_to_table(runs, "budgets"), n_bootstrap=20)
    study = res.budgets
    assert len([f for f in study.gap if f.ok]) == 3 and len(study.gap) == 3
    assert any(m.startswith("transfer-gap law not fitted at N = 3e+07: its fine-tunes have 1 pre-training budget(s)")
               for m in study.messages), study.messages
    assert not any(r.N == 3e7 for r in study.held_out.itertuples() if "gap law" in r.held_out)
