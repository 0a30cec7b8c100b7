"""The end of a training run and its logged conventions: the final sampling and evaluation are
logged with their durations and the exact NFE, the last console line carries the headline metrics,
the loss is logged per dimension too, and the share of clipped steps counts exactly the steps
whose pre-clip gradient norm exceeded ``grad_clip``."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hydra import compose, initialize_config_module
from test_train_helpers import tiny_trainer

from sde_gen.data import Digits, ring_mixture
from sde_gen.losses import DSMLoss, SimpleLoss, VDMLoss
from sde_gen.train import run
from sde_gen.training.report import METRICS_FILE, clipped_share, headline
from sde_gen.training.trainer import loss_dims

TINY = [
    "model.hidden=16",
    "model.num_layers=1",
    "model.embedding.dim=8",
    "trainer.steps=4",
    "trainer.batch_size=16",
    "trainer.log_every=2",
    "trainer.checkpoint_every=null",
    "trainer.sample_count=200",
    "trainer.progress=false",
    "solver.steps=5",
]


def _compose(*overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _metrics(out_dir):
    return [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]


def test_default_final_sampler_is_dpm_solver_at_a_few_tens_of_evaluations():
    """Neither the default run nor the toy experiment ends with hundreds of Euler–Maruyama steps."""
    for cfg in (_compose(), _compose("experiment=toy2d")):
        assert cfg.solver._target_ == "sde_gen.solvers.DPMSolver"
        assert 10 <= cfg.solver.steps <= 30
    assert _compose().trainer.grad_clip is None


def test_final_sampling_is_logged_timed_and_headlined(tmp_path, caplog):
    """The final samples cost exactly solver.steps evaluations (DPM-Solver++ lands on t = 0 with
    its last evaluation), their time and the metrics' time are in the summary and the log, and the
    headline names the mode fraction and the NLL gap of the same summary."""
    caplog.set_level(logging.INFO, logger="sde_gen.training.trainer")
    summary = run(_compose(*TINY), tmp_path, progress=False)
    assert summary["final_nfe"] == 5
    assert summary["final_sample_s"] > 0 and summary["final_eval_s"] > 0
    text = caplog.text
    assert "final samples: 200 from the EMA model with DPMSolver(steps=5" in text
    assert "sampled in" in text and "(5 evaluations)" in text
    assert "evaluated against the exact density in" in text
    line = headline(summary)
    assert f"mode fraction {summary['mode_fraction']:.3f}" in line
    assert f"NLL gap {summary['nll_gap']:.4f}" in line
    assert line.startswith(f"step 4, loss {summary['final_loss']:.5f}")


def test_headline_text_is_exact():
    summary = {
        "steps": 300,
        "final_loss": 0.5,
        "final_loss_per_dim": 0.25,
        "clipped_share": 0.125,
        "nll_gap": 0.12345,
        "mode_fraction": 0.9876,
        "fd": 12.345,
    }
    assert headline(summary) == (
        "step 300, loss 0.50000 (0.25000/dim), clipped 12% of steps, mode fraction 0.988, "
        "NLL gap 0.1235, FD 12.3"
    )


def test_loss_per_dim_divides_summed_losses_only():
    """DSM sums over the D dimensions (nats a sample); the DDPM losses and VDM's bound are already
    per dimension."""
    ring = ring_mixture()
    digits = Digits()
    assert loss_dims(DSMLoss(), ring) == 2 and loss_dims(DSMLoss(), digits) == 64
    assert loss_dims(SimpleLoss(), digits) == 1 and loss_dims(VDMLoss(), digits) == 1


def test_logged_loss_per_dim_and_clipped_share_follow_their_definitions(tmp_path):
    """Each metrics line of one step has ``clipped`` = 1 exactly when its pre-clip norm exceeds
    grad_clip, else 0; ``loss_per_dim`` = loss / 2 on the ring; the summary's share is the mean."""
    free = tiny_trainer(
        tmp_path / "free", steps=8, log_every=1, checkpoint_every=None, grad_clip=None
    )
    free.fit()
    norms = sorted(r["grad_norm"] for r in _metrics(tmp_path / "free"))
    assert all(r["clipped"] == 0.0 for r in _metrics(tmp_path / "free"))
    clip = 0.5 * (norms[3] + norms[4])  # the median: some steps above, some below
    trainer = tiny_trainer(
        tmp_path / "clip", steps=8, log_every=1, checkpoint_every=None, grad_clip=clip
    )
    summary = trainer.fit()
    lines = _metrics(tmp_path / "clip")
    flags = [float(r["grad_norm"] > clip) for r in lines]
    assert [r["clipped"] for r in lines] == flags
    assert 0 < sum(flags) < len(flags)
    assert summary["clipped_share"] == pytest.approx(sum(flags) / len(flags), rel=1e-12)
    for r in lines:
        assert r["loss_per_dim"] == pytest.approx(r["loss"] / 2, rel=1e-12)


def test_clipped_share_weights_each_line_by_its_steps():
    history = [
        {"step": 10, "clipped": 1.0},
        {"step": 40, "clipped": 0.0},
        {"step": 50, "clipped": 0.5},
    ]
    assert clipped_share(history) == pytest.approx((10 * 1.0 + 30 * 0.0 + 10 * 0.5) / 50)
    assert math.isnan(clipped_share([{"step": 5, "loss": 1.0}]))


def test_steps_budget_sets_fixed_step_solvers_and_leaves_adaptive_ones(caplog):
    """``steps=`` of sde-gen-sample: solver.steps of a fixed-step solver (DPM-Solver++ then costs
    exactly that many evaluations), nothing on the adaptive PF-ODE (logged), nothing when null."""
    from hydra.utils import instantiate

    from sde_gen.cli.build import with_steps

    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        dpm = compose("sample", overrides=["solver=dpm_solver"]).solver
        ode = compose("sample", overrides=["solver=pf_ode"]).solver
    assert instantiate(with_steps(dpm, 7)).expected_nfe() == 7 and dpm.steps == 20
    assert with_steps(dpm, None) is dpm
    caplog.set_level(logging.INFO, logger="sde_gen.cli.build")
    assert with_steps(ode, 7) is ode and "steps" not in ode
    assert "steps=7 does not apply to sde_gen.solvers.PFODE" in caplog.text
