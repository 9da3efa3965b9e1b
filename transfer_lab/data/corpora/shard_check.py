"""`check --shards`: open every shard of a corpus at its footer or first record, reading no data.

Streaming 50 records (`check`) tries only the first shard; a corrupt last shard would pass and
fail hours into preparation. This opens every one the way its format allows cheaply:
  parquet          the footer (schema, row groups, record count): pyarrow reads the file's tail only
  .gz              the gzip header and the first record (one decompressed block)
  json, csv, text  the first record (line)
  arrow            the stream's schema
A shard damaged inside its data (not at its footer or head) passes here and is found when prepared.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any, BinaryIO

from transfer_lab.errors import DataError

WHAT = {"parquet": "parquet footer", "gz": "gzip header and first record", "json": "first record",
        "arrow": "arrow schema", "line": "first line"}


def _kind(shard: str) -> str:
    name = shard.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        return "gz"
    if name.endswith((".json", ".jsonl")):
        return "json"
    return "arrow" if name.endswith(".arrow") else "line"


def _first_record(handle: BinaryIO, as_json: bool) -> int:
    line = handle.readline()
    if as_json and line.strip():
        json.loads(line)
    return 1 if line.strip() else 0


def open_shard(shard: str) -> tuple[str, int | None]:
    """(which check was done, records the footer counts, or None where only the head was read)."""
    import fsspec  # local paths and hf:// URLs alike (huggingface_hub registers hf://)
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = _kind(shard)
    with fsspec.open(shard, "rb") as handle:
        if kind == "parquet":
            return WHAT[kind], pq.ParquetFile(handle).metadata.num_rows
        if kind == "arrow":
            pa.ipc.open_stream(handle).schema
            return WHAT[kind], None
        if kind == "gz":
            with gzip.GzipFile(fileobj=handle) as inner:
                _first_record(inner, as_json=".json" in shard.lower())
            return WHAT[kind], None
        _first_record(handle, as_json=kind == "json")
        return WHAT[kind], None


def check_shards(label: str, shards: list[str], where: str, fix: str) -> str:
    """One line: how many shards opened, which check each had, and how long it took; DataError
    naming the first shard that does not open."""
    started = time.perf_counter()
    done: dict[str, int] = {}
    rows, counted = 0, True
    for shard in shards:
        try:
            what, n = open_shard(shard)
        except Exception as err:  # noqa: BLE001 - a torn footer, a bad gzip header, a dropped connection
            message = " ".join(str(err).split())[:200]
            raise DataError(f"{label}: shard {shard} does not open ({WHAT[_kind(shard)]}: "
                            f"{type(err).__name__}: {message}); {fix}") from None
        done[what] = done.get(what, 0) + 1
        rows, counted = rows + (n or 0), counted and n is not None
    checks = ", ".join(f"{count} by {what}" for what, count in done.items())
    records = f", {rows:,} records counted" if counted and shards else ""
    return (f"{len(shards)} shards opened ({checks}{records}; no data read) in "
            f"{time.perf_counter() - started:.1f} s [{where}]")


def shards_of(spec: dict[str, Any]) -> tuple[list[str], str, str]:
    """(every shard of a hub or files corpus, where they are read from, the fix for a bad one)."""
    if spec["kind"] == "hub":
        from transfer_lab.data.corpora.hub import SHARD_FIX, shards

        _, files, info = shards(spec)
        return files, info["read_from"], SHARD_FIX
    from transfer_lab.data.corpora.files import resolve_paths

    return [str(p) for p in resolve_paths(spec["paths"])], "files", "replace the file, or drop it from paths"


def check_corpus_shards(spec: dict[str, Any]) -> str:
    files, where, fix = shards_of(spec)
    if not files:
        raise DataError(f"corpus '{spec['name']}' has no shards to open; check its spec")
    return f"{spec['name']}: " + check_shards(f"corpus '{spec['name']}'", files, where, fix)

