"""User files (kind: files): txt / jsonl / parquet, loaded with datasets' streaming loaders."""

from __future__ import annotations

import codecs
import errno
import glob
import os
import stat
from pathlib import Path
from typing import Any, Iterator

from transfer_lab.errors import ConfigError, DataError

EXTENSIONS = {".txt": "text", ".text": "text", ".md": "text", ".rst": "text", ".py": "text",
              ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def resolve_paths(patterns: list[str]) -> list[Path]:
    """Each path or glob -> sorted existing files; a glob that matches nothing is an error."""
    out: list[Path] = []
    for pattern in patterns:
        pattern = str(Path(pattern).expanduser())
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise DataError(f"corpus glob '{pattern}' matches no files; fix the path "
                                "(relative paths start at the working directory)")
            out.extend(matches)
        else:
            path = Path(pattern)
            if path.is_dir():
                raise DataError(f"corpus path '{pattern}' is a folder; give a glob such as "
                                f"'{pattern}/**/*.txt'")
            if not path.is_file():
                raise DataError(f"corpus file '{pattern}' {_not_a_file(path)}")
            out.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return unique


def _not_a_file(path: Path) -> str:
    """Why a path that is no folder is no file either, and the fix (never read: /dev/zero never ends)."""
    if not os.path.lexists(path):
        return "does not exist; fix the path"
    try:
        mode = path.stat().st_mode
    except OSError as err:  # ELOOP, or a link to nothing
        loop = err.errno == errno.ELOOP
        return f"is a symbolic link {'loop' if loop else f'to nothing ({err.strerror})'}; point paths at the file itself"
    kinds = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not a regular file; give a txt, jsonl or parquet file"


def infer_format(spec: dict[str, Any], paths: list[Path]) -> str:
    if spec["format"]:
        return spec["format"]
    found = {EXTENSIONS.get(p.suffix.lower()) for p in paths}
    if None in found or len(found) != 1:
        raise ConfigError(f"corpus '{spec['name']}': cannot infer one format from the file "
                          f"extensions {sorted({p.suffix for p in paths})}; set format: "
                          "txt|jsonl|parquet")
    return found.pop()


def check_utf8(path: Path, errors: str) -> None:
    """DataError for binary files (NUL bytes) and, when strict, invalid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if b"\x00" in chunk:
                raise DataError(f"file {path} looks binary (NUL bytes); give a UTF-8 text file")
            if errors == "strict":
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"file {path} is not valid UTF-8 (byte {offset + err.start}); convert "
                        "it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or set "
                        "encoding_errors: replace in the corpus spec") from err
            offset += len(chunk)
    if errors == "strict":
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            raise DataError(f"file {path} ends inside a UTF-8 character; convert it to "
                            "UTF-8 or set encoding_errors: replace") from err


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def checked_files(spec: dict[str, Any]) -> tuple[list[Path], str]:
    """(paths, format) of a files corpus, every text file checked: DataError for a missing,
    binary or (when strict) non-UTF-8 file."""
    paths = resolve_paths(spec["paths"])
    fmt = infer_format(spec, paths)
    if fmt in ("text", "json"):
        for path in paths:
            check_utf8(path, spec["encoding_errors"])
    return paths, fmt


def files_items(spec: dict[str, Any]) -> tuple[Iterator[tuple], list[dict[str, Any]]]:
    """Work items ("files", "text", None, document, spec) and the files' fingerprints."""
    paths, fmt = checked_files(spec)
    infos = [{"from": "files", "format": fmt, **_fingerprint(p)} for p in paths]
    return _stream(spec, fmt, paths), infos


def _stream(spec: dict[str, Any], fmt: str, paths: list[Path]) -> Iterator[tuple]:
    import datasets

    kwargs: dict[str, Any] = {}
    if fmt == "text":
        kwargs = {"sample_by": spec["sample_by"], "keep_linebreaks": True,
                  "encoding_errors": spec["encoding_errors"]}
    field = "text" if fmt == "text" else spec["text_field"]
    for path in paths:  # one load per file keeps file order and names the file on errors
        try:
            stream = datasets.load_dataset(fmt, data_files=[str(path)], split="train",
                                           streaming=True, **kwargs)
            for record in stream:
                if field not in record:
                    raise DataError(f"file {path} has no field '{field}' (fields: "
                                    f"{sorted(record)}); set text_field in the corpus spec")
                text = record[field]
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise DataError(f"file {path}: field '{field}' holds "
                                    f"{type(text).__name__}, not text; set text_field")
                yield ("files", "text", None, text, spec)
        except DataError:
            raise
        except Exception as err:  # datasets wraps parse errors in many types
            message = " ".join(str(err).split())[:300]
            raise DataError(f"cannot read {path} as {fmt}: {message}; check the file and "
                            "its format") from err


def files_changed(infos: list[dict[str, Any]]) -> list[str]:
    """Paths whose size or mtime differs from the fingerprint recorded at prepare time."""
    changed = []
    for info in infos:
        if info.get("from") != "files":
            continue
        path = Path(info["path"])
        if not path.is_file() or _fingerprint(path) != {k: info[k] for k in
                                                        ("path", "bytes", "mtime_ns")}:
            changed.append(str(path))
    return changed
