"""A data set read only when it is drawn from: sampling a checkpoint needs only the shape it
records, so a trained data set that names a file or folder (``data.path``) is not read (nor, if
that path is ``/usr``, walked) unless data are drawn (a calibration, FD/KID, evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sde_gen.data.base import DataSource

__all__ = ["DeferredData"]


class DeferredData(DataSource):
    """``shape`` and ``num_bins`` known now; ``build()`` makes the data set at the first draw
    (``sample``, ``split`` or any other attribute of the built set). No exact score: data read
    from files have none."""

    def __init__(
        self, shape: tuple[int, ...], num_bins: int | None, build: Callable[[], DataSource]
    ):
        self.shape = tuple(int(s) for s in shape)
        self.num_bins = None if num_bins is None else int(num_bins)
        self._build, self._built = build, None

    def __repr__(self) -> str:
        return f"DeferredData(shape={self.shape}, num_bins={self.num_bins}, read={self.read})"

    @property
    def read(self) -> bool:
        """Whether the data set has been built (its files read)."""
        return self._built is not None

    def built(self) -> DataSource:
        """The data set, built at the first call."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.built().sample(n, generator)

    def split(self, name: str = "test", n: int | None = None) -> Tensor:
        return self.built().split(name, n) if n is not None else self.built().split(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.built(), name)
