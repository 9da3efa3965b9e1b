"""Token files: each (prepared corpus, tokenizer) pair tokenised once into memory-mapped arrays.

Layout of <cache_dir>/tokens/<corpus dir>--<tokenizer id>/:
  {split}.tokens.bin   token ids (uint16 when the vocabulary fits, else uint32); documents
                       follow each other in the prepared order, each followed by <|endoftext|>
  {split}.chars.bin    int64 running character count at the end of each token, so the first
                       D_F characters map to an exact token prefix (subsets are nested)
  meta.json            corpus hash, tokenizer id, counts, tokenisation speed, the files' BLAKE2b
                       checksums (checked once per process; a file that fails is re-tokenised)

A folder is built under a temp name and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock

from transfer_lab.atomic_files import atomic_write_text, digest, temp_path
from transfer_lab.data.tokenizers import TokenizerHandle, batched
from transfer_lab.errors import DataError

SPLITS = ("train", "val")
DOCS_PER_BATCH = 256  # documents per encode_batch call: big enough to keep every core busy


@dataclass(frozen=True)
class TokenSplit:
    tokens: np.ndarray  # memory-mapped ids
    char_ends: np.ndarray  # memory-mapped int64, chars consumed after each token

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_chars(self) -> int:
        return int(self.char_ends[-1]) if len(self.char_ends) else 0

    def tokens_for_chars(self, n_chars: int) -> int:
        """Number of tokens in the prefix that holds `n_chars` characters, to the nearest token."""
        end = int(np.searchsorted(self.char_ends, n_chars, side="left"))
        if end < len(self.char_ends) and end > 0:
            # nearest token boundary: step back if the previous boundary is closer
            if n_chars - self.char_ends[end - 1] < self.char_ends[end] - n_chars:
                end -= 1
        return min(end + 1, len(self.tokens))

    def chars_in(self, n_tokens: int) -> int:
        return int(self.char_ends[n_tokens - 1]) if n_tokens > 0 else 0


@dataclass(frozen=True)
class TokenFile:
    directory: Path
    meta: dict
    train: TokenSplit
    val: TokenSplit

    @property
    def id(self) -> str:
        return self.directory.name


def characters_per_token(handle: TokenizerHandle) -> np.ndarray:
    """How many characters each vocabulary entry completes: its UTF-8 lead bytes.

    Byte-level tokens are byte strings; a character is counted in the token holding its first
    byte, so running sums over token ids give exact character offsets with no per-token Python.
    Special tokens (<|endoftext|>) count 0.
    """
    byte_of = {char: byte for byte, char in enumerate(_byte_level_alphabet())}
    counts = np.zeros(handle.vocab_size, dtype=np.int64)
    special = {handle.eos_id}
    for token, index in handle.tokenizer.get_vocab().items():
        if index in special or index >= handle.vocab_size:
            continue
        raw = bytes(byte_of[c] for c in token if c in byte_of)
        counts[index] = sum(1 for b in raw if b & 0xC0 != 0x80)
    return counts


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _encode_split(documents: Iterator[str], handle: TokenizerHandle, folder: Path, split: str) -> dict:
    dtype = np.uint16 if handle.vocab_size <= 65536 else np.uint32
    chars_of = characters_per_token(handle)
    eos = handle.eos_id
    n_tokens = n_chars = n_docs = n_bytes = 0
    with open(folder / f"{split}.tokens.bin", "wb") as tok_out, open(folder / f"{split}.chars.bin", "wb") as chr_out:
        for docs in batched(documents, DOCS_PER_BATCH):
            # encode_batch_fast skips offsets; characters come from the lead-byte table instead
            encodings = handle.tokenizer.encode_batch_fast(docs, add_special_tokens=False)
            ids = np.fromiter(itertools.chain.from_iterable(enc.ids + [eos] for enc in encodings), dtype=np.int64)
            ends = np.cumsum(chars_of[ids]) + n_chars
            batch_chars = sum(len(doc) for doc in docs)
            if len(ends) and ends[-1] != n_chars + batch_chars:
                raise DataError(f"tokenizer {handle.id} does not round-trip this text; use tokenizer=byte or gpt2")
            tok_out.write(ids.astype(dtype).tobytes())
            chr_out.write(ends.tobytes())
            n_tokens += len(ids)
            n_chars += batch_chars
            n_bytes += sum(len(doc.encode("utf-8")) for doc in docs)
            n_docs += len(docs)
    if n_tokens == 0:
        raise DataError(f"the {split} split has no documents; check the corpus or lower its val_chars")
    return {"tokens": n_tokens, "chars": n_chars, "bytes": n_bytes, "docs": n_docs, "dtype": np.dtype(dtype).name}


def _open_split(folder: Path, split: str, info: dict) -> TokenSplit:
    tok_path, chr_path = folder / f"{split}.tokens.bin", folder / f"{split}.chars.bin"
    itemsize = np.dtype(info["dtype"]).itemsize
    for path, size in ((tok_path, info["tokens"] * itemsize), (chr_path, info["tokens"] * 8)):
        if not path.exists() or path.stat().st_size != size:
            raise DataError(f"token file {path} is missing or truncated; delete {folder} to re-tokenise")
    tokens = np.memmap(tok_path, dtype=info["dtype"], mode="r", shape=(info["tokens"],))
    char_ends = np.memmap(chr_path, dtype=np.int64, mode="r", shape=(info["tokens"],))
    return TokenSplit(tokens=tokens, char_ends=char_ends)


_VERIFIED: set[tuple[str, str]] = set()  # (folder, its checksums) this process has checked


def _read_meta(meta_path: Path) -> dict | None:
    """meta.json, or None where it is missing, torn or incomplete (the folder is then rebuilt)."""
    try:
        meta = json.loads(meta_path.read_text())
        for split in SPLITS:
            info = meta["splits"][split]
            int(info["tokens"]), np.dtype(info["dtype"])
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checksums(folder: Path) -> dict[str, str]:
    return {f"{split}.{kind}.bin": digest(folder / f"{split}.{kind}.bin") for split in SPLITS for kind in ("tokens", "chars")}


def _corruption(folder: Path, meta: dict) -> str:
    """'' if the files match their checksums and every id fits the vocabulary, else what is wrong."""
    for name, expected in meta["checksums"].items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing or not a file"
        if digest(path) != expected:
            return f"{path} does not match its checksum (edited or corrupted)"
    for split in SPLITS:
        info = meta["splits"][split]
        ids = np.memmap(folder / f"{split}.tokens.bin", dtype=info["dtype"], mode="r")
        if len(ids) != info["tokens"]:
            return f"{folder / f'{split}.tokens.bin'} holds {len(ids)} ids, its meta.json {info['tokens']}"
        if len(ids) and int(ids.max()) >= meta["vocab_size"]:
            return f"{folder / f'{split}.tokens.bin'} holds ids past the vocabulary ({int(ids.max())} >= {meta['vocab_size']})"
    return ""


def _build(corpus, handle: TokenizerHandle, folder: Path, log) -> dict:
    """Tokenise into a temp folder renamed into place: readers never see half a token file, and
    processes still mapping an old copy keep reading it."""
    tmp = temp_path(folder)
    tmp.mkdir()
    try:
        started = time.perf_counter()
        splits = {split: _encode_split(corpus.documents(split), handle, tmp, split) for split in SPLITS}
        seconds = time.perf_counter() - started
        megabytes = sum(s["bytes"] for s in splits.values()) / 1e6
        meta = {"corpus": corpus.name, "corpus_hash": corpus.content_hash, "tokenizer": handle.id,
                "vocab_size": handle.vocab_size, "eos_id": handle.eos_id, "splits": splits,
                "seconds": round(seconds, 3), "mb_per_s": round(megabytes / max(seconds, 1e-9), 3),
                "checksums": _checksums(tmp)}
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2))
        if folder.exists():
            old = temp_path(folder)
            folder.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    chars = sum(s["chars"] for s in splits.values())
    tokens = sum(s["tokens"] for s in splits.values())
    log(f"tokenised {corpus.name} with {handle.id}: {chars:,} chars -> {tokens:,} tokens "
        f"({chars / tokens:.2f} chars/token) in {seconds:.1f} s = {meta['mb_per_s']:.2f} MB/s")
    return meta


def load_token_file(corpus, handle: TokenizerHandle, cache_dir: Path, log=print) -> TokenFile:
    """Tokenise `corpus` (a PreparedCorpus) with `handle` once; later calls only map the files.

    The first use in a process checks the files against the checksums in meta.json and every id
    against the vocabulary; a folder that fails is re-tokenised, with a warning naming the file."""
    folder = Path(cache_dir) / "tokens" / f"{corpus.directory.name}--{handle.id}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        meta = _read_meta(folder / "meta.json")
        if meta is None:  # never built, or an unfinished or broken earlier attempt
            if folder.exists():
                log(f"warning: {folder / 'meta.json'} is missing, torn or incomplete; re-tokenising {folder.name}")
            meta = _build(corpus, handle, folder, log)
        elif "checksums" not in meta:  # made before token files carried checksums: record them now
            meta["checksums"] = _checksums(folder)
            atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
        if (str(folder), json.dumps(meta["checksums"], sort_keys=True)) not in _VERIFIED:
            problem = _corruption(folder, meta)
            if problem:
                log(f"warning: {problem}; re-tokenising {folder.name}")
                meta = _build(corpus, handle, folder, log)
            _VERIFIED.add((str(folder), json.dumps(meta["checksums"], sort_keys=True)))
    if meta.get("corpus_hash") != corpus.content_hash or meta.get("tokenizer") != handle.id:
        raise DataError(f"token file {folder} was made from other text or another tokenizer; delete it to re-tokenise")
    return TokenFile(directory=folder, meta=meta, train=_open_split(folder, "train", meta["splits"]["train"]),
                     val=_open_split(folder, "val", meta["splits"]["val"]))
