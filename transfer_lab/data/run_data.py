"""From corpus names to token files: prepare corpora, build the tokenizer, tokenise once.

This is the one place that chains the data stages (corpora → tokenizers → token files); the
training code receives token files and never looks behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from transfer_lab.data.corpora import load_corpus_spec, prepare_corpus
from transfer_lab.data.token_files import TokenFile, load_token_file
from transfer_lab.data.tokenizers import TokenizerHandle, load_tokenizer
from transfer_lab.errors import DataError

DEFAULT_TOKENIZER_CHARS = 5_000_000


@dataclass(frozen=True)
class DataSpec:
    """What a run reads: conf/data and conf/tokenizer, with the folders they live in."""

    sources: dict[str, float]  # pre-training corpus -> mixture weight (normalised)
    target: str | None  # the scratch / fine-tune corpus (None: pre-training only)
    tokenizer: dict  # conf/tokenizer as plain values
    finetune_chars: int | None  # D_F (D for a scratch run) in characters of the target
    data_dir: Path  # raw downloads and prepared corpora
    cache_dir: Path  # tokenizers and token files

    @property
    def tokenizer_corpora(self) -> dict[str, float]:
        """What a BPE learns from: tokenizer.train_on if set, else the source (mix)."""
        train_on = self.tokenizer.get("train_on")
        return normalised(train_on) if train_on else self.sources


@dataclass(frozen=True)
class RunData:
    tokenizer: TokenizerHandle
    sources: dict[str, tuple[TokenFile, float]]  # corpus name -> (token file, mixture weight)
    target: TokenFile | None

    @property
    def primary_source(self) -> TokenFile:
        return next(iter(self.sources.values()))[0]


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """{corpus: weight} with weights summing to 1 (a plain name is that corpus alone)."""
    plain = {str(name): float(weight) for name, weight in weights.items()}
    total = sum(plain.values())
    return {name: weight / total for name, weight in plain.items()}


@lru_cache(maxsize=16)
def _prepared(name: str, data_dir: str):
    # multirun jobs share one process: a corpus is checked and opened once per process
    return prepare_corpus(load_corpus_spec(name), data_dir=Path(data_dir))


def _balanced_documents(corpora_weights, budget_chars: int):
    """The first budget·weight characters (whole documents) of each corpus' training order."""
    def documents():
        for corpus, weight in corpora_weights:
            taken = 0
            for doc in corpus.documents("train"):
                if taken >= budget_chars * weight:
                    break
                taken += len(doc)
                yield doc
    return documents


def load_tokenizer_for(spec: DataSpec) -> TokenizerHandle:
    learn_from = spec.tokenizer_corpora
    corpora = {name: _prepared(name, str(spec.data_dir)) for name in learn_from}
    budget = int(float(spec.tokenizer.get("train_chars") or DEFAULT_TOKENIZER_CHARS))
    return load_tokenizer(
        spec.tokenizer, spec.cache_dir,
        training_documents=_balanced_documents([(corpora[n], w) for n, w in learn_from.items()], budget),
        training_corpus_hash="balanced:" + "+".join(f"{c.content_hash}:{learn_from[n]:.6f}" for n, c in corpora.items()))


def load_corpus_tokens(spec: DataSpec, name: str, tokenizer: TokenizerHandle, log=print) -> TokenFile:
    """One more corpus tokenised with the run's tokenizer (preparing a sweep's data ahead of it)."""
    return load_token_file(_prepared(name, str(spec.data_dir)), tokenizer, spec.cache_dir, log)


def load_run_data(spec: DataSpec, need_source: bool, need_target: bool, log=print) -> RunData:
    tokenizer = load_tokenizer_for(spec)
    sources = {}
    if need_source:
        sources = {name: (load_corpus_tokens(spec, name, tokenizer, log), weight) for name, weight in spec.sources.items()}
    target = None
    if need_target:
        target = load_corpus_tokens(spec, str(spec.target), tokenizer, log)
        if spec.finetune_chars is not None and spec.finetune_chars > target.train.n_chars:
            raise DataError(f"data.finetune_chars={spec.finetune_chars:.3g} exceeds the {spec.target} corpus' "
                            f"{target.train.n_chars:,} training characters; lower data.finetune_chars")
    return RunData(tokenizer=tokenizer, sources=sources, target=target)
