"""analyze.py action=compare on synthetic sweeps: health side by side, and one sweep pivoted by lr."""

import analysis_synth as syn
import pandas as pd

from transfer_lab.analysis.collect import collect_local
from transfer_lab.analysis.report.compare_report import markdown
from transfer_lab.analysis.studies import compare as cmp


def test_two_sweeps_side_by_side_count_capped_runs_and_rising_curves(tmp_path):
    good = syn.make_runs("new", ns=(1e5, 1e6), scratch_ds=(1e4, 1e5, 1e6), finetune_ds=(1e4, 1e5), extras=False)
    old = syn.make_runs("old", ns=(1e5, 1e6), scratch_ds=(1e4, 1e5, 1e6), finetune_ds=(1e4, 1e5), extras=False)
    old[1].stop_reason, old[1].converged = "max_steps", False  # one run cut off by its cap
    old[1].not_converged_why = "reached the ceiling"
    old[2].best_val_loss_per_char = old[0].best_val_loss_per_char * 1.05  # D=1e6 worse than D=1e4: a rise
    syn.write_runs(tmp_path, "new", good)
    syn.write_runs(tmp_path, "old", old)
    comparison = cmp.compare({"old": collect_local(tmp_path, "old").table, "new": collect_local(tmp_path, "new").table},
                           None, 0.003)
    md, wide = markdown(comparison), comparison.wide.reset_index()
    health = md.split("## Health")[1].split("## Best")[0]
    assert "| old | 10 | 1 | 1 | 1 |" in health and "| new | 10 | 0 | 0 | 0 |" in health
    assert len(wide) == 10 and list(wide.columns[-2:]) == ["old", "new"]
    assert "`new` against `old` on the 10 cells" in md


def test_one_sweep_by_lr_marks_the_best_value_per_cell(tmp_path):
    runs = []
    for lr, factor in ((1e-3, 1.02), (3e-3, 1.0), (1e-2, 1.01)):
        for r in syn.make_runs("lr", ns=(1e5,), scratch_ds=(), finetune_ds=(3e4, 3e5), extras=False):
            r.run_key, r.schedule = f"{r.run_key}-lr{lr:g}", {"lr": lr}
            r.best_val_loss_per_char *= factor
            runs.append(r)
    syn.write_runs(tmp_path, "lr", runs)
    comparison = cmp.compare({"lr": collect_local(tmp_path, "lr").table}, "lr", 0.003)
    md, wide = markdown(comparison), comparison.wide.reset_index()
    assert list(wide.columns[-3:]) == ["lr=0.001", "lr=0.003", "lr=0.01"]  # in the order of the values
    assert md.count("**") == 2 * 2 and "lr=0.003: 2" in md  # the lowest of each row in bold
    assert isinstance(wide, pd.DataFrame)


def test_two_atlases_compare_cell_by_ordered_pair(tmp_path):
    """An atlas has many runs per (regime, N, D): one per target, and per source for fine-tunes."""
    pairs = {("a", "b"): syn.TRANSFER, ("b", "a"): syn.TRANSFER, ("c", "a"): syn.TRANSFER}
    kw = dict(ns=(1e5,), scratch_ds=(1e4, 1e5), finetune_ds=(1e4,))
    syn.write_runs(tmp_path, "old", syn.make_atlas_runs("old", pairs, seed=0, **kw))
    new = syn.make_atlas_runs("new", pairs, seed=0, **kw)  # the same losses but one
    cheaper = next(r for r in new if r.source_corpus == "c")
    cheaper.best_val_loss_per_char *= 1.02  # one pair's fine-tune 2% worse
    syn.write_runs(tmp_path, "new", new)
    tables = {name: collect_local(tmp_path, name, one_val_set=False).table for name in ("old", "new")}
    comparison = cmp.compare(tables, None, 0.003)
    md, wide = markdown(comparison), comparison.wide.reset_index()
    assert len(wide) == 2 * 2 + 3  # 2 targets × 2 scratch D, 3 pairs × 1 D_F: no cell merged with another
    assert "| regime | source | target | N | D | old | new |" in md
    assert "| finetune | c | a |" in md and "| scratch | — | b |" in md
    health = md.split("## Health")[1].split("## Best")[0]
    assert "| old | 7 | 0 | 0 | 0 |" in health  # each pair's curves are checked alone, not one target against another
    assert "- finetune, 3 cells:" in md and "largest +2.00%" in md and "(finetune, c, a, 1e+09, 100000, 10000)" in md


def test_the_plateau_rule_compares_at_the_same_budget_not_across_budgets(tmp_path):
    """A budget study (rule: continue) and a rule sweep (anneal, stop) at its largest budget: each
    fine-tune cell is (N, D_F, budget), so the rules meet only where the budgets are equal."""
    budgets = syn.make_budget_runs("budgets", ns=(1e5, 1e6), budgets=(1e7, 1e8), finetune_ds=(1e4, 1e5), replicates=1)
    for r in budgets:
        r.pretrain_on_plateau = "continue" if r.regime == "finetune" else None
    rules = []
    for rule, factor in (("anneal", 0.99), ("stop", 1.03)):
        for r in syn.make_budget_runs("rules", ns=(1e5, 1e6), budgets=(1e8,), finetune_ds=(1e4, 1e5), replicates=1):
            if r.regime == "finetune":
                r.run_key, r.pretrain_on_plateau = f"{r.run_key}-{rule}", rule
                r.best_val_loss_per_char *= factor
                rules.append(r)
    syn.write_runs(tmp_path, "budgets", budgets)
    syn.write_runs(tmp_path, "rules", rules)
    tables = {name: collect_local(tmp_path, name).table for name in ("budgets", "rules")}
    comparison = cmp.compare(tables, "pretrain_rule", 0.003)
    md, wide = markdown(comparison), comparison.wide.reset_index()
    at_1e8 = wide[(wide["regime"] == "finetune") & (wide["budget"] == "1e+08")]
    assert len(at_1e8) == 4 and at_1e8[["pretrain_rule=anneal", "pretrain_rule=continue",
                                        "pretrain_rule=stop"]].notna().all().all()
    # no rule run at 1e7: those cells compare nothing, and are not averaged into 1e8's
    assert wide[wide["budget"] == "1e+07"].empty and "cells with one value left out" in md
    assert "| regime | pre-training budget | N | D |" in md and "pretrain_rule=anneal: 4" in md
