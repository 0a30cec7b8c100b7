"""torch.distributed for the command lines, as torchrun launches them: one process per device,
NCCL on CUDA and gloo on CPU, the rendezvous from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so multi-node runs need nothing beyond torchrun's flags.

Without torchrun (no WORLD_SIZE in the environment) everything here is the single-process case:
rank 0 of 1, barriers and gathers are no-ops.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["World", "world", "init_world", "close_world", "barrier", "gather_objects", "launched"]


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its
    node, and the device it owns."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, plots and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> range:
        """The indices of ``range(n)`` this rank handles: every ``size``-th from ``rank``."""
        return range(self.rank, n, self.size)


def launched() -> bool:
    """True when torchrun (or SLURM through it) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world(device: torch.device) -> World:
    """The current World (``init_world`` must have run for a distributed one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def init_world(device_name: str = "auto") -> World:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU) and pick this rank's
    device: ``cuda:<LOCAL_RANK>`` when CUDA is used, else the CPU. Single process: no group."""
    from sde_gen.runtime import pick_device

    device = pick_device(device_name)
    if not launched():
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world(device)


def close_world() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@contextmanager
def main_first():
    """Rank 0 runs the block before the others enter it (e.g. to create a folder once)."""
    w = world(torch.device("cpu"))
    if not w.is_main:
        barrier()
    yield
    if w.is_main:
        barrier()
