"""The global batches of a training run, cut into this rank's micro-batches.

A step uses one global batch of ``accumulate × batch_size`` samples: micro-batch j is its rows
``[j b, (j+1) b)``, and each of N ranks takes a contiguous part of every micro-batch
(``distributed.rows``). The global batch does not depend on N, so neither does the run.

* An infinite source (a mixture, toy 2-D) is drawn on every rank from the loop's data generator
  (``StreamBatches``); each rank keeps its part.
* A finite set (``FiniteData``: image folders, CIFAR-10, tensors) goes through a torch DataLoader
  with ``workers`` processes (``LoaderBatches``). Step s's indices (with replacement) and flips
  come from a generator seeded by (seed, s) alone, so a batch does not depend on which worker
  loads it, on prefetching, or on where a resumed run starts. This replaces DistributedSampler,
  whose per-rank index streams would change with N.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde_gen.data.base import DataSource, FiniteData
from sde_gen.runtime.distributed import rows

__all__ = ["StreamBatches", "LoaderBatches", "step_draw", "batches_for"]

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads (seed, step) seeds


def step_draw(
    data: FiniteData, n: int, seed: int, step: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Indices (with replacement), flips and dequantization uniforms of step ``step``'s global
    batch of ``n`` samples."""
    g = torch.Generator().manual_seed(((seed + 1) * _MIX + step) % 2**63)
    index = torch.randint(len(data), (n,), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5 if data.flip else None
    return index, mirror, data.draw_uniforms(n, g)


class StreamBatches:
    """Global batches drawn from ``data.sample`` with ``generator`` (its state is the loop's)."""

    def __init__(
        self,
        data: DataSource,
        generator: torch.Generator,
        micro: int,
        accumulate: int,
        rank: int = 0,
        size: int = 1,
        pin_memory: bool = False,
    ):
        self.data, self.generator, self.pin_memory = data, generator, pin_memory
        self.micro, self.accumulate, self.rank, self.size = micro, accumulate, rank, size

    def start(self, step: int, steps: int) -> None:
        """Nothing to do: the generator's state already says where the run is."""

    def next(self) -> list[Tensor]:
        """This rank's part of each micro-batch of the next step."""
        b = self.micro
        x0 = self.data.sample(b * self.accumulate, self.generator)
        if self.pin_memory:  # so that the copy to the GPU does not wait for it
            x0 = x0.pin_memory()
        part = rows(b, self.size, self.rank)
        return [x0[j * b : (j + 1) * b][part] for j in range(self.accumulate)]

    def close(self) -> None:
        pass


class _StepParts(torch.utils.data.Dataset):
    """Item (step, j): this rank's part of micro-batch j of step ``step``'s global batch."""

    def __init__(
        self, data: FiniteData, micro: int, accumulate: int, seed: int, rank: int, size: int
    ):
        self.data, self.micro, self.accumulate, self.seed = data, micro, accumulate, seed
        self.part = rows(micro, size, rank)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        step, j = key
        draw = step_draw(self.data, self.micro * self.accumulate, self.seed, step)
        start = j * self.micro
        rows_j = slice(start + self.part.start, start + self.part.stop)
        return self.data.take(*(None if a is None else a[rows_j] for a in draw))


class _Keys(torch.utils.data.Sampler):
    def __init__(self, first: int, last: int, accumulate: int):
        self.first, self.last, self.accumulate = first, last, accumulate

    def __iter__(self):
        return ((s, j) for s in range(self.first, self.last) for j in range(self.accumulate))

    def __len__(self) -> int:
        return (self.last - self.first) * self.accumulate


class LoaderBatches:
    """A finite set's global batches through a DataLoader with ``workers`` processes."""

    def __init__(
        self,
        data: FiniteData,
        seed: int,
        micro: int,
        accumulate: int,
        workers: int,
        pin_memory: bool = False,
        rank: int = 0,
        size: int = 1,
    ):
        self.parts = _StepParts(data, micro, accumulate, seed, rank, size)
        self.accumulate, self.workers, self.pin_memory = accumulate, workers, pin_memory
        self.iterator = None

    def start(self, step: int, steps: int) -> None:
        """Serve steps ``step`` … ``steps − 1`` (from a resumed step too)."""
        loader = torch.utils.data.DataLoader(
            self.parts,
            batch_size=None,
            sampler=_Keys(step, steps, self.accumulate),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
        )
        self.iterator = iter(loader)

    def next(self) -> list[Tensor]:
        """This rank's part of each micro-batch of the next step."""
        return [next(self.iterator) for _ in range(self.accumulate)]

    def close(self) -> None:
        self.iterator = None  # ends the worker processes


def batches_for(
    data: DataSource,
    generator: torch.Generator,
    seed: int,
    micro: int,
    accumulate: int,
    workers: int,
    device: torch.device,
    rank: int = 0,
    size: int = 1,
) -> StreamBatches | LoaderBatches:
    """The batches of ``data``: through a DataLoader for a finite set, else drawn in process."""
    if isinstance(data, FiniteData):
        return LoaderBatches(
            data, seed, micro, accumulate, workers, device.type == "cuda", rank, size
        )
    return StreamBatches(data, generator, micro, accumulate, rank, size, device.type == "cuda")
