"""The priced plan on a synthetic sweep with a known law and known costs: the cost model recovers
the costs, the expected widths match the widths the same runs really give, the choice keeps to
the budget, and a budget ≤ 0 is one line."""

from __future__ import annotations

import dataclasses

import analysis_synth as syn
import numpy as np
import pandas as pd
import pytest

from transfer_lab.analysis.collect import records_to_table
from transfer_lab.analysis.fit.result import FitSettings
from transfer_lab.analysis.studies.preregister import spent_hours
from transfer_lab.analysis.studies.priced_plan import (
    PlannedRun,
    choose,
    priced_plan,
    widths,
)
from transfer_lab.analysis.studies.sweep_analysis import run_analysis
from transfer_lab.errors import ConfigError
from transfer_lab.study.costs import CostModel

SIZES = {1e5: (2, 64, 2), 3e5: (3, 90, 2), 1e6: (4, 144, 4)}
D_FS = (1e4, 3e4, 1e5)
SCRATCH = tuple(np.geomspace(1e4, 1e10, 10))
BUDGET_CHARS, BUDGET_TOKENS = 1e9, 3e8
NOISE = 0.006
SETTINGS = FitSettings(n_bootstrap=150)


def tokens_to_converge(n, d):
    return 3e3 * d ** 0.5 * (n / 1e5) ** 0.1


def seconds_per_token(n):
    return 2e-6 * (n / 1e5) ** 0.8


def _run(key, regime, n, d, loss, seed=0):
    shape = dict(zip(("n_layer", "n_embd", "n_head"), SIZES.get(n, (8, 288, 4))))
    tokens = BUDGET_TOKENS if regime == "pretrain" else tokens_to_converge(n, d)
    extra = {"pretrain_budget_chars": BUDGET_CHARS, "pretrain_budget_tokens": BUDGET_TOKENS} if regime != "scratch" else {}
    return syn.result("plan", key, regime, n, d, loss, seed=seed, tokens_seen=int(tokens),
                      wall_time_s=float(tokens * seconds_per_token(n)), **shape, **extra)


def sweep(sizes, seed=0, seeds=(0, 1)):
    rng = np.random.default_rng(seed)
    runs = []
    for n in sizes:
        runs.append(_run(f"pre-{n:.0e}", "pretrain", n, None, 1.5))
        for s in seeds:
            for d in SCRATCH:
                runs.append(_run(f"sc-{n:.0e}-{d:.1e}-{s}", "scratch", n, d,
                                 float(syn.scratch_loss(n, d) * np.exp(rng.normal(0, NOISE))), s))
            for d in D_FS:
                runs.append(_run(f"ft-{n:.0e}-{d:.0e}-{s}", "finetune", n, d,
                                 float(syn.finetune_loss(n, d) * np.exp(rng.normal(0, NOISE))), s))
    return runs


@pytest.fixture(scope="module")
def table():
    return records_to_table(sweep(SIZES), "plan").table


@pytest.fixture(scope="module")
def plan(table):
    return priced_plan(run_analysis(table, SETTINGS), table, budget_hours=1e9, settings=SETTINGS)


def test_the_cost_model_recovers_the_costs(table):
    cost = CostModel.fit(table)
    assert cost.per_token[1] == pytest.approx(0.8, abs=0.01)
    assert cost.tokens["scratch"][1] == pytest.approx(0.5, abs=0.01) and cost.tokens["finetune"][2] == pytest.approx(0.1, abs=0.02)
    n, d = 4e6, 3e5
    assert cost.seconds("scratch", n, d) == pytest.approx(tokens_to_converge(n, d) * seconds_per_token(n), rel=0.05)
    assert cost.seconds("pretrain", n, pretrain_tokens=1e8) == pytest.approx(1e8 * seconds_per_token(n), rel=0.05)


def test_expected_widths_match_the_widths_the_runs_really_give(table, plan):
    size = next(c for c in plan.candidates if c.name.startswith("a size"))
    assert {r.regime for r in size.runs} == {"pretrain", "scratch", "finetune"}
    n_new = size.runs[0].n
    # train the candidate "for real": its runs drawn from the true law, one seed, then the same analysis
    real = [_run(f"new-{r.regime}-{r.d}", r.regime, n_new, r.d,
                 float((syn.scratch_loss(n_new, r.d) if r.regime == "scratch" else syn.finetune_loss(n_new, r.d))
                       * np.exp(np.random.default_rng(int(r.d)).normal(0, NOISE))))
            for r in size.runs if r.regime != "pretrain"]
    added = pd.concat([table, records_to_table(real, "plan").table], ignore_index=True)
    obtained = widths(added, SETTINGS)["transfer"]
    for name in ("alpha", "beta"):
        expected = size.widths["transfer"][name]
        assert 1 / 1.5 <= obtained[name] / expected <= 1.5, (name, expected, obtained[name])
        assert expected < plan.before["transfer"][name]  # a larger size narrows both


def test_the_choice_keeps_to_the_budget_and_prices_what_is_new(table, plan):
    budget = sorted(c.hours for c in plan.candidates)[1] * 1.01  # room for the two cheapest at most
    chosen = choose(plan.candidates, budget)
    assert chosen and sum(c.hours for c in chosen) <= budget and all(c.score > 0 for c in chosen)
    best = max((c for c in plan.candidates if c.score > 0 and c.hours <= budget), key=lambda c: c.score / c.hours)
    assert chosen[0] is best  # the most narrowing per hour comes first
    seeds = [c for c in plan.candidates if "seeds 1 and 2 of the from-scratch curve" in c.name]
    assert seeds and all(r.seed == 2 for c in seeds for r in c.runs)  # seed 1 is trained already: not planned again
    with pytest.raises(ConfigError, match="plan.budget_hours"):
        priced_plan(run_analysis(table, SETTINGS), table, budget_hours=0, settings=SETTINGS)
    assert dataclasses.asdict(PlannedRun("scratch", 1e5, 1e4))["regime"] == "scratch"


def test_the_plan_is_kept_and_later_checked_against_what_its_runs_gave(tmp_path):
    """analyze.py action=plan plan.save=FILE, then (runs trained) action=verify verify.plan=FILE."""
    from conftest import compose

    from transfer_lab.analysis.actions import run_cli
    from transfer_lab.analysis.studies import preregister

    root = tmp_path / "outputs"
    syn.write_runs(root, "plan", sweep(SIZES))
    keep = tmp_path / "docs" / "plan.json"

    def cli(*extra):
        run_cli(compose(f"paths.output_root={root}", "sweep=plan", "fit.n_bootstrap=60", *extra, config="analyze"))

    cli("action=plan", "plan.budget_hours=1e9", f"plan.save={keep}")
    doc = preregister.load(keep, "transfer_lab.plan/1")
    assert doc["chosen"] and (tmp_path / "docs" / "plan.md").read_text().startswith("# The priced plan")
    with pytest.raises(ConfigError, match="exists"):
        cli("action=plan", "plan.budget_hours=1e9", f"plan.save={keep}")
    cli("action=verify", f"verify.plan={keep}")
    check = (tmp_path / "docs" / "plan_check.md").read_text()
    assert "obtained/expected" in check and "| transfer | α |" in check


def test_the_check_prices_the_chosen_runs_from_their_records():
    """plan_check.md sets the plan's price against the wall times of its chosen runs that are done."""
    budget = dict(pretrain_budget_tokens=int(3e8))
    runs = [syn.result("s", "pre-a", "pretrain", 1e5, None, 1.5, seed=1, wall_time_s=1800.0, tokens_seen=int(3e8)),
            syn.result("s", "ft-a", "finetune", 1e5, 1e4, 1.2, seed=1, wall_time_s=900.0, **budget),
            syn.result("s", "ft-b", "finetune", 1e5, 3e4, 1.1, seed=0, wall_time_s=50.0, **budget)]
    chosen = [PlannedRun("pretrain", 1e5, None, 1, 3e8), PlannedRun("finetune", 1e5, 1e4, 1, 3e8),
              PlannedRun("finetune", 1e5, 3e4, 2, 3e8)]  # seed 2 of ft-b's cell: not trained yet
    doc = {"chosen": ["seeds"], "candidates": [
        {"name": "seeds", "runs": [dataclasses.asdict(r) for r in chosen]},
        {"name": "not chosen", "runs": [dataclasses.asdict(PlannedRun("finetune", 1e5, 3e4, 0, 3e8))]}]}
    assert spent_hours(doc, records_to_table(runs, "s").table) == pytest.approx((0.75, 2, 3))


def test_a_second_plans_check_leaves_the_firsts_in_place(tmp_path):
    from transfer_lab.analysis.report.plan_report import write_check

    first = write_check(tmp_path, "widths of plan.json", "analyze.py action=verify verify.plan=plan.json")
    second = write_check(tmp_path, "widths of plan2.json", "analyze.py action=verify verify.plan=plan2.json", "plan2")
    assert (first.name, second.name) == ("plan_check.md", "plan2_check.md")
    assert "widths of plan.json" in first.read_text() and "widths of plan2.json" in second.read_text()
