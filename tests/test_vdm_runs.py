"""VDM in use: every solver and the PF-ODE likelihood run on a learned schedule, training moves
the schedule and checkpoints restore it, the train and eval commands report its bound, and DDP
trains it as one process does (helpers from ``test_vdm``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_vdm import RING, RING_SQ, gen, interior, learned, tiny_net

from sde_gen.likelihood.ode import ode_log_likelihood
from sde_gen.losses import VDMLoss
from sde_gen.models import ScoreModel
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.sde import VDMSDE, LearnedNegLogSNR
from sde_gen.solvers import PFODE, DPMSolver, EulerMaruyama, ScaledCoordinates, ScipyODE
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.settings import TrainerSettings
from sde_gen.training.trainer import Trainer

HERE = Path(__file__).resolve().parent


# -------------------------------------------------------------------------- solvers, likelihood
def _random_schedule() -> VDMSDE:
    """A learned schedule moved well away from linear (random interior, γ_1 = 5)."""
    sde = learned(seed=9, hidden=64, learned=False)
    with torch.no_grad():
        for p in interior(sde):
            p.add_(torch.randn(p.shape, generator=gen(15)))
    return sde


@pytest.mark.parametrize(
    "solver",
    [
        DPMSolver(steps=20, order=2),
        EulerMaruyama(steps=200, denoise_final=True),
        PFODE(ScipyODE(coordinates=ScaledCoordinates())),
    ],
    ids=["dpm_solver", "euler_maruyama", "pf_ode_scaled"],
)
def test_solvers_sample_the_ring_with_the_exact_score(solver):
    """Exact mixture score under a nonlinear learned schedule: 1000 samples have E‖x‖² = 4.045
    within 4 SE (SD of ‖x‖² ≈ 0.6) and squared distance to the nearest mode 2 s² = 0.045 within
    20 % (discretisation and t_min included)."""
    sde = _random_schedule()
    g = gen(16)
    x_T = sde.prior_sample((1000, 2), g, dtype=torch.float64)
    x = solver(sde, RING.score_fn(sde), x_T, generator=g).x0
    sq = x.pow(2).sum(1)
    assert abs(float(sq.mean()) - RING_SQ) < 4 * float(sq.std()) / math.sqrt(1000)
    nearest = torch.cdist(x, RING.means).min(1).values.pow(2).mean()
    assert abs(float(nearest) / (2 * 0.15**2) - 1) < 0.2


def test_pf_ode_likelihood_on_the_vdm_sde():
    """PF-ODE log-likelihood (scaled coordinates, exact trace, exact log q_1 as prior) of 8 ring
    points under a nonlinear learned schedule: within 0.01 nats of the exact log q_{t_min}."""
    sde, t_min = _random_schedule(), 1e-5
    x = RING.sample64(8, gen(17))
    prior = lambda z: RING.log_prob(z, torch.ones(len(z), dtype=torch.float64), sde)  # noqa: E731
    logp, nfe = ode_log_likelihood(
        sde, RING.score_fn(sde), x, exact_trace=True, t_min=t_min, prior_logp=prior
    )
    exact = RING.log_prob(x, torch.full((8,), t_min, dtype=torch.float64), sde)
    assert (logp - exact).abs().max() < 0.01 and 10 < nfe < 1000


def test_bad_settings_name_the_value():
    """Every setting is checked once, naming the key and the value; learned=false freezes."""
    from sde_gen.losses import vdm_vlb

    cases = [
        (lambda: LearnedNegLogSNR(gamma_min=5.0, gamma_max=1.0), "gamma_min=5.0"),
        (lambda: LearnedNegLogSNR(gamma_min=float("nan")), "gamma_min=nan"),
        (lambda: LearnedNegLogSNR(init="cosine"), "init='cosine'"),
        (lambda: LearnedNegLogSNR(hidden=0), "hidden=0"),
        (lambda: LearnedNegLogSNR(gamma_max=12.0, init="vp"), "gamma_max=12.0"),
        (lambda: VDMSDE(neg_log_snr=3), "neg_log_snr=3"),
        (lambda: VDMLoss(num_bins=1), "num_bins=1"),
        (lambda: vdm_vlb(ScoreModel(tiny_net(), learned()), RING.sample(2), time_draws=0), "time_"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
    assert not any(p.requires_grad for p in learned(learned=False).parameters())


# ------------------------------------------------------------------- training and checkpoints
VDM_CONFIG = {
    "sde": {
        "_target_": "sde_gen.sde.VDMSDE",
        "neg_log_snr": {"_target_": "sde_gen.sde.LearnedNegLogSNR", "hidden": 16, "seed": 0},
    },
    "data": {"_target_": "sde_gen.data.ring_mixture", "std": 0.15},
    "model": {
        "_target_": "sde_gen.models.MLP",
        "hidden": 32,
        "num_layers": 2,
        "embedding": {"_target_": "sde_gen.models.SinusoidalEmbedding", "dim": 16},
    },
}


def test_trained_schedule_is_saved_averaged_and_restored(tmp_path):
    """Training with loss=vdm moves the end points and the interior (AdamW, lr 0.05, 10 steps);
    the checkpoint holds the schedule in ``model`` and ``ema``; ``load_score_model`` rebuilds
    the SDE from the stored config and restores the learned log SNR exactly (raw and EMA)."""
    sde = VDMSDE(LearnedNegLogSNR(hidden=16, seed=0))
    settings = TrainerSettings(
        steps=10, batch_size=64, lr=0.05, warmup_steps=0, ema_decay=0.5, log_every=5,
        checkpoint_every=None, progress=False,
    )  # fmt: skip
    config = OmegaConf.to_yaml(OmegaConf.create(VDM_CONFIG))
    trainer = Trainer(
        ScoreModel(tiny_net(), sde), VDMLoss(), RING, tmp_path, settings, device="cpu",
        config=config,
    )  # fmt: skip
    trainer.fit()
    t = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=torch.float64)
    fresh = VDMSDE(LearnedNegLogSNR(hidden=16, seed=0))
    with torch.no_grad():
        moved = (trainer.model.sde.log_snr(t) - fresh.log_snr(t)).abs()
        assert moved[[0, -1]].min() > 0.05 and moved[2] > 0.05
        path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
        state = ckpt.load_checkpoint(path)
        assert "sde.neg_log_snr.gamma_min" in state["model"]
        assert "module.sde.neg_log_snr.net.w_raw" in state["ema"]
        raw, _, _ = load_score_model(path, ema=False)
        ema, _, _ = load_score_model(path, ema=True)
        assert torch.equal(raw.sde.log_snr(t), trainer.model.sde.log_snr(t))
        assert torch.equal(ema.sde.log_snr(t), trainer.ema.module.sde.log_snr(t))
        assert not torch.equal(ema.sde.log_snr(t), raw.sde.log_snr(t))


def test_train_and_eval_commands_on_vdm(tmp_path):
    """``sde-gen-train sde=vdm loss=vdm data=ring model=mlp trainer.steps=50`` (in process, a
    smaller batch and final sample) and ``sde-gen-eval checkpoint=…``: the VLB and the PF-ODE
    NLL are reported in bits/dim and, being cross-entropies of normalised models, lie above the
    data's exact entropy −E log₂ q(x)/D (minus 3 SE)."""
    from hydra import compose, initialize_config_module

    from sde_gen.evaluate import run_evaluation
    from sde_gen.train import run

    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        train_cfg = compose(
            "train",
            overrides=[
                "sde=vdm", "loss=vdm", "data=ring", "model=mlp", "trainer.steps=50",
                "trainer.batch_size=64", "trainer.progress=false", "trainer.sample_count=64",
                "solver.steps=20",
            ],
        )  # fmt: skip
        summary = run(train_cfg, tmp_path / "train", progress=False)
        eval_cfg = compose(
            "eval", overrides=[f"checkpoint={summary['checkpoint']}", "n=32", "progress=false"]
        )
        report = run_evaluation(eval_cfg, tmp_path / "eval")
    x = RING.split("test", 32).double()
    nll = -RING.log_prob(x) / (2 * math.log(2))
    floor = float(nll.mean() - 3 * nll.std() / math.sqrt(32))
    assert math.isfinite(summary["final_loss"]) and report["vlb_bpd"] > floor
    assert report["bpd"] > floor


def _vdm_trainer(out: Path, world=None) -> Trainer:
    settings = TrainerSettings(
        steps=6, batch_size=32, lr=0.02, warmup_steps=0, ema_decay=0.5, log_every=3,
        checkpoint_every=None, progress=False,
    )  # fmt: skip
    model = ScoreModel(tiny_net(), VDMSDE(LearnedNegLogSNR(hidden=16)))
    return Trainer(model, VDMLoss(), RING, out, settings, device="cpu", world=world)


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow  # two torchrun workers: ~30 s on a shared 2-core CPU
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_two_processes_train_the_schedule_as_one(tmp_path):
    """DDP averages only the network's gradients; the training loop averages the learned
    schedule's over the ranks too: 2 processes (gloo) end with 1 process's weights, schedule
    included (1e-4 relative), so the ranks' schedules never drift apart."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", __file__, str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    one = _vdm_trainer(tmp_path / "one")
    one.fit()
    two = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "two" / "checkpoints"))
    for key, value in one.model.state_dict().items():
        gap = (two["model"][key].double() - value.double()).norm() / value.double().norm()
        assert gap < 1e-4, key
    assert any(k.startswith("sde.") for k in two["model"])


if __name__ == "__main__":  # the torchrun worker of the test above
    from sde_gen.runtime.distributed import close_world, init_world

    torch.set_num_threads(1)
    _vdm_trainer(Path(sys.argv[1]), init_world("cpu")).fit()
    close_world()


# ------------------------------------------------------------------- the network sees the level
def _expected_diffusion_loss(sde: VDMSDE, points: int = 2000) -> float:
    """E over t of L_∞ on 16 fixed (x, ε) pairs by the midpoint rule in t (float64), for a
    network with random weights (the output layer is not left at its zero initialisation)."""
    model = ScoreModel(tiny_net(3), sde).double()
    with torch.no_grad():
        for p in model.eps_net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(22), dtype=p.dtype))
    x = RING.sample(16, gen(20)).double()
    noise = torch.randn(x.shape, generator=gen(21), dtype=torch.float64)
    t = ((torch.arange(points, dtype=torch.float64) + 0.5) / points).repeat_interleave(16)
    draws = {"t": t, "noise": noise.repeat(points, 1)}
    with torch.no_grad():
        terms = VDMLoss(variance_gradient=False).terms(model, x.repeat(points, 1), draws)
    return float(terms.diffusion.mean())


def test_expected_diffusion_loss_depends_on_the_end_points_only():
    """With the level as the network's input, ∫₀¹ ½γ'(t)‖ε − ε̂(z_t, level(γ(t)))‖² dt =
    ½∫_{γ_0}^{γ_1} h(γ) dγ for every (x, ε): two schedules with the same end points and different
    interiors give the same expectation (midpoint rule, 2000 t: 6.6e-7 relative, asserted 2e-6).
    Seeing t, the network breaks this: the two differ by 3.5e-5 (the same with 8000 t, so not
    quadrature error; asserted > 1e-5)."""
    same = [_random_schedule(), learned(seed=9, hidden=64, learned=False)]
    assert all(torch.equal(a, b) for a, b in zip(*(s.neg_log_snr.ends() for s in same)))
    level = [_expected_diffusion_loss(s) for s in same]
    assert level[0] == pytest.approx(level[1], rel=2e-6)
    for s in same:
        s.level_input = False
    time = [_expected_diffusion_loss(s) for s in same]
    assert abs(time[0] / time[1] - 1) > 1e-5
