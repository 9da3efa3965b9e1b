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

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from transfer_lab.errors import DataError

MIRROR_ENV = "TRANSFER_LAB_HUB_MIRROR"
HF_URL = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)(?:@[^/]+)?/(.*)$")
PACKAGED = ("parquet", "json", "csv", "text", "arrow")  # builders named in place of a repository
SHARD_FIX = "download the shard again or delete it from your mirror (on the hub: retry later)"


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def offline_hint() -> str:
    forced = os.environ.get("HF_DATASETS_OFFLINE")
    extra = f" (HF_DATASETS_OFFLINE={forced} overrides it: unset it)" if forced not in (None, "", "0") else ""
    return f"the hub is switched off; set HF_HUB_OFFLINE=0 to stream from it{extra}, or {MIRROR_ENV}=<folder> for a local copy"


def _mirror_folder(mirror: str, repo: str) -> Path:
    """<mirror>/<owner>/<name>, which must exist once the mirror is set: a missing copy is the
    mirror's fault, never a reason to fall back to the (switched-off) hub."""
    folder = Path(mirror) / repo
    if not folder.is_dir():
        raise DataError(f"{MIRROR_ENV}={mirror} is set, but it holds no copy of {repo}: {folder} is not a folder; "
                        f"copy the repository there (or unset {MIRROR_ENV} and set HF_HUB_OFFLINE=0 to stream "
                        "from the hub)")
    return folder


def _mirrored(path: str) -> str:
    """A repository id or hf:// URL, or its copy under $TRANSFER_LAB_HUB_MIRROR where one is set."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return path
    match = HF_URL.match(path)
    if match:
        return str(_mirror_folder(mirror, match.group(1)) / match.group(2))
    return str(_mirror_folder(mirror, path))


def _mirrored_files(files: Any) -> Any:
    """data_files (a pattern, a list, or {split: patterns}) with each hf:// URL mirrored."""
    if isinstance(files, dict):
        return {split: _mirrored_files(f) for split, f in files.items()}
    if isinstance(files, list):
        return [_mirrored_files(f) for f in files]
    return _mirrored(str(files)) if HF_URL.match(str(files)) else files  # a local path stays as it is


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
    return DataError(f"{_name(spec)}: {what}: {type(err).__name__}: {message}; {fix}")


def _name(spec: dict[str, Any]) -> str:
    return f"hub corpus '{spec['name']}' ({spec['path']})"


def shards(spec: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """(the builder that reads each shard, the shards of the spec's split, provenance)."""
    try:
        path, kwargs, local = location(spec)
    except DataError as err:
        raise DataError(f"{_name(spec)}: {err}") from None
    if not local and _offline():
        raise DataError(f"{_name(spec)}: {offline_hint()}")
    if local and spec["config_name"] and spec["path"] not in PACKAGED:
        reader, files = _mirror_config_files(spec, Path(path))
    else:
        reader, files = _builder_files(spec, path, kwargs, local)
    info = {"from": "hub", "path": spec["path"], "config_name": spec["config_name"], "split": spec["split"],
            "revision": spec["revision"], "builder": reader, "shards": len(files),
            "read_from": os.environ[MIRROR_ENV] if local else "hub"}
    return reader, files, info


def _builder_files(spec: dict[str, Any], path: str, kwargs: dict[str, Any], local: bool) -> tuple[str, list[str]]:
    """The split's shards as `datasets` resolves the repository (or the named data_files)."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(path, spec["config_name"], **kwargs)
    except Exception as err:  # a loading script, a gate, an unknown id, no network, a bad config name
        text = str(err)
        if "scripts are no longer supported" in text:
            fix = "the repository holds a loading script, which datasets 5.x refuses: name its parquet files instead"
        elif "gated" in text.lower() or "401" in text or "403" in text:
            fix = "the dataset is gated: accept its terms on the hub and log in (huggingface-cli login)"
        elif local and "data_files" in kwargs and isinstance(err, FileNotFoundError):
            fix = f"the mirror lacks the files {kwargs['data_files']}: copy them there, or fix data_files"
        else:
            fix = "check the dataset id, config_name and network access"
        raise _fail(spec, "cannot open the repository", err, fix) from None
    found = builder.config.data_files or {}
    files = found.get(spec["split"])
    if files:
        return builder.name, list(files)
    named = kwargs.get("data_files")
    named = named.get(spec["split"]) if isinstance(named, dict) else named
    if spec["split"] in found or (local and named):
        where = f"{named} matches nothing" if named else f"{path} holds none"
        raise DataError(f"{_name(spec)}: no data files for split '{spec['split']}': {where}; "
                        f"copy its shards there{'' if local else ' (or fix data_files)'}")
    raise DataError(f"{_name(spec)}: no split '{spec['split']}' (splits: {sorted(found)}); "
                    "set split in the corpus spec")


def _mirror_config_files(spec: dict[str, Any], folder: Path) -> tuple[str, list[str]]:
    """The config's shards in a local copy, named from the repository's own README: `datasets`
    would look for the README's first config to decide the format, which a copy holding only the
    languages a user needs lacks (FineWeb-2 lists ~1,900 configs, aai_Latn first)."""
    from datasets.data_files import DataFilesList, resolve_pattern, sanitize_patterns
    from datasets.load import infer_module_for_data_files_list
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    config, split, readme = spec["config_name"], spec["split"], folder / "README.md"
    if not readme.is_file():
        raise DataError(f"{_name(spec)}: the mirror {folder} has no README.md, which names the files of config "
                        f"'{config}'; copy the repository's README.md into it")
    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(readme).data)
    except Exception as err:  # noqa: BLE001 - a README whose YAML header does not parse
        raise _fail(spec, f"cannot read {readme}", err, "copy the repository's README.md again") from None
    if not configs:
        raise DataError(f"{_name(spec)}: {readme} names no configs (its YAML header has no `configs:`); copy the "
                        "repository's own README.md into the mirror")
    if config not in configs:
        names = list(configs)
        raise DataError(f"{_name(spec)}: config_name '{config}' is not among the {len(names)} configs of {readme} "
                        f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); fix config_name")
    patterns = sanitize_patterns(configs[config].get("data_files") or {}).get(split)
    if not patterns:
        raise DataError(f"{_name(spec)}: config '{config}' has no split '{split}' in {readme}; "
                        "set split in the corpus spec")
    files: list[str] = []
    for pattern in patterns:
        try:
            files += resolve_pattern(pattern, base_path=str(folder))
        except FileNotFoundError:
            raise DataError(f"{_name(spec)}: the mirror holds no files for config '{config}', split '{split}': "
                            f"{folder / pattern} matches nothing; copy the config's shards there") from None
    reader, _ = infer_module_for_data_files_list(DataFilesList(files, [None] * len(files)))
    if reader is None:
        raise DataError(f"{_name(spec)}: no reader for the files of {folder / patterns[0]}; "
                        "give parquet or json shards")
    return reader, files


def hub_items(spec: dict[str, Any]) -> tuple[Iterator[tuple], list[dict[str, Any]]]:
    reader, files, info = shards(spec)
    return _stream(spec, reader, files), [info]


def records(spec: dict[str, Any], reader: str, files: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shard, record) for every record of every shard; an error names the corpus and the shard.

    `datasets` logs a shard it cannot read twice before it raises (its own line, and the same
    through the root logger): muted here, where the raise becomes the user's one line."""
    import datasets

    quiet = logging.getLogger("datasets.packaged_modules")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        for shard in files:
            try:
                stream = datasets.load_dataset(reader, data_files=[shard], split="train", streaming=True)
                for record in stream:
                    yield shard, record
            except DataError:
                raise
            except Exception as err:  # a corrupt shard, a dropped connection, a 403/429 mid-stream
                raise _fail(spec, f"reading shard {shard} failed", err, SHARD_FIX) from None
    finally:
        quiet.setLevel(level)


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
