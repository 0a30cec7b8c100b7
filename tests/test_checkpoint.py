"""Checkpoints: atomic writes, safe loads, clear errors on corrupt or mismatched files, RNG
round-trips and the model rebuild used by sampling and evaluation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_train_helpers import tiny_trainer

from sde_gen.networks.checkpoint import load_score_model
from sde_gen.training import checkpoint as ckpt


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trainer after 10 steps and the checkpoint it wrote (read-only for the tests)."""
    tmp_path = tmp_path_factory.mktemp("saved")
    cfg = OmegaConf.create(
        {
            "sde": {"_target_": "sde_gen.sde.VPSDE"},
            "data": {"_target_": "sde_gen.data.ring_mixture", "std": 0.15},
            "model": {
                "_target_": "sde_gen.models.MLP",
                "hidden": 32,
                "num_layers": 2,
                "embedding": {"_target_": "sde_gen.models.SinusoidalEmbedding", "dim": 16},
            },
        }
    )
    trainer = tiny_trainer(tmp_path, steps=10, config=OmegaConf.to_yaml(cfg))
    trainer.fit()
    return trainer, ckpt.checkpoint_path(trainer.checkpoint_dir, 10)


def test_checkpoint_holds_the_full_training_state(saved):
    trainer, path = saved
    state = torch.load(path, weights_only=True)  # only tensors and plain containers inside
    assert state["step"] == 10
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    assert int(state["ema"]["n_averaged"]) == 10
    assert state["scheduler"]["last_epoch"] == 10
    assert isinstance(state["config"], str) and "VPSDE" in state["config"]
    assert torch.equal(state["rng"]["generators"]["data"], trainer.loop.data_generator.get_state())


def test_rng_state_round_trip_restores_every_stream():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    state = ckpt.rng_state({"data": g})
    first = (torch.rand(4), np.random.standard_normal(3), torch.rand(4, generator=g))
    torch.manual_seed(99)
    np.random.seed(99)
    g.manual_seed(99)
    ckpt.set_rng_state(state, {"data": g})
    again = (torch.rand(4), np.random.standard_normal(3), torch.rand(4, generator=g))
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert torch.equal(first[2], again[2])
    with pytest.raises(ValueError, match="noise"):
        ckpt.set_rng_state(state, {"data": g, "noise": torch.Generator()})


def test_write_is_atomic_failed_save_leaves_old_file_untouched(saved, tmp_path):
    _, path = saved
    before = path.read_bytes()
    bad = torch.load(path, weights_only=True)
    bad["config"] = lambda: None  # torch.save cannot pickle this: the write fails midway
    with pytest.raises(Exception):  # noqa: B017 - pickling error type is torch's business
        ckpt.save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "damage", ["truncate", "empty", "garbage0", "garbage1", "garbage2", "garbage3", "garbage4"]
)
def test_corrupt_checkpoint_is_a_clear_error(saved, tmp_path, damage):
    """Truncated, empty and (seeded) random bytes: each is a ValueError naming the file."""
    _, path = saved
    raw = path.read_bytes()
    bad = tmp_path / "bad.pt"
    if damage.startswith("garbage"):
        bad.write_bytes(random.Random(int(damage[-1])).randbytes(4096))
    else:
        bad.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b""}[damage])
    with pytest.raises(ValueError, match="bad.pt.*corrupt or truncated"):
        ckpt.load_checkpoint(bad)


def test_foreign_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="tensor.pt.*not a dict"):
        ckpt.load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"step": 1}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="partial.pt.*lacks"):
        ckpt.load_checkpoint(tmp_path / "partial.pt")


def test_arbitrary_pickles_are_refused_by_weights_only(saved, tmp_path):
    _, path = saved
    state = torch.load(path, weights_only=True)
    state["config"] = OmegaConf.create({"a": 1})  # a Python object, not a plain container
    torch.save(state, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled.pt"):
        ckpt.load_checkpoint(tmp_path / "pickled.pt")


def test_mismatched_model_names_path_and_parameter(saved, tmp_path):
    _, path = saved
    other = tiny_trainer(tmp_path / "other", hidden=48, resume=str(path))
    with pytest.raises(ValueError, match=r"step_00000010.pt.*shape mismatch.*\(48") as err:
        other.fit()
    assert "eps_net." in str(err.value)


def test_latest_checkpoint_picks_highest_step(tmp_path):
    for step in (5, 100, 20):
        (tmp_path / f"step_{step:08d}.pt").write_bytes(b"x")
    (tmp_path / ".step_00000200.pt.abc.tmp").write_bytes(b"x")  # an unfinished write
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000100.pt"
    assert ckpt.latest_checkpoint(tmp_path / "none") is None


def test_load_score_model_rebuilds_ema_and_raw_networks(saved):
    trainer, path = saved
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 1.0, 16)
    model, cfg, data = load_score_model(path, ema=True)
    assert data.shape == (2,) and cfg.model.hidden == 32
    with torch.no_grad():
        assert torch.equal(model(x, t), trainer.ema.module(x, t))
        raw, _, _ = load_score_model(path, ema=False)
        assert torch.equal(raw(x, t), trainer.model(x, t))
        assert not torch.equal(raw(x, t), model(x, t))  # EMA (decay 0.9) lags the raw weights
