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
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel

from sde_gen.checkpoint import FORMAT_VERSION, save_checkpoint
from sde_gen.data import ring_mixture
from sde_gen.models import MLP, ScoreModel
from sde_gen.sample import _data_chosen, build_solver, exact_metrics, run_sampling, solver_facts
from sde_gen.sde import VPSDE

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
    state = {
        "format": FORMAT_VERSION,
        "step": 1,
        "model": net.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "config": OmegaConf.to_yaml(config),
        "rng": {},
    }
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
