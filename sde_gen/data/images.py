"""Image sets scaled to [−1, 1] with shape (N, C, H, W): scikit-learn's digits, and .npz files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from sde_gen.data.base import TensorData


def scale_to_unit(x: np.ndarray, num_bins: int) -> torch.Tensor:
    """Map integer levels {0..num_bins−1} to [−1, 1]: x ↦ 2x/(num_bins−1) − 1."""
    return torch.as_tensor(2.0 * x.astype(np.float64) / (num_bins - 1) - 1.0, dtype=torch.float32)


class Digits(TensorData):
    """scikit-learn's 8×8 handwritten digits (1797 images, 17 grey levels), shipped with it."""

    def __init__(self, test_fraction: float = 0.1):
        from sklearn.datasets import load_digits

        images = load_digits().images  # (1797, 8, 8) levels 0..16
        super().__init__(
            scale_to_unit(images[:, None], 17), num_bins=17, test_fraction=test_fraction
        )


class NpzImages(TensorData):
    """Images in an ``.npz`` file: uint8 array ``key``, (N, H, W), (N, H, W, C) or (N, C, H, W)."""

    def __init__(
        self,
        path: str,
        key: str = "x",
        channels_last: bool | None = None,
        test_fraction: float = 0.1,
    ):
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"npz path={str(p)!r} does not exist")
        try:
            archive = np.load(p, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ValueError(f"could not read npz file {str(p)!r}: {e}") from e
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{str(p)!r} is a single .npy array, not an .npz archive")
        with archive as f:
            if key not in f.files:
                raise ValueError(f"key={key!r} not in {p}; it holds {f.files}")
            try:
                x = f[key]
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise ValueError(f"could not read array {key!r} of {str(p)!r}: {e}") from e
        if x.dtype != np.uint8:
            raise ValueError(f"array {key!r} in {p} has dtype {x.dtype}; expected uint8 images")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            if channels_last is None:
                channels_last = x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
            if channels_last:
                x = x.transpose(0, 3, 1, 2)
        else:
            raise ValueError(f"array {key!r} in {p} has shape {x.shape}; expected 3 or 4 dims")
        super().__init__(
            scale_to_unit(np.ascontiguousarray(x), 256), num_bins=256, test_fraction=test_fraction
        )
