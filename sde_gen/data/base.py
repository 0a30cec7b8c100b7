"""The data contract: every data set draws samples of a fixed per-sample ``shape``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class DataSource(ABC):
    """A data distribution to train on and evaluate against.

    ``shape`` is the shape of one sample; ``num_bins`` is the number of discrete levels the data
    were quantised to before scaling to [−1, 1] (``None`` for continuous data); ``exact`` is the
    data's analytic density with an exact diffused score, when it has one (Gaussian mixtures).
    """

    shape: tuple[int, ...]
    num_bins: int | None = None

    @property
    def exact(self):  # -> GaussianMixture | None
        return None

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws (with replacement for finite sets), float32, shape (n, *shape)."""

    def split(self, name: str = "test", n: int = 1000) -> Tensor:
        """A fixed evaluation set; infinite sources draw ``n`` samples with a fixed seed."""
        if name not in ("train", "test"):
            raise ValueError(f"split={name!r}: expected 'train' or 'test'")
        g = torch.Generator().manual_seed(0 if name == "train" else 1)
        return self.sample(n, g)


class TensorData(DataSource):
    """A finite data set held as a tensor in [−1, 1]; a deterministic 90/10 train/test split."""

    def __init__(self, x: Tensor, num_bins: int | None = None, test_fraction: float = 0.1):
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"need at least two samples of shape (N, ...), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("data contain NaN or inf")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
        x = x.to(torch.float32)
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1234))
        n_test = max(1, int(round(test_fraction * x.shape[0])))
        self.test_data, self.train_data = x[perm[:n_test]], x[perm[n_test:]]
        self.shape = tuple(x.shape[1:])
        self.num_bins = num_bins

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.randint(len(self.train_data), (n,), generator=generator)
        return self.train_data[idx]

    def split(self, name: str = "test", n: int | None = None) -> Tensor:
        if name not in ("train", "test"):
            raise ValueError(f"split={name!r}: expected 'train' or 'test'")
        data = self.test_data if name == "test" else self.train_data
        return data if n is None else data[:n]
