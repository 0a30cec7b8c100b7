"""Run-time helpers shared by the entry points: device choice, seeding, atomic file writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
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


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (``threads=null`` keeps torch's default).

    On a small or shared CPU, small networks run far faster with 1 thread than with threads that
    wait on a busy core.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be null or an integer >= 1")
    torch.set_num_threads(threads)
