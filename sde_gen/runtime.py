"""Run-time helpers shared by the entry points: device choice, seeding, threads, progress bars,
atomic file writes, and the guards of a run's process and folder (disk full, unwritable folders,
the folder lock, orphaned temporary files, stop signals, batches too large for memory)."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
DEVICE_TYPES = ("cpu", "cuda", "mps")


class DiskFullError(ValueError):
    """The disk filled up while a file was written; the message names the file. The file's
    previous version (if any) is untouched: writes go to a temporary file first."""


class UnwritableError(ValueError):
    """A folder a run must write into cannot be created or written; the message names it."""


class FolderLockedError(ValueError):
    """Another process holds a run folder's lock; the message names the folder and lock file."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise the named device (validated: cpu,
    cuda[:N] of a present GPU, mps where available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    usable = "auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a torch device: need {usable}") from None
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"device={name!r} cannot run sde_gen: need {usable}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device={name!r}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} requested but MPS is not available")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a CPU generator seeded with ``seed`` for explicit use."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


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


def lock_folder(folder: str | os.PathLike):  # -> filelock.FileLock
    """Hold ``folder``'s lock (``<folder>/.run.lock``, an OS lock freed when the process dies);
    held by another process, a :class:`FolderLockedError` naming folder and lock file."""
    from filelock import FileLock, Timeout

    path = Path(folder) / LOCK_FILE
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderLockedError(
            f"run folder {str(folder)!r} is in use by another run (lock {str(path)!r} is held); "
            "wait for it to end or pick another folder (hydra.run.dir=...)"
        ) from None
    except OSError as e:
        raise UnwritableError(f"cannot create the lock {str(path)!r}: {e.strerror or e}") from e
    return lock


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


# -- signals ------------------------------------------------------------------------------------
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))
"""SIGTERM (kill, scheduler timeouts) and SIGUSR1 (SLURM's warning before preemption)."""


class StopSignals:
    """While entered, SIGTERM and SIGUSR1 only set ``received`` (the first signal's number), so
    the loop can finish its step and checkpoint; on exit the previous handlers come back.
    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# -- memory -------------------------------------------------------------------------------------
def memory_bytes(device: torch.device) -> int | None:
    """Memory a batch can use: the GPU's total (CUDA), else the machine's physical memory capped
    by a cgroup limit; None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def activation_bytes(module: nn.Module, x: Tensor, t: Tensor, grad: bool) -> float:
    """Bytes a sample of ``module(x, t)`` holds in its layers' outputs: all of them twice (kept
    for the backward pass, and their gradients) when ``grad``, else the two largest."""
    sizes: list[int] = []

    def record(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(x, t)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    total = 2 * sum(sizes) if grad else sum(sorted(sizes)[-2:])
    return total / len(x)


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_memory(key: str, count: int, bytes_each: float, device: torch.device) -> None:
    """Refuse ``key=count`` items of ``bytes_each`` when together they exceed the memory of
    ``device`` (a preflight estimate, before any allocation)."""
    have = memory_bytes(device)
    need = count * bytes_each
    if have is not None and need > have:
        raise ValueError(
            f"{key}={count} needs about {_gb(need)} of memory at once ({bytes_each:.3g} bytes an "
            f"item), more than the {_gb(have)} of {device}: lower {key}"
        )


SMALL_MODEL_PARAMETERS = 5_000_000
"""Below this many parameters a model runs on one CPU thread unless ``threads=`` says otherwise."""


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (``threads=null`` keeps torch's default)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be null or an integer >= 1")
    torch.set_num_threads(threads)


def choose_threads(threads: int | None, device: torch.device, model: nn.Module | None) -> int:
    """Set torch's intra-op threads and return them: ``threads`` when given; else one thread on a
    CPU for no model (an exact score) or a small one, torch's default otherwise.

    On a small or shared CPU, small networks run many times faster on one thread than on threads
    that wait for a core another job holds.
    """
    if threads is None and device.type == "cpu":
        size = 0 if model is None else sum(p.numel() for p in model.parameters())
        threads = 1 if size < SMALL_MODEL_PARAMETERS else None
    set_threads(threads)
    return torch.get_num_threads()


def progress_bar(enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar: live on a terminal; written to a file or job log at most every 30 s."""
    if enabled and not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(disable=not enabled, **kwargs)
