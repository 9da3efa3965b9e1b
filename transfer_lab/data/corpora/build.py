"""corpus spec -> prepared folder: <data_dir>/prepared/<name>-<sha8 of spec>/{train,val}.jsonl.

Built once, in a temp folder renamed into place under a file lock; reused afterwards after a
content-hash check. A folder whose files no longer match its manifest is an error, never
rebuilt silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from transfer_lab.atomic_files import atomic_write_text
from transfer_lab.data.corpora.clean import Deduper, clean_item, cut_document
from transfer_lab.data.corpora.files import files_changed, files_items
from transfer_lab.data.corpora.hub import hub_items
from transfer_lab.data.corpora.sources import embedded_items
from transfer_lab.data.corpora.spec import load_corpus_spec, spec_hash
from transfer_lab.errors import DataError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
SCHEMA = 1


@dataclass
class PreparedCorpus:
    name: str
    directory: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def train_chars(self) -> int:
        return self.manifest["splits"]["train"]["chars"]

    @property
    def val_chars(self) -> int:
        return self.manifest["splits"]["val"]["chars"]

    @property
    def train_docs(self) -> int:
        return self.manifest["splits"]["train"]["docs"]

    @property
    def val_docs(self) -> int:
        return self.manifest["splits"]["val"]["docs"]

    def documents(self, split: str) -> Iterator[str]:
        """Documents of `split` in their stored order (train: the fixed seeded shuffle)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        with (self.directory / f"{split}.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)["text"]


def folder_name(spec: dict[str, Any]) -> str:
    return f"{spec['name']}-{spec_hash(spec)[:8]}"


def content_hash(folder: Path) -> str:
    """sha256 over the bytes of train.jsonl then val.jsonl."""
    digest = hashlib.sha256()
    for split in SPLITS:
        with (folder / f"{split}.jsonl").open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def open_prepared(folder: Path, spec: dict[str, Any]) -> PreparedCorpus:
    """Check a finished folder against its manifest and the spec; DataError if it drifted."""
    fix = f"delete {folder} to rebuild it"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        expected = manifest["content_hash"]
        manifest["splits"]["train"]["chars"]
        sources = manifest.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise TypeError(f"'sources' is {type(sources).__name__}, not a list of mappings")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"prepared corpus {folder} has a missing or broken {MANIFEST} "
                        f"({err}); {fix}") from err
    if manifest.get("spec") != spec:
        raise DataError(f"prepared corpus {folder} was built from a different spec than "
                        f"'{spec['name']}' now gives; {fix}")
    try:
        actual = content_hash(folder)
    except OSError as err:
        raise DataError(f"prepared corpus {folder} lacks its text files ({err}); {fix}") from err
    if actual != expected:
        raise DataError(f"prepared corpus {folder} does not match its manifest (content hash "
                        f"{actual[:12]} != {expected[:12]}: files edited or truncated); {fix}")
    try:
        changed = files_changed(sources)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"prepared corpus {folder} has a broken {MANIFEST} (sources: {err!r}); {fix}") from err
    if changed:
        raise DataError(f"source files changed since {folder} was prepared ({changed[0]} ...); "
                        f"{fix}")
    return PreparedCorpus(spec["name"], folder, manifest)


def prepare_corpus(spec: Any, data_dir: Path | str = Path("outputs/data"),
                   workers: int | None = None) -> PreparedCorpus:
    """Build the prepared folder of `spec` once (under a lock), or reuse it."""
    spec = load_corpus_spec(spec)
    data_dir = Path(data_dir)
    root = data_dir / "prepared"
    folder = root / folder_name(spec)
    if folder.is_dir():
        return open_prepared(folder, spec)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f".{folder.name}.lock"))
    with lock:
        if folder.is_dir():  # another process built it while we waited
            return open_prepared(folder, spec)
        for stale in root.glob(f".tmp-{folder.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build; we hold the lock
        tmp = root / f".tmp-{folder.name}-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            build(spec, tmp, data_dir / "raw", workers)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return open_prepared(folder, spec)


def _workers(workers: int | None, n_items: int) -> int:
    if workers is None:
        workers = int(os.environ.get("TRANSFER_LAB_CORPUS_WORKERS", os.cpu_count() or 1))
    return max(1, min(workers, 8)) if n_items >= 64 else 1


def _cleaned(items: list[tuple] | Iterator[tuple], workers: int) -> Iterator[tuple]:
    if workers == 1:
        yield from map(clean_item, items)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(clean_item, items, chunksize=4)


def collect_documents(spec: dict[str, Any], raw_dir: Path, workers: int | None
                      ) -> tuple[list[list[str]], list[dict[str, Any]], dict[str, Any]]:
    """Cleaned, de-duplicated documents in source order, and statistics.

    Each entry is one source document as the list of its pieces (long documents are cut at
    blank lines into pieces of at most max_doc_chars): the split keeps a document's pieces
    together, so no validation piece has a sibling in training.
    """
    if spec["kind"] == "embedded":
        items, infos = embedded_items(spec, raw_dir)
        items = list(items)
        n_workers = _workers(workers, len(items))
    elif spec["kind"] == "files":
        items, infos = files_items(spec)
        n_workers = 1
    else:
        items, infos = hub_items(spec)
        n_workers = 1
    stop_at = spec["max_chars"] if spec["kind"] == "hub" else None
    code = spec["language"] == "code"
    dedup = Deduper(spec["dedup"])
    per_source: dict[str, dict[str, int]] = {}
    docs: list[list[str]] = []
    total = raw_total = 0
    started, last_log = time.time(), time.time()
    for done, (source, texts, raw) in enumerate(_cleaned(items, n_workers), 1):
        if time.time() - last_log > 30:
            last_log = time.time()
            log.info("%s: %d files read, %s chars kept, %.0fs", spec["name"], done,
                     f"{total:,}", last_log - started)
        stats = per_source.setdefault(source, {"raw_chars": 0, "chars": 0, "docs": 0})
        stats["raw_chars"] += raw
        raw_total += raw
        for paragraphs in texts:
            text = dedup(paragraphs, code)
            pieces = []
            for piece in cut_document(text, spec["max_doc_chars"]):
                piece = piece if code else piece.strip()
                if len(piece) < spec["min_doc_chars"]:
                    continue
                pieces.append(piece)
                stats["chars"] += len(piece)
                stats["docs"] += 1
                total += len(piece)
            if pieces:
                docs.append(pieces)
        if stop_at is not None and total >= stop_at:
            break
    for info in infos:
        if "name" in info:
            info.update(per_source.get(info["name"], {}))
    stats = {"per_source": per_source, "raw_chars": raw_total, "cleaned_chars": total,
             "cleaned_docs": sum(map(len, docs)), "dedup_dropped_chars": dedup.dropped_chars,
             "workers": n_workers}
    return docs, infos, stats


def _validation_groups(groups: list[list[str]], val_chars: int) -> tuple[int, int]:
    """How many leading documents make up the validation set, and their characters."""
    count = total = 0
    while count < len(groups) and total < val_chars:
        total += sum(map(len, groups[count]))
        count += 1
    return count, total


def split_documents(groups: list[list[str]], spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Seeded shuffle of source documents, cap at max_chars (a prefix), validation = leading
    documents up to val_chars; a document's pieces stay together, in train or in val. With
    train_order "pieces" the training pieces are then shuffled among themselves (seeded)."""
    name = spec["name"]
    if not groups:
        raise DataError(f"corpus '{name}' is empty after cleaning (language filter, "
                        "de-duplication); check its files, language and lang_filter")
    order = list(range(len(groups)))
    random.Random(spec["seed"]).shuffle(order)
    shuffled_groups = [groups[i] for i in order]
    n_val_groups, val_total = _validation_groups(shuffled_groups, spec["val_chars"])
    if n_val_groups >= len(shuffled_groups):  # too few documents: split their pieces instead
        shuffled_groups = [[piece] for group in shuffled_groups for piece in group]
        n_val_groups, val_total = _validation_groups(shuffled_groups, spec["val_chars"])
    val = [piece for group in shuffled_groups[:n_val_groups] for piece in group]
    shuffled = [piece for group in shuffled_groups[n_val_groups:] for piece in group]
    if spec["train_order"] == "pieces":
        random.Random(spec["seed"] + 1).shuffle(shuffled)
    if spec["max_chars"] is not None:  # caps train + val
        capped, total = [], val_total
        for doc in shuffled:
            if total >= spec["max_chars"]:
                break
            doc = doc[:spec["max_chars"] - total]
            if len(doc) >= spec["min_doc_chars"]:
                capped.append(doc)
            total += len(doc)
        shuffled = capped
    train = shuffled
    train_total = sum(map(len, train))
    if train_total < val_total:
        raise DataError(f"corpus '{name}' has {train_total + val_total:,} characters after "
                        f"cleaning, too few for val_chars={spec['val_chars']:,} plus a larger "
                        "training split; lower val_chars or add data")
    return train, val


def _write_jsonl(path: Path, docs: list[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def build(spec: dict[str, Any], folder: Path, raw_dir: Path, workers: int | None) -> dict:
    start = time.time()
    log.info("preparing corpus %s in %s", spec["name"], folder)
    docs, infos, stats = collect_documents(spec, raw_dir, workers)
    train, val = split_documents(docs, spec)
    del docs
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "val.jsonl", val)
    manifest = {
        "schema": SCHEMA, "name": spec["name"], "spec": spec, "spec_hash": spec_hash(spec),
        "content_hash": content_hash(folder),
        "splits": {"train": {"chars": sum(map(len, train)), "docs": len(train)},
                   "val": {"chars": sum(map(len, val)), "docs": len(val)}},
        "sources": infos, **stats,
        "build_seconds": round(time.time() - start, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest
