"""Data sets: digits, .npz images, 2-D toys and their configs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sde_gen.data import Checkerboard, Digits, NpzImages, SwissRoll, TwoMoons

CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf" / "data"


def test_digits_levels_and_split():
    d = Digits()
    assert d.shape == (1, 8, 8) and d.num_bins == 17
    x = torch.cat([d.split("train"), d.split("test")])
    assert x.shape[0] == 1797
    levels = torch.round((x + 1) * 8)  # 17 levels k ↦ 2k/16 − 1
    assert torch.allclose(levels / 8 - 1, x, atol=1e-6)
    assert levels.min() == 0 and levels.max() == 16
    # deterministic, disjoint split
    assert torch.equal(Digits().split("test"), d.split("test"))
    assert len(d.split("test")) == 180


def test_dequantized_digits_are_uniform_over_their_bins():
    """With ``dequantize``, a draw is its level plus U(−Δ/2, Δ/2), Δ = 2/16: the same levels as
    without (same generator), offsets of mean 0 and variance Δ²/12 (within 4 s.e.)."""
    n, width = 4000, 2 / 16
    x = Digits().sample(n, torch.Generator().manual_seed(3))
    y = Digits(dequantize=True).sample(n, torch.Generator().manual_seed(3))
    offset = (y - x).flatten().double()
    assert offset.abs().max() <= width / 2 + 1e-6
    m = offset.numel()
    assert offset.mean().abs() < 4 * math.sqrt(width**2 / 12 / m)
    var_se = math.sqrt((width**4 / 80 - (width**2 / 12) ** 2) / m)  # Var of (U − ½)²Δ²
    assert abs(offset.var() - width**2 / 12) < 4 * var_se
    assert torch.equal(Digits(dequantize=True).split("test"), Digits().split("test"))


def test_dequantize_needs_a_boolean_and_discrete_data():
    from sde_gen.data.base import TensorData

    with pytest.raises(ValueError, match="data.dequantize='yes'"):
        Digits(dequantize="yes")
    with pytest.raises(ValueError, match="num_bins=None"):
        TensorData(torch.randn(10, 2), dequantize=True)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_round_trip(tmp_path, layout):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(20, 3, 6, 6), dtype=np.uint8)
    arr = {"nhw": img[:, 0], "nhwc": img.transpose(0, 2, 3, 1), "nchw": img}[layout]
    path = tmp_path / "imgs.npz"
    np.savez(path, x=arr)
    d = NpzImages(str(path))
    expect_c = 1 if layout == "nhw" else 3
    assert d.shape == (expect_c, 6, 6) and d.num_bins == 256
    x = torch.cat([d.split("train"), d.split("test")])
    back = np.sort(np.round((x.numpy() + 1) * 127.5).astype(np.uint8).reshape(20, -1), axis=0)
    ref = img[:, :1] if layout == "nhw" else img
    assert np.array_equal(back, np.sort(ref.reshape(20, -1), axis=0))


def test_npz_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        NpzImages(str(tmp_path / "missing.npz"))
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt.npz"):
        NpzImages(str(bad))
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((4, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="'images'"):
        NpzImages(str(good), key="x")
    np.savez(good, x=np.zeros((4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="float32"):
        NpzImages(str(good))


def test_checkerboard_support():
    x = Checkerboard().sample(5000, torch.Generator().manual_seed(0)).double()
    cells = torch.floor(x[:, 0]) + torch.floor(x[:, 1])
    assert torch.all(cells % 2 == 0)  # only the "black" squares
    assert x.abs().max() <= 2


def test_swissroll_radius_matches_angle():
    """Without noise every point satisfies r = θ/5 with θ = atan2 unwrapped on the spiral."""
    x = SwissRoll(noise=0.0).sample(2000, torch.Generator().manual_seed(0)).double()
    r = x.norm(dim=1)
    assert r.min() >= 1.5 * math.pi / 5 - 1e-5 and r.max() <= 4.5 * math.pi / 5 + 1e-5
    theta = 5 * r
    assert torch.allclose(
        torch.stack([torch.cos(theta), torch.sin(theta)], 1) * r[:, None], x, atol=1e-4
    )


def test_moons_lie_on_unit_half_circles():
    x = TwoMoons(noise=0.0).sample(2000, torch.Generator().manual_seed(0)).double()
    upper = x + torch.tensor([0.5, 0.25], dtype=torch.float64)
    lower = upper - torch.tensor([1.0, 0.5], dtype=torch.float64)
    dist = torch.minimum((upper.norm(dim=1) - 1).abs(), (lower.norm(dim=1) - 1).abs())
    assert dist.max() < 1e-5


FILE_BACKED = ("npz", "image_folder", "cifar10")  # need data.path: tested with files they write


@pytest.mark.parametrize(
    "cfg_file", sorted(p.name for p in CONF.glob("*.yaml") if p.stem not in FILE_BACKED)
)
def test_every_data_config_instantiates(cfg_file):
    data = instantiate(OmegaConf.load(CONF / cfg_file))
    x = data.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, *data.shape) and torch.isfinite(x).all()
    assert x.std() > 0.05  # not collapsed


def test_image_configs_need_a_path_and_read_it(tmp_path):
    from PIL import Image

    for name in ("image_folder", "cifar10"):
        cfg = OmegaConf.load(CONF / f"{name}.yaml")
        assert OmegaConf.is_missing(cfg, "path")
    for i in range(3):
        Image.fromarray(np.full((12, 12, 3), 80 * i, np.uint8)).save(tmp_path / f"{i}.png")
    cfg = OmegaConf.load(CONF / "image_folder.yaml")
    cfg.path, cfg.test_fraction = str(tmp_path), 0.34
    data = instantiate(cfg)
    assert data.shape == (3, 32, 32) and len(data) == 2 and data.num_bins == 256


def test_npz_config(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.full((10, 4, 4), 255, np.uint8))
    cfg = OmegaConf.load(CONF / "npz.yaml")
    cfg.path = str(path)
    assert torch.all(instantiate(cfg).sample(3) == 1.0)


def test_bad_toy_arguments():
    with pytest.raises(ValueError, match="noise=-1"):
        TwoMoons(noise=-1)
    with pytest.raises(ValueError, match="split='val'"):
        Digits().split("val")
