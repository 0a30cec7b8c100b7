"""Image folders (PNG/JPEG through Pillow) and CIFAR-10 binary batches, on small files the tests
write: exact pixel round trips, resize-and-crop geometry, flips, splits, and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sde_gen.data import CIFAR10, ImageFolder
from sde_gen.data.cifar10 import RECORD_BYTES, read_cifar_batch
from sde_gen.data.uint8_images import levels_to_unit


def _write_cifar(folder, n_per_file: int = 4, files: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    names = [f"data_batch_{i}.bin" for i in range(1, files + 1)] + ["test_batch.bin"]
    for name in names:
        x = rng.integers(0, 256, (n_per_file, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, (n_per_file, 1), dtype=np.uint8)
        np.concatenate([labels, x.reshape(n_per_file, -1)], axis=1).tofile(folder / name)
        images[name] = x
    return images


def test_cifar_records_round_trip_exactly(tmp_path):
    images = _write_cifar(tmp_path / "cifar-10-batches-bin")
    data = CIFAR10(str(tmp_path), flip=False)  # the parent folder is accepted too
    train = np.concatenate([images[f"data_batch_{i}.bin"] for i in range(1, 6)])
    assert data.shape == (3, 32, 32) and len(data) == 20 and data.num_bins == 256
    torch.testing.assert_close(data.train_data, torch.from_numpy(train), rtol=0, atol=0)
    expected = torch.from_numpy(images["test_batch.bin"]).float() * 2 / 255 - 1
    torch.testing.assert_close(data.split("test"), expected, rtol=0, atol=2.5e-7)  # float32 ulps
    x, labels = read_cifar_batch(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    assert x.shape == (4, 3, 32, 32) and labels.shape == (4,)
    # the first record's red channel is bytes 1..1024 of the file
    raw = np.fromfile(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", dtype=np.uint8)
    assert np.array_equal(x[0, 0].ravel(), raw[1:1025])


def test_levels_map_onto_minus_one_one():
    x = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    torch.testing.assert_close(
        levels_to_unit(x), torch.tensor([-1.0, -1 + 2 / 255, 1 - 2 / 255, 1.0])
    )


def test_flip_mirrors_half_the_draws(tmp_path):
    _write_cifar(tmp_path, n_per_file=1, files=1)
    data = CIFAR10(str(tmp_path), flip=True, train_files=1)
    x = data.sample(4000, torch.Generator().manual_seed(0))
    plain = levels_to_unit(data.train_data[0])
    flipped = (x == plain.flip(-1)).flatten(1).all(1) & ~(x == plain).flatten(1).all(1)
    same = (x == plain).flatten(1).all(1)
    assert bool((flipped | same).all())
    frac = float(flipped.double().mean())
    assert abs(frac - 0.5) < 4 * 0.5 / 4000**0.5  # binomial: 4 standard errors


def test_image_folder_resizes_crops_and_splits(tmp_path):
    # a 40×20 image: left half black, right half white; resized to 64×32 → crop the middle 32
    for i in range(10):
        arr = np.zeros((20, 40, 3), dtype=np.uint8)
        arr[:, 20:] = 255
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
    Image.fromarray(np.full((16, 16), 100, dtype=np.uint8)).save(tmp_path / "grey.jpg", quality=100)
    data = ImageFolder(str(tmp_path), size=32, channels=3, flip=False, test_fraction=0.2)
    assert data.shape == (3, 32, 32) and len(data) + len(data.split("test")) == 11
    assert len(data.split("test")) == 2
    stripes = [img for img in data.train_data if int(img[0, 0, 0]) == 0]
    img = stripes[0].numpy()
    assert (img[:, :, :14] == 0).all() and (img[:, :, 18:] == 255).all()  # the edge stays central
    grey = ImageFolder(str(tmp_path), size=8, channels=1, flip=False, test_fraction=0.5)
    assert grey.shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("make", "kwargs", "named"),
    [
        (lambda p: None, {}, "does not exist"),
        (lambda p: p.write_text("x"), {}, "is a file"),
        (lambda p: p.mkdir(), {}, "holds 0 image"),
        (
            lambda p: (
                p.mkdir(),
                (p / "a.png").write_bytes(b"junk"),
                (p / "b.png").write_bytes(b"x"),
            ),
            {},
            "could not read image",
        ),
        (lambda p: p.mkdir(), {"channels": 4}, "data.channels=4"),
    ],
)
def test_image_folder_errors_name_the_problem(tmp_path, make, kwargs, named):
    target = tmp_path / "images"
    make(target)
    with pytest.raises(ValueError, match=named):
        ImageFolder(str(target), **kwargs)


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: _write_cifar(p, files=2), "data_batch_3.bin"),
        (
            lambda p: (p.mkdir(), (p / "test_batch.bin").write_bytes(b"\0" * (RECORD_BYTES + 1))),
            "not a whole number",
        ),
    ],
)
def test_cifar_errors_name_the_problem(tmp_path, setup, named):
    target = tmp_path / "cifar"
    setup(target)
    if named == "not a whole number":
        with pytest.raises(ValueError, match=named):
            read_cifar_batch(target / "test_batch.bin")
        return
    with pytest.raises(ValueError, match=named):
        CIFAR10(str(target))
