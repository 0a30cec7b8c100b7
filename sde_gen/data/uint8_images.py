"""Images held as uint8 levels (N, C, H, W), served as float32 in [−1, 1] (256 levels).

Kept as uint8 (a quarter of the memory of float32: 150 MB for CIFAR-10's 50 000 training
images); each draw converts its batch and, with ``flip``, mirrors each image left–right with
probability ½ from the caller's generator (the usual augmentation of image diffusion models).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sde_gen.data.base import FiniteData

__all__ = ["UInt8Images", "levels_to_unit"]


def levels_to_unit(x: Tensor) -> Tensor:
    """uint8 levels k ∈ {0..255} → 2k/255 − 1 ∈ [−1, 1], float32."""
    return x.to(torch.float32) * (2.0 / 255.0) - 1.0


class UInt8Images(FiniteData):
    """A finite image set: ``train`` and ``test`` uint8 arrays of shape (N, C, H, W)."""

    num_bins = 256

    def __init__(
        self,
        train: np.ndarray,
        test: np.ndarray,
        flip: bool = False,
        name: str = "",
        dequantize: bool = False,
    ):
        for split, arr in (("train", train), ("test", test)):
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] < 1:
                raise ValueError(
                    f"{name or 'images'}: {split} split must be uint8 (N, C, H, W) with N >= 1, "
                    f"got {arr.dtype} {arr.shape}"
                )
        if train.shape[1:] != test.shape[1:]:
            raise ValueError(f"{name}: train {train.shape[1:]} and test {test.shape[1:]} differ")
        self.train_data = torch.from_numpy(np.ascontiguousarray(train))
        self.test_data = torch.from_numpy(np.ascontiguousarray(test))
        self.shape = tuple(int(s) for s in train.shape[1:])
        self.flip = bool(flip)
        self.set_dequantize(dequantize)

    def to_unit(self, x: Tensor) -> Tensor:
        """uint8 levels → [−1, 1]."""
        return levels_to_unit(x)
