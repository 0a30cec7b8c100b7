"""Files of a run: atomic writes, the folder lock, orphaned temporary files, disk-full and
unwritable-folder errors, the run summary."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


SUMMARY_FILE = "summary.json"


class DiskFullError(ValueError):
    """The disk filled up while a file was written; the message names the file. The file's
    previous version (if any) is untouched: writes go to a temporary file first."""


class UnwritableError(ValueError):
    """A folder a run must write into cannot be created or written; the message names it."""


class FolderLockedError(ValueError):
    """Another process holds a run folder's lock; the message names the folder and lock file."""


# -- files --------------------------------------------------------------------------------------
TMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


"""Names of :func:`atomic_write`'s temporary files, ``.<name>.<12 hex digits>.tmp``."""


_TORCH_WRITE_ERRORS = ("iostream error", "file write failed", "No space left", "unexpected pos")


"""What torch.save's C++ writer says when a write comes up short (it hides the errno)."""


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_ERRORS)


def _free_mb(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return float("nan")


def disk_full_error(path: str | os.PathLike, e: BaseException) -> BaseException:
    """``e`` as a :class:`DiskFullError` naming ``path`` when it means a full disk (ENOSPC,
    EDQUOT, or torch.save's "basic_ios::clear: iostream error"); else ``e`` itself."""
    if not _is_disk_full(e):
        return e
    path = Path(path)
    return DiskFullError(
        f"disk full: could not write {str(path)!r} ({_free_mb(path.parent):.1f} MB free there; "
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
        "its previous version, if any, is unchanged"
    )


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers never see a
    half-written file. The file gets the permissions of the user's umask (as ``open`` would).
    A full disk is a :class:`DiskFullError` naming ``path``; the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        error = disk_full_error(path, e)
        Path(tmp).unlink(missing_ok=True)
        if error is e:
            raise
        raise error from e
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` (and parents) and write a probe file in it; a folder that is a file or
    cannot be written is an :class:`UnwritableError` naming ``what`` and the path."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnwritableError(f"{what} {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f" ({e.filename!r})" if e.filename and str(e.filename) != str(folder) else ""
        reason = e.strerror or str(e)
        raise UnwritableError(f"{what} {str(folder)!r} is not writable: {reason}{where}") from e
    return folder


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` calls that were killed (names matching
    ``TMP_PATTERN``) in ``folder``; call it only while holding the folder's lock."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if TMP_PATTERN.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


LOCK_FILE = ".run.lock"


def lock_folder(folder: str | os.PathLike, key: str = "hydra.run.dir"):  # -> filelock.FileLock
    """Hold ``folder``'s lock (``<folder>/.run.lock``, an OS lock freed when the process dies);
    held by another process, a :class:`FolderLockedError` naming folder, lock file and ``key``
    (the setting that picks another folder)."""
    from filelock import FileLock, Timeout

    path = Path(folder) / LOCK_FILE
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderLockedError(
            f"run folder {str(folder)!r} is in use by another run (lock {str(path)!r} is held); "
            f"wait for it to end or pick another folder ({key}=...)"
        ) from None
    except OSError as e:
        raise UnwritableError(f"cannot create the lock {str(path)!r}: {e.strerror or e}") from e
    return lock


def read_regular_text(path: str | os.PathLike, what: str, limit: int) -> str:
    """The UTF-8 text of ``path``, a regular file (a link to one is fine) of at most ``limit``
    bytes; a device, FIFO or folder (a ``summary.json`` linked to ``/dev/zero`` must not hang),
    a larger file or one that is not UTF-8 text is a ValueError naming ``what`` and the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what} {str(path)!r} is not a regular file (a device, FIFO or link)")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {str(path)!r} is larger than {limit} bytes: not one written here")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[e.start]:02x} at {e.start})"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_summary(directory: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Write a run's one-line JSON summary (``summary.json``) atomically; sweeps collect these."""
    line = json.dumps({k: _jsonable(v) for k, v in summary.items()}, sort_keys=True)

    def write(tmp: str) -> None:
        Path(tmp).write_text(line + "\n")

    return atomic_write(Path(directory) / SUMMARY_FILE, write)


__all__ = [
    "DiskFullError",
    "UnwritableError",
    "FolderLockedError",
    "disk_full_error",
    "atomic_write",
    "check_writable",
    "remove_orphans",
    "lock_folder",
    "write_summary",
    "read_regular_text",
    "SUMMARY_FILE",
    "TMP_PATTERN",
    "LOCK_FILE",
]
