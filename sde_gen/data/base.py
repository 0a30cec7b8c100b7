"""The data contract: every data set draws samples of a fixed per-sample ``shape``."""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = [
    "DataSource",
    "FiniteData",
    "TensorData",
    "ShapeOnly",
    "DataFileMissing",
    "check_count",
    "dequantize_levels",
]


def dequantize_levels(x: Tensor, u: Tensor, num_bins: int) -> Tensor:
    """y = x + Δ(u − ½), Δ = 2/(num_bins − 1): for u ~ U(0, 1) each level of x spread uniformly
    over its bin of [−1, 1] (uniform dequantization)."""
    return x + 2.0 / (num_bins - 1) * (u - 0.5)


class DataFileMissing(ValueError):
    """A data set's file does not exist (``path`` names it): a checkpoint can still sample from
    the trained shape (``ShapeOnly``), but nothing can be drawn from the data."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def check_count(n: object, name: str = "n") -> int:
    """``n`` as an int; ValueError naming it unless an integer >= 1 (an empty draw hides bugs)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name}={n!r} must be an integer >= 1")
    return int(n)


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
        return self.sample(check_count(n), g)


class FiniteData(DataSource):
    """A finite data set held as ``train_data`` and ``test_data`` tensors (N, ...):
    ``take(index, mirror)`` returns training samples (mirrored left–right where ``mirror``, when
    ``flip`` augments); a draw is ``take`` of random indices. ``to_unit`` maps the stored values to
    float32 in [−1, 1] (the identity for data stored that way). The trainer feeds such sets
    through a DataLoader by index."""

    flip: bool = False
    #: training draws are uniformly dequantized (``dequantize_levels``): a continuous density to
    #: fit when the model's likelihood is measured on dequantized data (Song et al. 2021)
    dequantize: bool = False
    train_data: Tensor
    test_data: Tensor

    def set_dequantize(self, value: object) -> None:
        """Turn training-time dequantization on or off (``data.dequantize``)."""
        if not isinstance(value, bool):
            raise ValueError(f"data.dequantize={value!r} must be true or false")
        if value and self.num_bins is None:
            raise ValueError(
                f"data.dequantize=true needs discrete levels, but {type(self).__name__} has "
                "num_bins=None (continuous data)"
            )
        self.dequantize = value

    def to_unit(self, x: Tensor) -> Tensor:
        """Stored samples as float32 in [−1, 1]."""
        return x

    def __len__(self) -> int:
        return len(self.train_data)

    def take(self, index: Tensor, mirror: Tensor | None = None, u: Tensor | None = None) -> Tensor:
        """The training samples ``index`` in [−1, 1], those where ``mirror`` flipped, and with
        uniforms ``u`` (one per value) dequantized."""
        x = self.to_unit(self.train_data[index])
        if mirror is not None:
            x[mirror] = x[mirror].flip(-1)
        if u is not None:
            x = dequantize_levels(x, u.to(x.dtype), self.num_bins)
        return x

    def draw_uniforms(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """The dequantization uniforms of n draws (None unless ``dequantize``)."""
        if not self.dequantize:
            return None
        return torch.rand((n, *self.shape), generator=generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n training samples drawn with replacement (flipped at random with ``flip``,
        dequantized with ``dequantize``)."""
        index = torch.randint(len(self), (check_count(n),), generator=generator)
        mirror = torch.rand(n, generator=generator) < 0.5 if self.flip else None
        return self.take(index, mirror, self.draw_uniforms(n, generator))

    def split(self, name: str = "test", n: int | None = None) -> Tensor:
        """The fixed train or test samples (first ``n``), unflipped."""
        if name not in ("train", "test"):
            raise ValueError(f"split={name!r}: expected 'train' or 'test'")
        data = self.test_data if name == "test" else self.train_data
        return self.to_unit(data if n is None else data[: check_count(n)])


class TensorData(FiniteData):
    """A finite data set held as a tensor in [−1, 1]; a deterministic 90/10 train/test split."""

    def __init__(
        self,
        x: Tensor,
        num_bins: int | None = None,
        test_fraction: float = 0.1,
        dequantize: bool = False,
    ):
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"need at least two samples of shape (N, ...), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("data contain NaN or inf")
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
            raise ValueError(f"test_fraction={test_fraction!r} must be a number in (0, 1)")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
        x = x.to(torch.float32)
        n = x.shape[0]
        n_test = max(1, int(round(test_fraction * n)))
        if n_test >= n:
            raise ValueError(
                f"test_fraction={test_fraction} of N={n} samples leaves no training split "
                f"({n_test} test, {n - n_test} train); lower test_fraction"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1234))
        self.test_data, self.train_data = x[perm[:n_test]], x[perm[n_test:]]
        self.shape = tuple(x.shape[1:])
        self.num_bins = num_bins
        self.set_dequantize(dequantize)


class ShapeOnly(DataSource):
    """The shape and levels of a data set whose samples are not at hand (a checkpoint trained on
    a file that is gone): enough to sample a model, but drawing data is a ValueError that says
    ``why`` (e.g. which file is missing and how to give it)."""

    def __init__(self, shape: tuple[int, ...], num_bins: int | None = None, why: str = ""):
        self.shape = tuple(int(s) for s in shape)
        self.num_bins = None if num_bins is None else int(num_bins)
        self.why = why

    def __repr__(self) -> str:
        return f"ShapeOnly(shape={self.shape}, num_bins={self.num_bins})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"no data samples at hand: {self.why}")

    def split(self, name: str = "test", n: int | None = None) -> Tensor:
        raise ValueError(f"no {name} split at hand: {self.why}")
