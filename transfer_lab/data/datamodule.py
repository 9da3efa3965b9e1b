"""Packed n_ctx blocks from a token file: the training subset and the fixed validation set.

Training reads a token prefix (the first D_F characters of the corpus' fixed shuffled order),
cut into blocks of n_ctx + 1 tokens. Batches are a pure function of (seed, step): step s takes
positions [s·B, (s+1)·B) of an endless stream of seeded block permutations, one per epoch.
So a resumed run sees exactly the batches an uninterrupted one would, and small subsets are
simply repeated for as many epochs as early stopping allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from transfer_lab.data.token_files import TokenSplit
from transfer_lab.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainSubset:
    split: TokenSplit
    n_tokens: int  # tokens in the prefix used for training
    n_chars: int  # characters those tokens spell

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(self.n_tokens, 1)


def block_starts(n_tokens: int, n_ctx: int) -> np.ndarray:
    """Starts of the n_ctx+1-token blocks covering [0, n_tokens); the last one may overlap."""
    if n_tokens < n_ctx + 1:
        raise DataError(f"the training subset has {n_tokens} tokens, fewer than one context of "
                        f"{n_ctx + 1}; raise data.finetune_chars or lower model.n_ctx")
    starts = np.arange(0, n_tokens - n_ctx, n_ctx, dtype=np.int64)
    if starts[-1] + n_ctx + 1 < n_tokens:
        starts = np.append(starts, n_tokens - n_ctx - 1)  # every token gets trained on
    return starts


class StepBatches(IterableDataset):
    """Endless batches `batch_at(step)` from `start_step` on (set before a resumed fit)."""

    start_step = 0

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define batch_at")

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1


class PackedBlocks(StepBatches):
    """(x, y) batches of shape (batch_size, n_ctx) of one token subset."""

    def __init__(self, subset: TrainSubset, n_ctx: int, batch_size: int, seed: int):
        self.subset, self.n_ctx, self.batch_size, self.seed = subset, n_ctx, batch_size, seed
        self.starts = block_starts(subset.n_tokens, n_ctx)
        self._epoch_cache: dict[int, np.ndarray] = {}

    @property
    def blocks_per_epoch(self) -> int:
        return len(self.starts)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))}
        return self._epoch_cache[epoch]

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = np.divmod(positions, len(self.starts))
        starts = np.array([self.starts[self._permutation(e)[o]] for e, o in zip(epochs, offsets)])
        windows = starts[:, None] + np.arange(self.n_ctx + 1)
        block = torch.from_numpy(self.subset.split.tokens[windows].astype(np.int64))
        return block[:, :-1], block[:, 1:]


class MixedBlocks(StepBatches):
    """Batches whose rows come from several sources with fixed weights (pre-training mixtures).

    Row r of step s is drawn from source i with probability weight_i; each source keeps its own
    block stream indexed by (s, r), so batches stay a pure function of the step.
    """

    def __init__(self, parts: list[tuple[PackedBlocks, float]], seed: int):
        self.parts, self.seed = parts, seed
        self.weights = np.array([w for _, w in parts]) / sum(w for _, w in parts)
        self.batch_size = parts[0][0].batch_size

    def batch_at(self, step: int):
        choice = np.random.default_rng([self.seed, step, 1]).choice(len(self.parts), self.batch_size, p=self.weights)
        xs, ys = zip(*(part.batch_at(step) for part, _ in self.parts))
        rows = torch.arange(self.batch_size)
        return torch.stack(xs)[choice, rows], torch.stack(ys)[choice, rows]


class ValidationBlocks(Dataset):
    """The fixed validation tokens as n_ctx blocks; every token after the first is a target once.

    `every`=k keeps every k-th block: the early-stopping subset, spread over the whole set's
    documents rather than its first few. n_chars counts exactly the characters of the targets.
    """

    def __init__(self, split: TokenSplit, n_tokens: int, n_ctx: int, every: int = 1):
        tokens = torch.from_numpy(np.asarray(split.tokens[:n_tokens], dtype=np.int64))
        inputs, targets = tokens[:-1], tokens[1:]
        pad = (-len(inputs)) % n_ctx
        inputs = torch.cat([inputs, torch.zeros(pad, dtype=torch.long)]).view(-1, n_ctx)
        targets = torch.cat([targets, torch.full((pad,), IGNORE_INDEX)]).view(-1, n_ctx)
        # block b predicts tokens b·n_ctx+1 .. min((b+1)·n_ctx, n_tokens-1): their characters are
        # char_ends[last] - char_ends[b·n_ctx]
        ends = np.asarray(split.char_ends[:n_tokens], dtype=np.int64)
        first = np.arange(len(inputs)) * n_ctx
        block_chars = ends[np.minimum(first + n_ctx, n_tokens - 1)] - ends[first]
        self.inputs, self.targets = inputs[::every], targets[::every]
        self.n_targets = int((self.targets != IGNORE_INDEX).sum())
        self.n_chars = int(block_chars[::every].sum())

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], self.targets[index]

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(self.n_targets, 1)


class TokenDataModule(pl.LightningDataModule):
    """Training data (one token file, or a weighted mixture) + a fixed validation set, for one run.

    Early stopping watches `stopping_val_tokens` of the set (every k-th block; None: all of it);
    the run's result is the whole set's loss at the checkpoint early stopping picked
    (`score_dataloader`). A small subset validated every few steps stays cheap that way.
    """

    def __init__(self, train: list[tuple[TokenSplit, float]], val_split: TokenSplit, *, train_chars: int | None,
                 val_tokens: int, n_ctx: int, batch_size: int, val_batch_size: int, seed: int,
                 stopping_val_tokens: int | None = None):
        super().__init__()
        self.subsets = []
        for split, _ in train:
            n_train = len(split) if train_chars is None else split.tokens_for_chars(train_chars)
            self.subsets.append(TrainSubset(split, n_train, split.chars_in(n_train)))
        parts = [(PackedBlocks(sub, n_ctx, batch_size, seed), w) for sub, (_, w) in zip(self.subsets, train)]
        self.train_data = parts[0][0] if len(parts) == 1 else MixedBlocks(parts, seed)
        n_val = min(int(val_tokens), len(val_split))
        if n_val < 2:
            raise DataError("the validation set has fewer than 2 tokens; raise data.val_tokens or the corpus' val_chars")
        self.val_data = ValidationBlocks(val_split, n_val, n_ctx)
        every = 1 if stopping_val_tokens is None else max(1, len(self.val_data) * n_ctx // int(stopping_val_tokens))
        self.stopping_val_data = self.val_data if every == 1 else ValidationBlocks(val_split, n_val, n_ctx, every)
        self.val_batch_size, self.n_ctx = val_batch_size, n_ctx

    @property
    def train_tokens(self) -> int:
        return sum(sub.n_tokens for sub in self.subsets)

    @property
    def train_chars(self) -> int:
        return sum(sub.n_chars for sub in self.subsets)

    def train_dataloader(self):
        # batch_size=None: the dataset yields whole batches; no workers, a memmap slice is microseconds
        return DataLoader(self.train_data, batch_size=None)

    def val_dataloader(self):
        return DataLoader(self.stopping_val_data, batch_size=self.val_batch_size, shuffle=False)

    def score_dataloader(self):
        return DataLoader(self.val_data, batch_size=self.val_batch_size, shuffle=False)
