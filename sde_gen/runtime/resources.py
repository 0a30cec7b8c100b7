"""What a process runs on: device choice, seeding, CPU threads, stop signals, and the memory
preflight that refuses batches too large before they are allocated."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


DEVICE_TYPES = ("cpu", "cuda", "mps")


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


def gib(n: float) -> str:
    """``n`` bytes in GiB (MiB below one GiB), three digits."""
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_memory(key: str, count: int, bytes_each: float, device: torch.device) -> None:
    """Refuse ``key=count`` items of ``bytes_each`` when together they exceed the memory of
    ``device`` (a preflight estimate, before any allocation)."""
    have = memory_bytes(device)
    need = count * bytes_each
    if have is not None and need > have:
        raise ValueError(
            f"{key}={count} needs about {gib(need)} of memory at once ({bytes_each:.3g} bytes an "
            f"item), more than the {gib(have)} of {device}: lower {key}"
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


__all__ = [
    "pick_device",
    "seed_everything",
    "StopSignals",
    "memory_bytes",
    "activation_bytes",
    "check_memory",
    "set_threads",
    "choose_threads",
    "DEVICE_TYPES",
    "STOP_SIGNALS",
    "SMALL_MODEL_PARAMETERS",
]
