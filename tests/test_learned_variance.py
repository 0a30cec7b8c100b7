"""Sampling with the learned Σ_θ (Nichol & Dhariwal 2021): ``Ancestral(variance="learned")`` adds
noise of log-variance f log β + (1 − f) log β̃ (or Σ itself), by the model's own convention
(``models.learned_variance``) — the same function the hybrid loss trains — on any grid, and
refuses a score without a learned variance."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from sde_gen.data import ring_mixture
from sde_gen.losses.discrete import model_mean_log_variance, schedule_of
from sde_gen.models import MLP, ScoreModel
from sde_gen.models.learned_variance import LinearRange, SigmoidRange
from sde_gen.sample import run_sampling
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers import Ancestral
from sde_gen.solvers.base import StepContext
from sde_gen.train import run
from sde_gen.training.checkpoint import list_checkpoints

F64 = torch.float64
N = 20  # a short DDPM chain: β linear 1e-4 → 0.02 over 20 steps


class ConstantNet(nn.Module):
    """ε_θ ≡ 0 and raw variance output v ≡ ``v`` for every input: a hand-built learned-variance
    network whose Σ is known. It counts its evaluations."""

    def __init__(self, v: float):
        super().__init__()
        self.v, self.calls = v, 0

    def forward(self, x, t):
        self.calls += 1
        return torch.cat([torch.zeros_like(x), torch.full_like(x, self.v)], dim=1)


def chain() -> DiscreteVPSDE:
    return DiscreteVPSDE(linear_betas(T=N))


def test_the_interpolation_between_beta_and_beta_tilde():
    """v → +∞ gives β, v → −∞ gives β̃, v = 0 their geometric mean √(β β̃)."""
    beta, beta_tilde = torch.tensor(0.02, dtype=F64), torch.tensor(0.005, dtype=F64)
    lb, lt = beta.log(), beta_tilde.log()
    v = torch.tensor([60.0, -60.0, 0.0], dtype=F64)
    got = SigmoidRange().log_variance(v, lb, lt).exp()
    expect = torch.stack([beta, beta_tilde, (beta * beta_tilde).sqrt()])
    assert torch.allclose(got, expect, rtol=1e-14, atol=0)


@pytest.mark.parametrize("v", [-30.0, 0.0, 1.5, 30.0])
def test_one_step_variance_is_the_interpolation(v):
    """From one x_t repeated 20000 times, every noisy step of a strided grid (5 steps on the
    20-step chain; ε_θ = 0 so the mean is x_t/γ_{t|s}) has sample variance of x_s equal to
    exp(v' log β + (1 − v') log β̃), v' = sigmoid(v), with the step's own β = σ²_{t|s} and
    β̃ = σ²_{t|s} σ_s²/σ_t², within 4.5 standard errors (SE = Σ √(2/(n − 1)))."""
    sde, n = chain(), 20000
    model = ScoreModel(ConstantNet(v), sde)
    solver = Ancestral(steps=5, t_min=1 / N, variance="learned")
    x_T = torch.full((n, 1), 0.7, dtype=F64)
    res = solver(sde, model, x_T, torch.Generator().manual_seed(3), record=True)
    assert res.nfe == model.eps_net.calls == solver.expected_nfe() == 5
    times = res.times
    for k in range(len(times) - 2):
        s, t = times[k + 1 : k + 2], times[k : k + 1]
        gamma_ts, beta = sde.transition(s, t)
        beta_tilde = sde.posterior(s, t)[2]
        x_t, x_s = res.trajectory[k], res.trajectory[k + 1]
        noise = x_s - x_t / gamma_ts
        log_var = SigmoidRange().log_variance(torch.tensor(v), beta.log(), beta_tilde.log())
        sig = math.exp(float(log_var))
        assert abs(float(noise.var()) - sig) <= 4.5 * sig * math.sqrt(2 / (n - 1)), (k, sig)
    assert beta_tilde < 0.99 * beta  # the two ends differ: the test tells them apart


@pytest.mark.parametrize("v", [-2.0, 0.3])
def test_sampler_and_hybrid_loss_give_the_same_variance_on_the_ddpm_chain(v):
    """sde = the N-step DDPM chain, steps = N, t_min = 1/N: the sampler's log Σ of the step
    i/N → (i−1)/N equals the loss's log Σ_i at step i for every i = 1..N, including i = 1 where
    β̃_1 = 0 and both use the clipped log β̃_2."""
    sde = chain()
    model = ScoreModel(ConstantNet(v), sde)
    solver = Ancestral(steps=N, t_min=1 / N, variance="learned")
    times = solver.time_grid(sde)
    assert torch.allclose(times, torch.arange(N, -1, -1, dtype=F64) / N, atol=1e-14, rtol=0)
    ctx = StepContext(sde, ScoreFn(model, sde), None, times, 0)
    x = torch.zeros(1, 2, dtype=F64)
    grid = times.tolist()
    schedule = schedule_of(model)
    for k in range(N):
        ctx.index = k
        i = N - k  # the chain step i → i − 1
        vv = torch.full_like(x, v)
        ours = Ancestral.learned_step_log_variance(ctx, grid[k], grid[k + 1], vv)
        steps = torch.tensor([i])
        loss = model_mean_log_variance(model, schedule, x, steps)[1]
        assert torch.allclose(ours, loss, rtol=1e-9, atol=1e-12), (i, ours, loss)


def test_a_score_without_learned_variance_is_refused():
    sde = VPSDE()
    x_T = torch.zeros(3, 2, dtype=F64)
    solver = Ancestral(steps=4, variance="learned")
    with pytest.raises(ValueError, match="needs a model with a learned variance.*MixtureScore"):
        solver(sde, ring_mixture().score_fn(sde), x_T)
    plain = ScoreModel(MLP((2,), hidden=8, num_layers=1), sde).double()
    with pytest.raises(ValueError, match="ScoreModel has no variance output"):
        solver(sde, plain, x_T)
    with pytest.raises(ValueError, match="variance='fixed' is not one of"):
        Ancestral(variance="fixed")


def test_the_training_step_reads_the_variance_by_the_models_convention():
    """The model a training step runs (behind autocast, DDP, compile) carries the model's
    convention: its L_hybrid VLB terms with model/variance=linear_range equal the model's own,
    and differ from those of the same network read as sigmoid_range."""
    from sde_gen.data.base import TensorData
    from sde_gen.losses import HybridLoss
    from sde_gen.training.loop import TrainingLoop
    from sde_gen.training.settings import TrainerSettings

    sde = chain()
    torch.manual_seed(0)
    net = MLP((2,), hidden=8, num_layers=1, learn_variance=True).double()
    nn.init.normal_(net.out.weight, std=0.5)
    model = ScoreModel(net, sde, variance=LinearRange())
    data = TensorData(torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=F64))
    settings = TrainerSettings(steps=1, batch_size=8, progress=False)
    loop = TrainingLoop(model, HybridLoss(num_bins=256), data, settings, torch.device("cpu"))
    assert loop.train_model.variance is model.variance
    x0 = torch.rand(8, 2, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    loss = HybridLoss(num_bins=256)
    draws = loss.draw(model, x0, torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = loss._terms(loop.train_model, x0, draws)["vb"]
        ref = loss._terms(model, x0, draws)["vb"]
        sigmoid = loss._terms(ScoreModel(net, sde), x0, draws)["vb"]
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
    assert (ours - sigmoid).abs().max() > 1e-3


TINY_HYBRID = [
    "sde=ddpm_linear",
    "loss=ddpm_hybrid",
    "loss.num_bins=256",
    "model.learn_variance=true",
    "model.hidden=16",
    "model.num_layers=1",
    "model.embedding.dim=8",
    "trainer.steps=10",
    "trainer.batch_size=64",
    "trainer.log_every=5",
    "trainer.checkpoint_every=10",
    "trainer.sample_count=20",
    "trainer.progress=false",
    "~solver",  # no sample plots
]


def _compose(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_a_tiny_hybrid_checkpoint_samples_with_learned_variance_and_analytic_dpm(tmp_path):
    """Train 10 steps of L_hybrid with a learned variance on the ring (DDPM chain), then
    ``sde-gen-sample checkpoint=… solver=ancestral solver.variance=learned``: finite samples in
    ``steps`` evaluations. ``solver=analytic_dpm`` on the same checkpoint calibrates on the
    trained data set (200 candidate times of the optimal trajectory, one batch each) and caches
    beside the checkpoint: the second run reads it (0 evaluations)."""
    run(_compose("train", *TINY_HYBRID), tmp_path / "train", progress=False)
    (ckpt,) = list_checkpoints(tmp_path / "train" / "checkpoints")
    common = [f"checkpoint={ckpt}", "n=64", "batch_size=64", "progress=false", "plot=false"]
    cfg = _compose(
        "sample", *common, "solver=ancestral", "solver.variance=learned", "solver.steps=8"
    )
    summary = run_sampling(cfg, tmp_path / "learned", data_chosen=False)
    assert summary["finite"] and summary["nfe"] == 8 and summary["solver_class"] == "Ancestral"
    analytic = [*common, "solver=analytic_dpm", "solver.steps=6", "solver.mc_samples=500"]
    first = run_sampling(_compose("sample", *analytic), tmp_path / "a1", data_chosen=False)
    second = run_sampling(_compose("sample", *analytic), tmp_path / "a2", data_chosen=False)
    assert first["calibration"] == "computed" and first["calibration_nfe"] == 200
    assert second["calibration"] == "disk" and second["calibration_nfe"] == 0
    assert len(list((ckpt.parent / "calibration").glob("analytic_dpm_*.json"))) == 1
    a1, a2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a1", "a2"))
    assert a1["finite"] and a1["nfe"] == a2["nfe"] == 6
