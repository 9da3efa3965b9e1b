"""Corpus specs: conf/data/corpus/<name>.yaml, loaded and normalised into a plain dict.

A normalised spec has every default filled in, so two specs that mean the same corpus hash to
the same prepared folder (`spec_hash`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from transfer_lab.errors import ConfigError

# Bump when cleaning/reading changes the prepared text: folders then get new names and the
# old ones are no longer reused.
PIPELINE_VERSION = 3  # 3: a document's pieces stay on one side of the split
CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "data" / "corpus"
KINDS = ("embedded", "files", "hub")
LANGUAGES = ("en", "de", "es", "zh", "code")
DEDUP = ("paragraph", "document", "none")
FORMATS = ("text", "json", "parquet")
TRAIN_ORDERS = ("pieces", "documents")
SOURCE_FROM = ("debian", "pypi", "stdlib")
READERS = ("text", "text_gz", "html", "man", "pod", "fortune", "gutenberg", "tagged_zh",
           "lines", "python")

COMMON_DEFAULTS: dict[str, Any] = {
    "language": None,  # en|de|es|zh|code|None; prose languages get a per-paragraph filter
    "lang_filter": None,  # None: on for en/de/es/zh, off for code/None
    "dedup": "paragraph",
    "seed": 0,
    "val_chars": 300_000,
    "max_chars": None,
    "max_doc_chars": 4_000,  # longer documents are cut at paragraph boundaries
    "min_doc_chars": 1,
    # training order: "pieces" shuffles the training pieces, so a 1e4-character subset samples
    # several documents rather than the start of one; "documents" keeps each document's pieces
    # in a row. Either way a document stays wholly in train or in val, and subsets are prefixes.
    "train_order": "pieces",
    "description": "",
}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "embedded": {"sources": []},
    "files": {"paths": [], "format": None, "text_field": "text", "sample_by": "document",
              "encoding_errors": "strict"},
    "hub": {"path": None, "config_name": None, "split": "train", "text_field": "text",
            "revision": None, "load_kwargs": {}, "where": {}},
}
SOURCE_DEFAULTS: dict[str, Any] = {"package": None, "meta": None, "include": [], "exclude": [],
                                   "reader": "text", "optional": False, "max_files": None,
                                   "exclude_tests": False}


def available_corpora() -> list[str]:
    """Names of the shipped corpus specs (conf/data/corpus/*.yaml)."""
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def _plain(value: Any) -> Any:
    """A deep copy in plain JSON types (mappings, e.g. a Hydra node, become dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _to_plain(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a corpus spec must be a mapping, got {type(spec).__name__}; "
                          "give a corpus name, a path to a .yaml file or a dict")
    return _plain(spec)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read corpus spec {path}: {err}; fix the YAML file") from err
    if not isinstance(data, dict):
        raise ConfigError(f"corpus spec {path} is not a mapping; write it as 'key: value' lines")
    data.setdefault("name", path.stem)
    return data


def load_corpus_spec(spec: Any) -> dict[str, Any]:
    """A corpus name, a path to a .yaml file, or a dict/DictConfig -> normalised plain dict."""
    if isinstance(spec, (str, Path)):
        text = str(spec)
        path = Path(text)
        if text.endswith((".yaml", ".yml")) or "/" in text:
            if not path.is_file():
                raise ConfigError(f"corpus spec file {path} does not exist; check the path")
            return normalise_spec(_read_yaml(path))
        candidate = CONF_DIR / f"{text}.yaml"
        if not candidate.is_file():
            raise ConfigError(f"unknown corpus '{text}'; choose one of {available_corpora()} "
                              "or give a path to a corpus .yaml")
        return normalise_spec(_read_yaml(candidate))
    return normalise_spec(_to_plain(spec))


def _check_choice(name: str, key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"corpus '{name}': {key}={value!r} is not one of {list(choices)}; "
                          "fix the corpus spec")


def _check_int(name: str, key: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"corpus '{name}': {key}={value!r} must be an integer >= {minimum}; "
                          "fix the corpus spec")


def normalise_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, validate types and choices; unknown keys are an error (catches typos)."""
    raw = _to_plain(raw)
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"corpus spec needs a 'name' without '/' (got {name!r}); add one")
    kind = raw.get("kind", "embedded")
    _check_choice(name, "kind", kind, KINDS)
    spec: dict[str, Any] = {"name": name, "kind": kind, **COMMON_DEFAULTS, **KIND_DEFAULTS[kind]}
    unknown = set(raw) - set(spec)
    if unknown:
        raise ConfigError(f"corpus '{name}': unknown keys {sorted(unknown)} for kind '{kind}'; "
                          f"allowed: {sorted(spec)}")
    spec.update(raw)
    if spec["language"] is not None:
        _check_choice(name, "language", spec["language"], LANGUAGES)
    if spec["lang_filter"] is None:
        spec["lang_filter"] = spec["language"] in ("en", "de", "es", "zh")
    if spec["lang_filter"] and spec["language"] not in ("en", "de", "es", "zh"):
        raise ConfigError(f"corpus '{name}': lang_filter needs language en|de|es|zh; "
                          "set language or lang_filter: false")
    _check_choice(name, "dedup", spec["dedup"], DEDUP)
    _check_int(name, "seed", spec["seed"], 0)
    _check_int(name, "val_chars", spec["val_chars"], 1)
    _check_int(name, "max_chars", spec["max_chars"], 1, allow_none=True)
    _check_int(name, "max_doc_chars", spec["max_doc_chars"], 100)
    _check_int(name, "min_doc_chars", spec["min_doc_chars"], 1)
    _check_choice(name, "train_order", spec["train_order"], TRAIN_ORDERS)
    if spec["max_chars"] is not None and spec["max_chars"] <= spec["val_chars"]:
        raise ConfigError(f"corpus '{name}': max_chars={spec['max_chars']} leaves no training "
                          f"text after val_chars={spec['val_chars']}; raise max_chars")
    getattr(_KIND_CHECKS, kind)(name, spec)
    return spec


class _KIND_CHECKS:
    @staticmethod
    def embedded(name: str, spec: dict[str, Any]) -> None:
        if not spec["sources"]:
            raise ConfigError(f"corpus '{name}': an embedded corpus needs 'sources'; add some")
        sources = []
        for i, src in enumerate(spec["sources"]):
            if not isinstance(src, dict) or "from" not in src or "name" not in src:
                raise ConfigError(f"corpus '{name}': source #{i} needs 'name' and 'from' "
                                  f"({'|'.join(SOURCE_FROM)}); fix the corpus spec")
            unknown = set(src) - set(SOURCE_DEFAULTS) - {"name", "from"}
            if unknown:
                raise ConfigError(f"corpus '{name}': source '{src['name']}' has unknown keys "
                                  f"{sorted(unknown)}; allowed: {sorted(SOURCE_DEFAULTS)}")
            src = {**SOURCE_DEFAULTS, **src}
            _check_choice(name, "source.from", src["from"], SOURCE_FROM)
            _check_choice(name, "source.reader", src["reader"], READERS)
            if src["from"] != "stdlib" and not src["package"]:
                raise ConfigError(f"corpus '{name}': source '{src['name']}' needs 'package'")
            for key in ("include", "exclude"):
                if isinstance(src[key], str):
                    src[key] = [src[key]]
            if not src["include"]:
                raise ConfigError(f"corpus '{name}': source '{src['name']}' needs 'include' "
                                  "globs (relative paths inside the package)")
            _check_int(name, "source.max_files", src["max_files"], 1, allow_none=True)
            sources.append(src)
        spec["sources"] = sources

    @staticmethod
    def files(name: str, spec: dict[str, Any]) -> None:
        paths = spec["paths"]
        if isinstance(paths, str):
            paths = [paths]
        if not paths or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"corpus '{name}': kind 'files' needs 'paths' (files or globs)")
        spec["paths"] = [str(p) for p in paths]
        if spec["format"] == "txt":
            spec["format"] = "text"
        if spec["format"] == "jsonl":
            spec["format"] = "json"
        if spec["format"] is not None:
            _check_choice(name, "format", spec["format"], FORMATS)
        _check_choice(name, "sample_by", spec["sample_by"], ("document", "paragraph", "line"))
        _check_choice(name, "encoding_errors", spec["encoding_errors"], ("strict", "replace"))

    @staticmethod
    def hub(name: str, spec: dict[str, Any]) -> None:
        if not isinstance(spec["path"], str) or not spec["path"]:
            raise ConfigError(f"corpus '{name}': kind 'hub' needs 'path' (a dataset id)")
        if spec["max_chars"] is None:
            raise ConfigError(f"corpus '{name}': kind 'hub' needs 'max_chars' (how many "
                              "characters to stream); add it")
        if not isinstance(spec["load_kwargs"], dict) or "trust_remote_code" in spec["load_kwargs"]:
            raise ConfigError(f"corpus '{name}': load_kwargs must be a mapping without "
                              "trust_remote_code (remote code is never run); remove it")
        if not isinstance(spec["where"], dict):
            raise ConfigError(f"corpus '{name}': 'where' must map field -> value or [values]")


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 of the normalised spec and the pipeline version (description excluded)."""
    keyed = {k: v for k, v in spec.items() if k != "description"}
    keyed["_pipeline"] = PIPELINE_VERSION
    blob = json.dumps(keyed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
