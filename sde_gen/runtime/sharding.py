"""Work split into chunks of a fixed size across the ranks of a run, world-size invariant.

Chunk c holds items [c·B, (c+1)·B) of n and draws every random number from its own generator,
seeded by (seed, c) (:func:`chunk_seed`); rank r of W handles the chunks c ≡ r (mod W). A chunk's
items and random numbers do not depend on W, so the gathered result is the same for any number of
processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from sde_gen.runtime.distributed import World
from sde_gen.runtime.progress import progress_bar

__all__ = ["SEED_LIMIT", "chunk_seed", "chunk_slices", "gather_to_main", "map_chunks"]

SEED_LIMIT = 2**32
"""Seeds lie in [0, 2³²): torch's CPU generator (mt19937) keeps 32 bits of a seed."""

WEYL = 0x9E3779B9
"""⌊2³²/φ⌋, odd: c ↦ seed + c·WEYL (mod 2³²) is one-to-one on the chunks of a run."""

T = TypeVar("T")


def chunk_seed(seed: int, chunk: int) -> int:
    """The generator seed of ``chunk``: seed + chunk·⌊2³²/φ⌋ (mod 2³²), a Weyl sequence, so the
    chunks of one seed never share a seed, and chunk 0 draws what ``seed`` alone drew (a run of
    one chunk is the run of a single batch)."""
    return (seed + chunk * WEYL) % SEED_LIMIT


def chunk_slices(n: int, batch_size: int) -> list[slice]:
    """The chunks [c·B, min((c+1)·B, n)) of ``range(n)``."""
    count = math.ceil(n / batch_size)
    return [slice(c * batch_size, min(n, (c + 1) * batch_size)) for c in range(count)]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the others (``[obj]`` alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def map_chunks(
    fn: Callable[[slice, torch.Generator], T],
    n: int,
    batch_size: int,
    seed: int,
    world: World,
    progress: bool = False,
    desc: str = "chunks",
) -> list[T] | None:
    """``fn(items, generator)`` on this rank's chunks, each generator seeded by
    :func:`chunk_seed` on ``world.device``; rank 0 returns every chunk's result in chunk order,
    the other ranks None. ``fn`` should return CPU tensors (they are pickled to rank 0)."""
    slices = chunk_slices(n, batch_size)
    mine: dict[int, T] = {}
    bar = progress and world.is_main and len(slices) > 1
    for c in progress_bar(bar, iterable=world.shard(len(slices)), desc=desc):
        generator = torch.Generator(world.device).manual_seed(chunk_seed(seed, c))
        mine[c] = fn(slices[c], generator)
    parts = gather_to_main(mine)
    if parts is None:
        return None
    merged = {c: r for part in parts for c, r in part.items()}
    return [merged[c] for c in range(len(slices))]
