"""From corpus names to token files: prepare corpora, build the tokenizer, tokenise once.

This is the one place that chains the data stages (corpora → tokenization → tokens); the
training code receives token files and never looks behind them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transfer_lab.corpora import load_corpus_spec, prepare_corpus
from transfer_lab.errors import DataError
from transfer_lab.tokenization import TokenizerHandle, load_tokenizer
from transfer_lab.tokens import TokenFile, load_token_file


@dataclass(frozen=True)
class RunData:
    tokenizer: TokenizerHandle
    sources: dict[str, tuple[TokenFile, float]]  # corpus name -> (token file, mixture weight)
    target: TokenFile | None

    @property
    def primary_source(self) -> TokenFile:
        return next(iter(self.sources.values()))[0]


def source_weights(cfg: DictConfig) -> dict[str, float]:
    """data.source as {corpus: weight}: a plain name means that corpus alone."""
    source = cfg.data.source
    if OmegaConf.is_dict(source):
        weights = {str(name): float(weight) for name, weight in source.items()}
    else:
        weights = {str(source): 1.0}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


@lru_cache(maxsize=16)
def _prepared(name: str, data_dir: str):
    # multirun jobs share one process: a corpus is checked and opened once per process
    return prepare_corpus(load_corpus_spec(name), data_dir=Path(data_dir))


def _mixed_documents(corpora_weights):
    """Round-robin over source documents, each corpus contributing in proportion to its weight."""
    def documents():
        streams = [iter(corpus.documents("train")) for corpus, _ in corpora_weights]
        quotas = [max(1, round(weight * 10)) for _, weight in corpora_weights]  # documents per round
        while True:
            progressed = False
            for stream, quota in zip(streams, quotas):
                for doc in itertools.islice(stream, quota):
                    progressed = True
                    yield doc
            if not progressed:
                return
    return documents


def load_run_data(cfg: DictConfig, need_source: bool, need_target: bool, log=print) -> RunData:
    data_dir, cache_dir = str(cfg.paths.data_dir), Path(cfg.paths.cache_dir)
    weights = source_weights(cfg)
    source_corpora = {name: _prepared(name, data_dir) for name in weights}
    tokenizer = load_tokenizer(
        OmegaConf.to_container(cfg.tokenizer, resolve=True), cache_dir,
        training_documents=_mixed_documents([(source_corpora[n], w) for n, w in weights.items()]),
        training_corpus_hash="+".join(f"{c.content_hash}:{weights[n]:.6f}" for n, c in source_corpora.items()))
    sources = {}
    if need_source:
        sources = {name: (load_token_file(corpus, tokenizer, cache_dir, log), weights[name])
                   for name, corpus in source_corpora.items()}
    target = None
    if need_target:
        target = load_token_file(_prepared(str(cfg.data.target), data_dir), tokenizer, cache_dir, log)
        wanted = int(float(cfg.data.finetune_chars))
        if wanted > target.train.n_chars:
            raise DataError(f"data.finetune_chars={wanted:.3g} exceeds the {cfg.data.target} corpus' "
                            f"{target.train.n_chars:,} training characters; lower data.finetune_chars")
    return RunData(tokenizer=tokenizer, sources=sources, target=target)

