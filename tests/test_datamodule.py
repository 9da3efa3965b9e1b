import numpy as np
import pytest
import torch

from transfer_lab.data.datamodule import (
    IGNORE_INDEX,
    PackedBlocks,
    TokenDataModule,
    TrainSubset,
    ValidationBlocks,
    block_starts,
)
from transfer_lab.data.token_files import TokenSplit
from transfer_lab.errors import DataError


def make_split(n_tokens: int) -> TokenSplit:
    tokens = np.arange(n_tokens, dtype=np.uint16) % 250
    char_ends = np.arange(1, n_tokens + 1, dtype=np.int64) * 2  # 2 chars per token
    return TokenSplit(tokens=tokens, char_ends=char_ends)


def test_blocks_cover_every_token_and_refuse_tiny_subsets():
    starts = block_starts(1000, 64)
    covered = np.zeros(1000, bool)
    for s in starts:
        covered[s:s + 65] = True
    assert covered.all()
    with pytest.raises(DataError, match="finetune_chars"):
        block_starts(50, 64)


def test_batches_are_a_pure_function_of_the_step():
    split = make_split(5000)
    data = PackedBlocks(TrainSubset(split, 5000, 10000), n_ctx=32, batch_size=4, seed=7)
    stream = iter(data)
    first = [next(stream) for _ in range(30)]
    resumed = PackedBlocks(TrainSubset(split, 5000, 10000), n_ctx=32, batch_size=4, seed=7)
    resumed.start_step = 20
    again = next(iter(resumed))
    assert torch.equal(again[0], first[20][0]) and torch.equal(again[1], first[20][1])
    other_seed = PackedBlocks(TrainSubset(split, 5000, 10000), n_ctx=32, batch_size=4, seed=8)
    assert not torch.equal(other_seed.batch_at(0)[0], first[0][0])
    x, y = first[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one


def test_an_epoch_visits_each_block_once():
    split = make_split(64 * 10 + 1)
    data = PackedBlocks(TrainSubset(split, len(split), 2 * len(split)), n_ctx=64, batch_size=5, seed=0)
    seen = torch.cat([data.batch_at(0)[0][:, 0], data.batch_at(1)[0][:, 0]])
    assert sorted(seen.tolist()) == sorted(split.tokens[data.starts].tolist())


def test_validation_scores_every_token_once_and_counts_chars():
    split = make_split(1000)
    val = ValidationBlocks(split, n_tokens=1000, n_ctx=64)
    targets = val.targets.flatten()
    assert int((targets != IGNORE_INDEX).sum()) == val.n_targets == 999
    assert val.n_chars == 999 * 2  # the characters of the targets: every token but the first


def test_the_early_stopping_subset_spans_the_set_and_counts_its_own_chars():
    tokens = np.arange(1000, dtype=np.uint16) % 250
    widths = np.where(np.arange(1000) < 500, 1, 3)  # the second half spells 3 chars a token
    split = TokenSplit(tokens=tokens, char_ends=np.cumsum(widths).astype(np.int64))
    dm = TokenDataModule([(split, 1.0)], split, train_chars=600, val_tokens=1000, n_ctx=50, batch_size=2,
                         val_batch_size=8, seed=0, stopping_val_tokens=250)
    full, stop = dm.val_data, dm.stopping_val_data
    assert len(full) == 20 and len(stop) == 5  # every 4th block of 50 tokens
    assert torch.equal(stop.inputs, full.inputs[::4])
    assert stop.inputs[-1, 0] == tokens[800]  # reaches into the second half, not just the first blocks
    assert full.n_chars == int(widths[1:].sum())
    # blocks 0, 4 and 8 predict tokens 1-450 (1 char a token), blocks 12 and 16 tokens 601-850 (3 chars)
    assert stop.n_targets == 250 and stop.n_chars == 3 * 50 * 1 + 2 * 50 * 3
    assert DataLoaderLen(dm.val_dataloader()) == 5 and DataLoaderLen(dm.score_dataloader()) == 20


def DataLoaderLen(loader) -> int:
    return sum(len(batch[0]) for batch in loader)


def test_datamodule_takes_the_character_prefix():
    split = make_split(5000)
    dm = TokenDataModule([(split, 1.0)], split, train_chars=2000, val_tokens=500, n_ctx=32, batch_size=4,
                         val_batch_size=8, seed=0)
    assert dm.train_tokens == 1000 and dm.train_chars == 2000
    assert int(dm.train_data.starts.max()) + 33 <= 1000


def test_mixture_draws_rows_in_proportion_to_weights():
    from transfer_lab.data.datamodule import MixedBlocks

    english, code = make_split(4000), TokenSplit(tokens=np.full(4000, 251, np.uint16),
                                                 char_ends=np.arange(1, 4001, dtype=np.int64))
    parts = [(PackedBlocks(TrainSubset(english, 4000, 8000), 16, 50, 0), 0.75),
             (PackedBlocks(TrainSubset(code, 4000, 4000), 16, 50, 0), 0.25)]
    mixed = MixedBlocks(parts, seed=0)
    rows = torch.cat([mixed.batch_at(step)[0] for step in range(40)])
    code_share = float((rows[:, 0] == 251).float().mean())
    assert 0.2 < code_share < 0.3
    assert torch.equal(mixed.batch_at(7)[0], MixedBlocks(parts, seed=0).batch_at(7)[0])


def test_schedule_is_sized_to_the_subset_not_to_the_ceiling():
    from transfer_lab.training.schedule import (
        StoppingRule,
        fixed_budget,
        n_decays,
        size_schedule,
    )

    rule = StoppingRule(lr=3e-3, warmup_steps=50, warmup_epochs=2, kind="plateau", decay=10 ** -0.5, min_lr_ratio=0.1, patience=4,
                        patience_fraction=0.25, min_rel_improvement=0.0, val_every_epochs=1, min_val_every_n_steps=5, val_every_n_steps=100,
                        max_steps=20_000)
    tiny = size_schedule(rule, subset_tokens=5_500, tokens_per_step=2048)  # 2.7 steps an epoch
    assert (tiny.warmup_steps, tiny.val_every_n_steps, tiny.max_steps) == (6, 5, 20_000)
    mid = size_schedule(rule, subset_tokens=55_000, tokens_per_step=2048)  # 26.9 steps an epoch
    assert (mid.warmup_steps, mid.val_every_n_steps) == (50, 27)
    big = size_schedule(rule, subset_tokens=50_000_000, tokens_per_step=2048)
    assert (big.warmup_steps, big.val_every_n_steps) == (50, 100)
    # warm-up, then the peak until a plateau lowers the scale; two anneals of 10^-0.5 reach the 0.1 floor
    assert tiny.lr_factor(0) == pytest.approx(1 / 6) and tiny.lr_factor(5) == pytest.approx(1.0)
    assert tiny.lr_factor(10_000) == pytest.approx(1.0) and tiny.lr_factor(10_000, scale=0.1) == pytest.approx(0.1)
    assert n_decays(10 ** -0.5, 0.1) == 2 and n_decays(0.1, 0.1) == 1 and n_decays(1.0, 0.1) == 0
    # the paper's protocol, for comparison: one cosine over the cap whatever the subset, no anneal at plateaus
    from dataclasses import replace
    paper = size_schedule(replace(rule, kind="cosine"), subset_tokens=5_500, tokens_per_step=2048)
    assert paper.horizon_steps == 20_000 and paper.decay is None and not paper.fixed_budget
    assert paper.lr_factor(10_000) > 0.5  # a small subset stops long before its cosine gets low
    # pre-training: its budget is the horizon of a cosine and the ceiling
    pre = fixed_budget(3e-3, 50, 1000, 0.1, 100, 8, 0.0)
    assert pre.fixed_budget and pre.max_steps == 1000 and pre.decay is None
    assert pre.lr_factor(49) == pytest.approx(1.0) and pre.lr_factor(1000) == pytest.approx(0.1)
