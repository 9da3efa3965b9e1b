"""Files written so that a reader sees the old version or the new one, never a torn one.

Below every stage: corpora, token files, checkpoints, weights and run records all write through
here. Temp names are unique per process (two processes never share one), a finished file gets the
mode the umask gives any new file (a results folder a group shares stays readable), and content
checksums (BLAKE2b) let a reader tell a file from a corrupted copy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads when hashing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What open() gives a new file under the current umask (mkstemp would give 0600)."""
    return 0o666 & ~_umask()


def temp_path(path: Path) -> Path:
    """A hidden sibling of `path` no other process or call uses: .<name>.<pid>-<random>.tmp"""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def orphaned(tmp: Path) -> bool:
    """A temp of temp_path() whose writing process is gone (SIGKILL mid-write): nobody will rename it."""
    pid = Path(tmp).name.rsplit(".", 2)[-2].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False


def replace_into(tmp: Path, path: Path) -> None:
    """Give a finished temp file the umask's mode, flush it to disk and rename it over `path`."""
    os.chmod(tmp, file_mode())
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        replace_into(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new file, never a torn one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def digest(path: Path) -> str:
    """BLAKE2b of a file's bytes (hex): ~1 GB/s, in the standard library."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def as_disk_full(err: BaseException, path: Path) -> BaseException:
    """A library's write error (torch.save raises RuntimeError("... unexpected pos ..."), safetensors
    its own) as the OSError(ENOSPC) it is, where `path`'s disk has under 1 MiB left; else `err`."""
    try:
        full = shutil.disk_usage(Path(path).parent).free < (1 << 20)
    except OSError:
        full = False
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if full and not is_disk_full(err) else err


def disk_full_path(err: BaseException, writing_in: Path | None = None) -> str:
    """The path a disk-full error names: its file, else the folder the failed write was in (a write()
    on an open file raises ENOSPC without a name), else the message."""
    return str(getattr(err, "filename", None) or writing_in or err)
