"""sde-gen-sample: exact-mixture sampling, checkpoints (EMA vs raw), and its boundary errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hand_checkpoints import checkpoint_state
from hydra import compose, initialize_config_module
from torch.optim.swa_utils import AveragedModel

from sde_gen.data import ring_mixture
from sde_gen.models import MLP, ScoreModel
from sde_gen.sample import _data_chosen, build_solver, exact_metrics, run_sampling, solver_facts
from sde_gen.sde import VPSDE
from sde_gen.training.checkpoint import save_checkpoint

CLI = str(Path(sys.executable).with_name("sde-gen-sample"))


def _cfg(*overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose("sample", overrides=["progress=false", *overrides])


RING = {"_target_": "sde_gen.data.ring_mixture", "std": 0.15}


def _tiny_checkpoint(path: Path, data: dict = RING, shape: tuple = (2,)) -> Path:
    """An MLP whose raw output is ε = 0.5 (bias) and EMA output ε = 0."""
    net = ScoreModel(MLP(shape, hidden=8, num_layers=1), VPSDE())
    ema = AveragedModel(net)
    torch.nn.init.constant_(net.eps_net.out.bias, 0.5)
    config = {
        "sde": {"_target_": "sde_gen.sde.VPSDE"},
        "data": data,
        "model": {"_target_": "sde_gen.models.MLP", "hidden": 8, "num_layers": 1},
    }
    state = checkpoint_state(net, config, step=1, ema=ema)
    return save_checkpoint(path / "step_00000001.pt", state)


def test_exact_mixture_sampling_writes_files_and_exact_metrics(tmp_path):
    cfg = _cfg("n=200", "solver=euler_maruyama", "solver.steps=30", "record=true")
    summary = run_sampling(cfg, tmp_path, solver_name="euler_maruyama")
    assert (summary["steps"], summary["nfe"], summary["n"]) == (30, 31, 200)  # + final denoise
    x0 = torch.as_tensor(np.load(tmp_path / "samples.npz")["x0"])
    assert x0.shape == (200, 2)
    mix = ring_mixture(std=0.15)
    assert summary["nll"] == pytest.approx(float(-mix.log_prob(x0.double()).mean()), rel=1e-9)
    traj = np.load(tmp_path / "trajectory.npz")
    assert traj["trajectory"].shape == (32, 200, 2)  # T, 30 steps, denoised x0
    assert np.allclose(traj["trajectory"][-1], x0.numpy())
    assert traj["times"][0] == 1.0 and traj["times"][-1] == 0.0
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["nfe"] == 31 and on_disk["solver"] == "euler_maruyama"
    for name in ("samples.png", "trajectories.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_exact_samples_lie_within_the_monte_carlo_floor():
    """Samples of the mixture itself: both metrics within 3 RMS floors of 0; shifted: far out."""
    mix = ring_mixture(std=0.15)
    x = mix.sample64(500, torch.Generator().manual_seed(7))
    m = exact_metrics(mix, x, seed=0)
    assert abs(m["nll_gap"]) < 3 * m["nll_gap_floor"] and abs(m["mmd2"]) < 3 * m["mmd2_floor"]
    shifted = exact_metrics(mix, x + 0.6, seed=0)  # shift of 4 component stds
    assert shifted["nll_gap"] > 10 * shifted["nll_gap_floor"]
    assert shifted["mmd2"] > 10 * shifted["mmd2_floor"]


def test_same_seed_same_samples(tmp_path):
    cfg = _cfg("n=50", "solver=euler_maruyama", "solver.steps=5", "plot=false", "seed=3")
    run_sampling(cfg, tmp_path / "a")
    run_sampling(cfg, tmp_path / "b")
    a, b = (np.load(tmp_path / d / "samples.npz")["x0"] for d in ("a", "b"))
    assert np.array_equal(a, b)


def test_an_option_a_solver_cannot_use_is_rejected_not_dropped():
    """``solver.steps`` on an adaptive solver fails at composition (no such key), and forcing it
    with ``+solver.steps`` fails at construction, naming the group and the option."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="solver.steps"):
        _cfg("solver=pf_ode", "solver.steps=10")
    with pytest.raises(ValueError, match="solver.*steps"):
        build_solver(_cfg("solver=pf_ode", "+solver.steps=10").solver, False)
    solver = build_solver(_cfg("solver=euler_maruyama").solver, False)
    facts = solver_facts(solver)
    assert facts["steps"] == solver.steps == 500 and facts["stochastic"] is True
    assert facts["evals_per_step"] == 1 and facts["adaptive"] is False and facts["order"] == 1
    pf = solver_facts(build_solver(_cfg("solver=pf_ode").solver, False))
    assert pf["adaptive"] is True and pf["stochastic"] is False and pf["steps"] is None


def test_data_override_detection():
    assert _data_chosen(["data=digits", "n=3"]) and _data_chosen(["data.std=0.2"])
    assert not _data_chosen(["n=3", "solver=pf_ode", "database=1"])


def test_checkpoint_ema_and_raw_weights(tmp_path):
    """The EMA net has ε ≡ 0, the raw net ε ≡ 0.5: same seed, different samples."""
    ckpt = _tiny_checkpoint(tmp_path)
    over = ["n=20", "solver=euler_maruyama", "solver.steps=4", "plot=false", "device=cpu"]
    s_ema = run_sampling(_cfg(f"checkpoint={ckpt}", *over), tmp_path / "ema", data_chosen=False)
    run_sampling(
        _cfg(f"checkpoint={ckpt}", "ema=false", *over), tmp_path / "raw", data_chosen=False
    )
    ema, raw = (np.load(tmp_path / d / "samples.npz")["x0"] for d in ("ema", "raw"))
    assert s_ema["source"].startswith("checkpoint") and s_ema["ema"] is True
    assert "nll" in s_ema  # the checkpoint's ring data is an exact mixture
    assert ema.shape == raw.shape == (20, 2)
    assert np.abs(ema - raw).min() > 1e-3


def test_image_checkpoint_writes_grid_and_denoising_strip(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path, {"_target_": "sde_gen.data.Digits"}, (1, 8, 8))
    over = ["n=6", "solver=ddim", "solver.steps=5", "record=true", "device=cpu"]
    summary = run_sampling(_cfg(f"checkpoint={ckpt}", *over), tmp_path / "o", data_chosen=False)
    assert summary["data_shape"] == [1, 8, 8] and summary["nfe"] == 5 and "nll" not in summary
    assert np.load(tmp_path / "o" / "samples.npz")["x0"].shape == (6, 1, 8, 8)
    assert np.load(tmp_path / "o" / "trajectory.npz")["trajectory"].shape[1:] == (6, 1, 8, 8)
    for name in ("samples.png", "denoising.png"):
        assert (tmp_path / "o" / name).stat().st_size > 1000


def test_incompatible_checkpoint_is_rejected_naming_both_shapes(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path)
    cfg = _cfg(f"checkpoint={ckpt}", "data=digits", "n=4", "plot=false")
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(1, 8, 8\)"):
        run_sampling(cfg, tmp_path / "out", data_chosen=True)


def test_non_mixture_data_without_checkpoint_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no exact score"):
        run_sampling(_cfg("data=moons", "n=4"), tmp_path)


def test_cli_rejects_unknown_solver_listing_choices(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [CLI, "solver=no_such_solver"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Could not find 'solver/no_such_solver'" in proc.stderr
    for name in ("euler_maruyama", "pf_ode", "ancestral"):
        assert f" {name}" in proc.stderr


def test_point_mass_mixture_samples_without_density_metrics(tmp_path):
    """data.std=0: point masses have no density at t = 0, so no NLL/MMD and a plain scatter."""
    over = ["data.std=0", "n=8", "solver=ddim", "solver.steps=3", "record=true"]
    summary = run_sampling(_cfg(*over), tmp_path, solver_name="ddim")
    assert summary["finite"] and "nll" not in summary and "mmd2" not in summary
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert (tmp_path / "trajectories.png").stat().st_size > 1000
    x0 = np.load(tmp_path / "samples.npz")["x0"]
    assert abs(np.median(np.linalg.norm(x0, axis=1)) - 2.0) < 0.05  # most on the ring of radius 2


def test_digits_features_give_fd_and_kid_against_the_test_split(tmp_path):
    """FD and KID of the samples' classifier features against the test split, recomputed from
    samples.npz; the untrained model is far above the train/test floor; PNGs hold the levels."""
    from PIL import Image

    from sde_gen.data import Digits
    from sde_gen.metrics.images import feature_vectors, frechet_distance, kernel_inception_distance
    from sde_gen.models.digits_classifier import pretrained_digits_classifier

    ckpt = _tiny_checkpoint(tmp_path, {"_target_": "sde_gen.data.Digits"}, (1, 8, 8))
    over = ["n=40", "batch_size=16", "solver=ddim", "solver.steps=3", "device=cpu", "plot=false"]
    extra = ["features=digits", "export_png=true", "kid_subsets=5", "kid_subset_size=20"]
    cfg = _cfg(f"checkpoint={ckpt}", *over, *extra)
    summary = run_sampling(cfg, tmp_path / "o", data_chosen=False)
    x0 = torch.as_tensor(np.load(tmp_path / "o" / "samples.npz")["x0"])
    net, data = pretrained_digits_classifier(), Digits()
    f, test = feature_vectors(net, x0.clamp(-1, 1)), feature_vectors(net, data.split("test", 40))
    train = feature_vectors(net, data.split("train", 40))
    assert summary["fd"] == pytest.approx(frechet_distance(f, test), rel=1e-6)
    assert summary["fd_floor"] == pytest.approx(frechet_distance(train, test), rel=1e-9)
    kid, se = kernel_inception_distance(f, test, 5, 20, seed=0)
    assert (summary["kid"], summary["kid_se"]) == pytest.approx((kid, se), rel=1e-6)
    assert (summary["quality_n_test"], summary["quality_n_train"]) == (40, 40)
    assert summary["fd"] > 3 * summary["fd_floor"]
    assert summary["kid"] - summary["kid_floor"] > 3 * (summary["kid_se"] + summary["kid_floor_se"])
    pngs = sorted((tmp_path / "o" / "png").iterdir())
    assert [p.name for p in pngs[:2]] == ["000000.png", "000001.png"] and len(pngs) == 40
    levels = np.asarray(Image.open(pngs[7]))
    assert np.array_equal(levels, ((x0[7, 0].clamp(-1, 1) + 1) * 127.5).round().numpy())


@pytest.mark.parametrize("key", ["features=digits", "export_png=true"])
def test_image_options_on_2d_samples_are_rejected(tmp_path, key):
    with pytest.raises(ValueError, match=rf"{key.split('=')[0]} needs image samples"):
        run_sampling(_cfg("n=4", key), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_recorded_adaptive_solver_needs_one_chunk(tmp_path):
    with pytest.raises(ValueError, match="batch_size=3"):
        run_sampling(_cfg("n=4", "batch_size=3", "solver=pf_ode", "record=true"), tmp_path / "o")


@pytest.mark.parametrize(
    ("override", "match"),
    [("batch_size=0", "batch_size=0"), ("seed=4294967296", "seed=4294967296"),
     ("kid_subset_size=1", "kid_subset_size=1"), ("kid_subsets=0", "kid_subsets=0")],
)  # fmt: skip
def test_bad_chunk_and_quality_settings_name_the_key(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        run_sampling(_cfg("n=4", override), tmp_path / "o")
