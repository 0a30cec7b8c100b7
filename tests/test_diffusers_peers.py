"""The diffusers adapter's time mapping: train step k ↔ t = (k+1)/N, fractional τ ↔ log-SNR."""

import sys
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from diffusers_peers import DiffusersSampler, ExactEps  # noqa: E402

from sde_gen.data import ring_mixture  # noqa: E402
from sde_gen.sde import VPSDE, DiscreteVPSDE  # noqa: E402
from sde_gen.sde.ddpm import linear_betas  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    sched = diffusers.EulerDiscreteScheduler(beta_start=1e-4, beta_end=0.02)
    eps = ExactEps(sde, ring_mixture().score_fn(sde), sched.alphas_cumprod.double().numpy())
    return sde, sched, eps


def test_integer_timestep_k_is_t_k_plus_one_over_n(setup):
    """alphas_cumprod[k] = ᾱ_{k+1} = γ²(t) at t = (k+1)/1000."""
    sde, sched, eps = setup
    k = torch.tensor([0.0, 1.0, 499.0, 998.0, 999.0])
    t = eps.times_of(k)
    # diffusers keeps alphas_cumprod in float32: t agrees to float32 round-off, not 1e-12
    assert torch.allclose(t, (k.double() + 1) / 1000, atol=1e-6, rtol=0)
    assert not torch.allclose(t, k.double() / 1000, atol=5e-4, rtol=0)  # not t = k/N
    assert torch.allclose(sde.gamma(t) ** 2, sched.alphas_cumprod.double()[k.long()], rtol=1e-6)


def test_fractional_timestep_matches_the_schedulers_sigma(setup):
    """For τ between steps, σ_t/γ_t equals diffusers' linearly interpolated σ_EDM(τ)."""
    sde, sched, eps = setup
    sched.set_timesteps(7)  # linspace spacing: fractional timesteps
    taus = sched.timesteps.double()
    assert (taus != taus.round()).any()
    t = eps.times_of(taus)
    assert torch.allclose(sde.sigma(t) / sde.gamma(t), sched.sigmas[:-1].double(), rtol=1e-5)


def test_exact_eps_is_minus_sigma_times_score(setup):
    sde, _, eps = setup
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = eps(x, torch.tensor(499.0))
    t = torch.full((5,), 0.5, dtype=torch.float64)
    expected = -sde.sigma(t)[:, None] * ring_mixture().score(x, t, sde)
    assert torch.allclose(out, expected, atol=1e-9)
    assert eps.nfe == 1


def test_wrong_schedule_is_rejected():
    sampler = DiffusersSampler(diffusers.DDIMScheduler(), steps=5)
    with pytest.raises(ValueError, match="ddpm_linear"):
        sampler(VPSDE(), ring_mixture().score_fn(VPSDE()), torch.zeros(2, 2))
    heun = DiffusersSampler(diffusers.HeunDiscreteScheduler(), steps=5)  # default betas differ
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        heun(sde, ring_mixture().score_fn(sde), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="steps"):
        DiffusersSampler(diffusers.DDIMScheduler(), steps=0)


def test_scheduler_sigmas_give_the_times_karras_and_lu():
    """With Karras or λ-uniform σ the rounded τ is not the noise level the scheduler steps with:
    ε is taken at the scheduler's own σ_i (σ_t/γ_t = σ_i), and 3M runs under float32."""
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    for opts in ({"use_karras_sigmas": True}, {"use_lu_lambdas": True}):
        sched = diffusers.DPMSolverMultistepScheduler(
            beta_start=1e-4, beta_end=0.02, solver_order=3, **opts
        )
        sampler = DiffusersSampler(sched, steps=6)
        x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
        out = sampler(sde, ring_mixture().score_fn(sde), x_T)
        sigma_tilde = sde.sigma(out.times) / sde.gamma(out.times)
        assert torch.allclose(sigma_tilde, sched.sigmas[:6].double(), rtol=1e-6)
        assert out.nfe == 6 and torch.isfinite(out.x0).all()
        assert sampler.family() == "DPMSolverMultistep-3"
