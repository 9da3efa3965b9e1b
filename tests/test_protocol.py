"""The study protocol: which jobs a multirun launches, counted on the plan (nothing trains here)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from transfer_lab.study import protocol

CORPORA = ["english", "german", "spanish", "chinese", "python", "code_nonpython"]


def cells(*lines: str, params: dict | None = None):
    return protocol.expand(protocol.sweep_dimensions(protocol.experiment_params(params or {}, list(lines)) + list(lines)))


@pytest.mark.parametrize("k", [2, 3, 6])
def test_an_atlas_shares_pretraining_per_source_and_scratch_per_target(k):
    names = ",".join(CORPORA[:k])
    jobs = cells("regime=scratch,finetune", "model=n3k,n13k", f"data.source={names}", f"data.target={names}",
                 "data.finetune_chars=1e4,1e5", "data.scratch_chars=1e4,1e5,1e6")
    count = Counter(c.regime for c in jobs)
    sizes, d_f, d = 2, 2, 3
    assert count["pretrain"] == k * sizes  # (source, N): never per target
    assert count["scratch"] == k * sizes * d  # (target, N, D): never per source
    assert count["finetune"] == k * (k - 1) * sizes * d_f  # only fine-tuning is per ordered pair, A → A excluded
    assert len({tuple(c.overrides) for c in jobs}) == len(jobs)  # nothing planned twice
    assert all("data.target" not in " ".join(c.rest) for c in jobs if c.regime == "pretrain")
    assert all("data.source" not in " ".join(c.rest) for c in jobs if c.regime == "scratch")


def test_scratch_takes_its_own_grid_and_jobs_come_pretraining_first_long_first():
    jobs = cells("regime=scratch,finetune", "model.n_layer=1,2", "data.finetune_chars=1e4,1e5",
                 "data.scratch_chars=1e4,1e5,1e6,1e7")
    scratch = sorted({float(c.chars) for c in jobs if c.regime == "scratch"})
    finetune = sorted({float(c.chars) for c in jobs if c.regime == "finetune"})
    assert scratch == [1e4, 1e5, 1e6, 1e7] and finetune == [1e4, 1e5]
    order = [c.regime for c in jobs]
    assert order == sorted(order, key=["pretrain", "scratch", "finetune"].index)
    assert float(jobs[2].chars) == 1e7  # the longest scratch jobs first: parallel workers stay balanced
    # without a scratch grid, scratch falls back to the fine-tune grid (the analysis says what is missing)
    plain = cells("regime=scratch,finetune", "data.finetune_chars=1e4,1e5")
    assert sorted(float(c.chars) for c in plain if c.regime == "scratch") == [1e4, 1e5]


def test_the_design_card_replaces_the_experiments_sizes_instead_of_crossing_them():
    demo = {"regime": "scratch,finetune", "model": "n3k,n13k,n77k", "data.finetune_chars": "1e4,3e4,1e5,3e5",
            "data.scratch_chars": "1e4,3e4,1e5,3e5,1e6,3e6"}
    card = cells("model.n_layer=2,4,8", "data.finetune_chars=1e5,1e6", params=demo)
    sizes = {c.rest for c in card}
    assert sizes == {("model.n_layer=2",), ("model.n_layer=4",), ("model.n_layer=8",)}
    count = Counter(c.regime for c in card)
    assert count == {"pretrain": 3, "scratch": 3 * 6, "finetune": 3 * 2}  # the demo's scratch grid, the card's D_F
    assert len(cells(params=demo)) == 3 + 3 * 6 + 3 * 4


def test_a_scratch_only_command_line_trains_the_d_it_names():
    demo = {"regime": "scratch,finetune", "data.finetune_chars": "1e4,3e4", "data.scratch_chars": "1e4,1e5,1e6"}
    only = cells("regime=scratch", "data.finetune_chars=1e4,2e4", params=demo)
    assert sorted(float(c.chars) for c in only) == [1e4, 2e4]
    named = cells("regime=scratch", "data.finetune_chars=1e4,2e4", "data.scratch_chars=3e4", params=demo)
    assert [float(c.chars) for c in named] == [3e4]
    both = cells("data.finetune_chars=1e4,2e4", params=demo)  # a study: the experiment's scratch grid
    assert sorted({float(c.chars) for c in both if c.regime == "scratch"}) == [1e4, 1e5, 1e6]


def test_a_fixed_source_reaches_the_scratch_runs_a_swept_one_does_not():
    # a BPE learned on the source serves the scratch runs too: a fixed source must reach them
    fixed = cells("regime=scratch,finetune", "data.source=fortunes_en", "data.target=python_small")
    assert all("data.source=fortunes_en" in c.rest for c in fixed)
    swept = cells("regime=scratch,finetune", "data.source=english,german", "data.target=python")
    assert all("data.source" not in " ".join(c.rest) for c in swept if c.regime == "scratch")


def test_bad_sweeps_are_refused_on_the_plan():
    with pytest.raises(ValueError, match="more than once"):
        cells("data.source=english,english", "data.target=python")
    with pytest.raises(ValueError, match="two corpora"):
        cells("regime=finetune", "data.source=python", "data.target=python")
    with pytest.raises(ValueError, match="regime=nope"):
        cells("regime=scratch,nope")


def test_one_tokenizer_must_serve_every_pair():
    jobs = cells("regime=scratch,finetune", "data.source=english,german", "data.target=english,german")
    own = {"kind": "bpe", "vocab_size": 512, "train_on": None}
    shared = {"kind": "bpe", "vocab_size": 512, "train_on": {"english": 1, "german": 1}}
    source = {c: dict(line.split("=") for line in c.rest).get("data.source", "english") for c in jobs}
    with pytest.raises(ValueError, match="tokenizer.train_on"):
        protocol.check_shared_tokenizer([(c, own, source[c]) for c in jobs])
    protocol.check_shared_tokenizer([(c, shared, source[c]) for c in jobs])
    protocol.check_shared_tokenizer([(c, {"kind": "byte"}, source[c]) for c in jobs])
    mixed = [(c, {**shared, "vocab_size": 512 if i % 2 else 1024}, source[c]) for i, c in enumerate(jobs)]
    with pytest.raises(ValueError, match="different tokenizer settings"):
        protocol.check_shared_tokenizer(mixed)


def test_grids():
    assert protocol.log_grid(1e4, 3e6) == [1e4, 3e4, 1e5, 3e5, 1e6, 3e6]
    assert protocol.log_grid(1e4, 1e5, per_decade=3) == [1e4, 2e4, 5e4, 1e5]
    assert protocol.scratch_grid_for([1e4, 1e5], corpus_chars=3.1e7) == [1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7]
    assert protocol.scratch_grid_for([1e4, 1e6], corpus_chars=3.1e7)[-1] == 3e7  # as far as the corpus allows


def test_a_budget_axis_trains_one_pretraining_per_size_and_budget_and_shares_the_scratch_curves():
    cells = protocol.expand(protocol.sweep_dimensions(
        ["regime=scratch,finetune", "model=n13k,n3k", "pretrain.tokens=4e6,2e6,1e6",
         "data.finetune_chars=1e4,3e4", "data.scratch_chars=1e4,1e5,1e6"]))
    by = {r: [c for c in cells if c.regime == r] for r in ("pretrain", "scratch", "finetune")}
    assert len(by["pretrain"]) == 2 * 3  # one per (size, budget)
    assert len(by["scratch"]) == 2 * 3  # per size and D: every budget shares them
    assert not any("pretrain.tokens" in line for c in by["scratch"] for line in c.rest)
    assert len(by["finetune"]) == 2 * 3 * 2  # per budget
    assert cells.index(by["pretrain"][0]) == 0 and all(c.regime == "pretrain" for c in cells[:6])


def test_the_mix_study_plans_its_jobs_and_reuses_the_atlas_runs_it_shares():
    """r = 0 and r = 1 are atlas pairs (english→python, code_nonpython→python) and the Python curve is the
    atlas's: the same run keys, so a sweep finds them done (test_run_keys checks the recorded keys are
    the code's)."""
    recorded = json.loads((Path(__file__).parent / "data" / "run_keys.json").read_text())
    atlas = {row["run_key"] for row in recorded["atlas"]}
    mix = recorded["mix_text_code_python"]
    regime = lambda row: next(o for o in row["overrides"] if o.startswith("regime=")).split("=")[1]  # noqa: E731
    assert Counter(map(regime, mix)) == {"pretrain": 3 * 5, "scratch": 3 * 4, "finetune": 3 * 5 * 3}
    reused = Counter(regime(row) for row in mix if row["run_key"] in atlas)
    assert reused == {"pretrain": 3 * 2, "scratch": 3 * 4, "finetune": 3 * 2 * 3}  # the two pure sources
    simplex = recorded["mix_simplex_python"]
    assert Counter(map(regime, simplex)) == {"pretrain": 11, "scratch": 4, "finetune": 11 * 3}
    shared = {row["run_key"] for row in mix} | atlas
    assert sum(row["run_key"] not in shared for row in simplex) == 8 + 8 * 3  # only the random mixtures train
