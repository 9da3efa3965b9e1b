"""From corpus names to token files: prepare corpora, build the tokenizer, tokenise once.

This is the one place that chains the data stages (corpora → tokenization → tokens); the
training code receives token files and never looks behind them.
"""

from __future__ import annotations

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
        return _normalised({str(name): float(weight) for name, weight in source.items()})
    return {str(source): 1.0}


@lru_cache(maxsize=16)
def _prepared(name: str, data_dir: str):
    # multirun jobs share one process: a corpus is checked and opened once per process
    return prepare_corpus(load_corpus_spec(name), data_dir=Path(data_dir))


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def tokenizer_corpora(cfg: DictConfig) -> dict[str, float]:
    """What a BPE learns from: tokenizer.train_on ({corpus: weight}) if set, else the source (mix)."""
    train_on = cfg.tokenizer.get("train_on")
    if train_on:
        return _normalised({str(name): float(weight) for name, weight in train_on.items()})
    return source_weights(cfg)


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


def load_corpus_tokens(cfg: DictConfig, name: str, tokenizer: TokenizerHandle, log=print) -> TokenFile:
    """One more corpus tokenised with the run's tokenizer (preparing a sweep's data ahead of it)."""
    return load_token_file(_prepared(name, str(cfg.paths.data_dir)), tokenizer, Path(cfg.paths.cache_dir), log)


def load_run_data(cfg: DictConfig, need_source: bool, need_target: bool, log=print) -> RunData:
    data_dir, cache_dir = str(cfg.paths.data_dir), Path(cfg.paths.cache_dir)
    weights = source_weights(cfg)
    learn_from = tokenizer_corpora(cfg)
    corpora = {name: _prepared(name, data_dir) for name in learn_from}
    budget = int(float(cfg.tokenizer.get("train_chars") or 5e6))
    tokenizer = load_tokenizer(
        OmegaConf.to_container(cfg.tokenizer, resolve=True), cache_dir,
        training_documents=_balanced_documents([(corpora[n], w) for n, w in learn_from.items()], budget),
        training_corpus_hash="balanced:" + "+".join(f"{c.content_hash}:{learn_from[n]:.6f}" for n, c in corpora.items()))
    sources = {}
    if need_source:
        source_corpora = {name: _prepared(name, data_dir) for name in weights}
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

