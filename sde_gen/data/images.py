"""Image sets scaled to [−1, 1] with shape (N, C, H, W): scikit-learn's digits, and .npz files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from sde_gen.data.base import DataFileMissing, TensorData

CHANNELS = (1, 3)
"""Channel counts an image set may have: grey or RGB (an alpha channel is not modelled)."""
_MAYBE_CHANNELS = (1, 3, 4)
"""Axis sizes that look like a channel axis when guessing a layout (4: RGBA)."""


def scale_to_unit(x: np.ndarray, num_bins: int) -> torch.Tensor:
    """Map integer levels {0..num_bins−1} to [−1, 1]: x ↦ 2x/(num_bins−1) − 1."""
    return torch.as_tensor(2.0 * x.astype(np.float64) / (num_bins - 1) - 1.0, dtype=torch.float32)


class Digits(TensorData):
    """scikit-learn's 8×8 handwritten digits (1797 images, 17 grey levels), shipped with it."""

    def __init__(self, test_fraction: float = 0.1, dequantize: bool = False):
        from sklearn.datasets import load_digits

        images = load_digits().images  # (1797, 8, 8) levels 0..16
        super().__init__(scale_to_unit(images[:, None], 17), 17, test_fraction, dequantize)


class NpzImages(TensorData):
    """Images in an ``.npz`` file: uint8 array ``key`` of shape (N, H, W), (N, H, W, C) or
    (N, C, H, W) with C = 1 or 3 (RGBA is refused). ``channels_last=None`` guesses the layout from
    which of axis 1 and the last axis has 1, 3 or 4 entries; when both do (e.g. (N, 4, 8, 3)) it
    must be given."""

    def __init__(
        self,
        path: str,
        key: str = "x",
        channels_last: bool | None = None,
        test_fraction: float = 0.1,
        dequantize: bool = False,
    ):
        p = Path(path).expanduser()
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ValueError(f"channels_last={channels_last!r} for {p} must be true, false or null")
        if p.is_dir():
            raise ValueError(f"npz path={str(p)!r} is a directory, not an .npz file")
        if not p.is_file():
            raise DataFileMissing(f"npz path={str(p)!r} does not exist", str(p))
        x = _read_array(p, key)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            if channels_last is None:
                channels_last = _guess_channels_last(x.shape, key, p)
            if channels_last:
                x = x.transpose(0, 3, 1, 2)
        else:
            raise ValueError(f"array {key!r} in {p} has shape {x.shape}; expected 3 or 4 dims")
        if x.shape[1] not in CHANNELS:
            layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
            raise ValueError(
                f"array {key!r} in {p} of shape {_shape(x, channels_last)} read as {layout} has "
                f"{x.shape[1]} channels; images must have 1 (grey) or 3 (RGB) channels"
                + (" (drop the alpha channel)" if x.shape[1] == 4 else "")
            )
        try:
            super().__init__(
                scale_to_unit(np.ascontiguousarray(x), 256),
                num_bins=256,
                test_fraction=test_fraction,
                dequantize=dequantize,
            )
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e


def _shape(x: np.ndarray, channels_last: bool | None) -> tuple[int, ...]:
    """The shape as stored in the file (before moving channels first)."""
    return tuple(x.transpose(0, 2, 3, 1).shape) if channels_last else tuple(x.shape)


def _read_array(p: Path, key: str) -> np.ndarray:
    """Array ``key`` of the archive ``p``, uint8; ValueError naming the file otherwise."""
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
    return x


def _guess_channels_last(shape: tuple[int, ...], key: str, p: Path) -> bool:
    """True for (N, H, W, C), False for (N, C, H, W); ValueError when both or neither fit."""
    first, last = shape[1] in _MAYBE_CHANNELS, shape[-1] in _MAYBE_CHANNELS
    if first and last:
        raise ValueError(
            f"array {key!r} in {p} has an ambiguous layout {shape}: axis 1 and the last axis "
            "could both be channels; set data.channels_last=true (N, H, W, C) or "
            "data.channels_last=false (N, C, H, W)"
        )
    if not (first or last):
        raise ValueError(
            f"array {key!r} in {p} has shape {shape}: neither axis 1 nor the last axis has 1 or 3 "
            "channels; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    return last
