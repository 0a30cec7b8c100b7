"""Run-time helpers shared by the entry points: device choice, seeding, threads, progress bars,
atomic file writes."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

SUMMARY_FILE = "summary.json"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise the named device (validated)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device={name!r} is not a valid torch device: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a CPU generator seeded with ``seed`` for explicit use."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers never see a
    half-written file. The file gets the permissions of the user's umask (as ``open`` would)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
