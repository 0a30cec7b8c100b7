"""A folder of PNG/JPEG images (read by Pillow), resized and centre-cropped to ``size`` × ``size``.

Each image is scaled so that its shorter side is ``size`` (bicubic), then the central square is
kept; RGB (``channels: 3``) or grey (``channels: 1``). A fixed ``test_fraction`` of the files,
chosen by a seeded permutation of the sorted names, is the test split.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from sde_gen.data.base import DataFileMissing
from sde_gen.data.png_rows import png_missing_bytes
from sde_gen.data.uint8_images import UInt8Images

__all__ = ["ImageFolder", "load_image", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (C, size, size): shorter side to ``size``, central square kept."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            missing = png_missing_bytes(path) if img.format == "PNG" else 0
            if missing:
                raise ValueError(f"it is truncated: {missing} bytes of its rows are missing")
            img = img.convert("RGB" if channels == 3 else "L")
            w, h = img.size
            scale = size / min(w, h)
            new = (max(size, round(w * scale)), max(size, round(h * scale)))
            img = img.resize(new, Image.Resampling.BICUBIC)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"could not read image {str(path)!r}: {e}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(
            f"could not read image {str(path)!r}: {e} (Pillow's limit against decompression bombs; "
            "a training image is small)"
        ) from e
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class ImageFolder(UInt8Images):
    """Every ``.png``/``.jpg``/``.jpeg`` below ``path`` (recursively), as (channels, size, size)."""

    def __init__(
        self,
        path: str,
        size: int = 32,
        channels: int = 3,
        flip: bool = True,
        test_fraction: float = 0.01,
        dequantize: bool = False,
    ):
        root = Path(path).expanduser()
        if not root.exists():
            raise DataFileMissing(f"data.path={str(root)!r} does not exist", str(root))
        if not root.is_dir():
            raise ValueError(f"data.path={str(root)!r} is a file; image_folder needs a directory")
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels} must be 1 (grey) or 3 (RGB)")
        if size < 1:
            raise ValueError(f"data.size={size} must be >= 1")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(
                f"data.path={str(root)!r} holds {len(files)} image(s) "
                f"({', '.join(IMAGE_SUFFIXES)}); need at least 2 (train and test)"
            )
        if not 0 < test_fraction < 1:
            raise ValueError(f"data.test_fraction={test_fraction} must lie in (0, 1)")
        n_test = max(1, round(test_fraction * len(files)))
        if n_test >= len(files):
            raise ValueError(
                f"data.test_fraction={test_fraction} leaves no training image of {len(files)}"
            )
        images = np.stack([load_image(p, size, channels) for p in files])
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(1234)).numpy()
        train, test = images[perm[n_test:]], images[perm[:n_test]]
        super().__init__(train, test, flip, f"data.path={root}", dequantize)
        self.path = root
