import numpy as np
import pytest
import torch

from transfer_lab.datamodule import IGNORE_INDEX, PackedBlocks, TokenDataModule, TrainSubset, ValidationBlocks, block_starts
from transfer_lab.errors import DataError
from transfer_lab.tokens import TokenSplit


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
    assert val.n_chars == 2000


def test_datamodule_takes_the_character_prefix():
    split = make_split(5000)
    dm = TokenDataModule([(split, 1.0)], split, train_chars=2000, val_tokens=500, n_ctx=32, batch_size=4,
                         val_batch_size=8, seed=0)
    assert dm.train_tokens == 1000 and dm.train_chars == 2000
    assert int(dm.train_data.starts.max()) + 33 <= 1000


def test_mixture_draws_rows_in_proportion_to_weights():
    from transfer_lab.datamodule import MixedBlocks

    english, code = make_split(4000), TokenSplit(tokens=np.full(4000, 251, np.uint16),
                                                 char_ends=np.arange(1, 4001, dtype=np.int64))
    parts = [(PackedBlocks(TrainSubset(english, 4000, 8000), 16, 50, 0), 0.75),
             (PackedBlocks(TrainSubset(code, 4000, 4000), 16, 50, 0), 0.25)]
    mixed = MixedBlocks(parts, seed=0)
    rows = torch.cat([mixed.batch_at(step)[0] for step in range(40)])
    code_share = float((rows[:, 0] == 251).float().mean())
    assert 0.2 < code_share < 0.3
    assert torch.equal(mixed.batch_at(7)[0], MixedBlocks(parts, seed=0).batch_at(7)[0])


def test_small_subsets_are_validated_every_couple_of_epochs():
    from omegaconf import OmegaConf

    from transfer_lab.training import validation_interval

    optim = OmegaConf.create({"val_every_n_steps": 40, "val_every_epochs": 2, "min_val_every_n_steps": 10})
    split = make_split(200_000)

    def interval(train_chars):
        dm = TokenDataModule([(split, 1.0)], split, train_chars=train_chars, val_tokens=500, n_ctx=32,
                             batch_size=4, val_batch_size=8, seed=0)
        return validation_interval(optim, dm, max_steps=1000)

    assert interval(1_000) == 10  # 500 tokens = 3.9 steps an epoch: the floor of 10 steps
    assert interval(4_000) == 32  # 2000 tokens = 15.6 steps an epoch: every 2 epochs
    assert interval(100_000) == 40  # big subsets: the configured interval
