"""Hub corpora (kind: hub): stream a public dataset, shard by shard, until max_chars are kept.

The repository is read through `datasets` with no loading script (datasets 5.x refuses them) and
no remote code: its configs and shards come from the repository's own data files
(`load_dataset_builder`), and each shard is streamed by itself so that an error names the shard.

Switches:
  HF_HUB_OFFLINE=0            go online (the default is offline: no silent hub lookups)
  TRANSFER_LAB_HUB_MIRROR=DIR read <DIR>/<owner>/<name>/ instead of the hub repository owner/name
                              (a local or shared-filesystem copy laid out like the repository)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

from transfer_lab.errors import DataError

MIRROR_ENV = "TRANSFER_LAB_HUB_MIRROR"
HF_URL = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)(?:@[^/]+)?/(.*)$")
PACKAGED = ("parquet", "json", "csv", "text", "arrow")  # builders named in place of a repository


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def offline_hint() -> str:
    forced = os.environ.get("HF_DATASETS_OFFLINE")
    extra = f" (HF_DATASETS_OFFLINE={forced} overrides it: unset it)" if forced not in (None, "", "0") else ""
    return f"the hub is switched off; set HF_HUB_OFFLINE=0 to stream from it{extra}, or {MIRROR_ENV}=<folder> for a local copy"


def _mirrored(path: str) -> str:
    """A repository id or hf:// URL, or its copy under $TRANSFER_LAB_HUB_MIRROR where one is set."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return path
    match = HF_URL.match(path)
    if match:
        return str(Path(mirror) / match.group(1) / match.group(2))
    return str(Path(mirror) / path) if (Path(mirror) / path).is_dir() else path


def _mirrored_files(files: Any) -> Any:
    """data_files (a pattern, a list, or {split: patterns}) with each hf:// URL mirrored."""
    if isinstance(files, dict):
        return {split: _mirrored_files(f) for split, f in files.items()}
    if isinstance(files, list):
        return [_mirrored(str(f)) for f in files]
    return _mirrored(str(files))


def location(spec: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(what load_dataset_builder opens, its keyword arguments, whether it is a local copy)."""
    kwargs = dict(spec["load_kwargs"])
    if "data_files" in kwargs:
        kwargs["data_files"] = _mirrored_files(kwargs["data_files"])
    path = spec["path"] if spec["path"] in PACKAGED else _mirrored(spec["path"])
    local = path != spec["path"] or kwargs.get("data_files") != spec["load_kwargs"].get("data_files")
    if spec["revision"] and not local:
        kwargs["revision"] = spec["revision"]
    return path, kwargs, local


def _fail(spec: dict[str, Any], what: str, err: BaseException, fix: str) -> DataError:
    message = " ".join(str(err).split())[:240]
    return DataError(f"hub corpus '{spec['name']}' ({spec['path']}): {what}: {type(err).__name__}: {message}; {fix}")


def shards(spec: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """(the builder that reads each shard, the shards of the spec's split, provenance)."""
    import datasets

    path, kwargs, local = location(spec)
    if not local and _offline():
        raise DataError(f"hub corpus '{spec['name']}' ({spec['path']}): {offline_hint()}")
    try:
        builder = datasets.load_dataset_builder(path, spec["config_name"], **kwargs)
    except Exception as err:  # a loading script, a gate, an unknown id, no network, a bad config name
        text = str(err)
        if "scripts are no longer supported" in text:
            fix = "the repository holds a loading script, which datasets 5.x refuses: name its parquet files instead"
        elif "gated" in text.lower() or "401" in text or "403" in text:
            fix = "the dataset is gated: accept its terms on the hub and log in (huggingface-cli login)"
        else:
            fix = "check the dataset id, config_name and network access"
        raise _fail(spec, "cannot open the repository", err, fix) from None
    files = (builder.config.data_files or {}).get(spec["split"])
    if not files:
        found = sorted((builder.config.data_files or {}).keys())
        raise DataError(f"hub corpus '{spec['name']}' ({spec['path']}): no data files for split '{spec['split']}' "
                        f"(splits: {found}); set split in the corpus spec")
    info = {"from": "hub", "path": spec["path"], "config_name": spec["config_name"], "split": spec["split"],
            "revision": spec["revision"], "builder": builder.name, "shards": len(files),
            "read_from": os.environ[MIRROR_ENV] if local else "hub"}
    return builder.name, list(files), info


def hub_items(spec: dict[str, Any]) -> tuple[Iterator[tuple], list[dict[str, Any]]]:
    reader, files, info = shards(spec)
    return _stream(spec, reader, files), [info]


def records(spec: dict[str, Any], reader: str, files: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shard, record) for every record of every shard; an error names the corpus and the shard."""
    import datasets

    for shard in files:
        try:
            stream = datasets.load_dataset(reader, data_files=[shard], split="train", streaming=True)
            for record in stream:
                yield shard, record
        except DataError:
            raise
        except Exception as err:  # a corrupt shard, a dropped connection, a 403/429 mid-stream
            raise _fail(spec, f"reading shard {shard} failed", err,
                        "retry later, or delete the shard from your mirror") from None


def _stream(spec: dict[str, Any], reader: str, files: list[str]) -> Iterator[tuple]:
    field, where = spec["text_field"], spec["where"]
    checked = False
    for shard, record in records(spec, reader, files):
        if not checked:  # the first record: a misnamed field would otherwise stream the whole dataset
            missing = [f for f in [field, *where] if f not in record]
            if missing:
                key = "text_field" if field in missing else "where"
                raise DataError(f"hub corpus '{spec['name']}' ({spec['path']}): the records have no field "
                                f"{missing[0]!r} (fields: {sorted(record)}); fix {key} in the corpus spec")
            checked = True
        if not all(record.get(f) in (v if isinstance(v, list) else [v]) for f, v in where.items()):
            continue
        text = record[field]
        if isinstance(text, str) and text:
            yield ("hub", "text", None, text, spec)
