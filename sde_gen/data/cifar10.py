"""CIFAR-10 from its *binary* batches (``cifar-10-batches-bin``: no pickle is ever loaded).

Each file is a run of 3073-byte records: one label byte, then 1024 red, 1024 green and 1024 blue
bytes of a 32 × 32 image in row-major order. ``data_batch_1.bin`` … ``data_batch_5.bin`` are the
training split (50 000 images), ``test_batch.bin`` the test split (10 000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sde_gen.data.base import DataFileMissing
from sde_gen.data.uint8_images import UInt8Images

__all__ = ["CIFAR10", "read_cifar_batch", "RECORD_BYTES"]

RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) of one binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise ValueError(
            f"{str(path)!r} has {raw.size} bytes, not a whole number of {RECORD_BYTES}-byte "
            "CIFAR-10 records (is it the binary version, cifar-10-binary.tar.gz?)"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


class CIFAR10(UInt8Images):
    """CIFAR-10 at ``path`` (the ``cifar-10-batches-bin`` folder, or a folder holding it)."""

    def __init__(
        self, path: str, flip: bool = True, train_files: int = 5, dequantize: bool = False
    ):
        root = Path(path).expanduser()
        if (root / "cifar-10-batches-bin").is_dir():
            root = root / "cifar-10-batches-bin"
        if not root.exists():
            raise DataFileMissing(f"data.path={str(root)!r} does not exist", str(root))
        if not root.is_dir():
            raise ValueError(
                f"data.path={str(root)!r} is a file; give the cifar-10-batches-bin dir"
            )
        if not 1 <= train_files <= len(TRAIN_FILES):
            raise ValueError(f"data.train_files={train_files} must lie in [1, 5]")
        wanted = [*TRAIN_FILES[:train_files], TEST_FILE]
        missing = [name for name in wanted if not (root / name).is_file()]
        if missing:
            raise ValueError(f"data.path={str(root)!r} lacks {missing} (CIFAR-10 binary batches)")
        train = np.concatenate([read_cifar_batch(root / n)[0] for n in TRAIN_FILES[:train_files]])
        test = read_cifar_batch(root / TEST_FILE)[0]
        super().__init__(train, test, flip, f"data.path={root}", dequantize)
        self.path = root
