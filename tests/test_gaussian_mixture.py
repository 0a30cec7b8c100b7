"""Gaussian mixtures: exact diffused density and score under every SDE family."""

import math

import pytest
import torch

from sde_gen.data import GaussianMixture, random_mixture, ring_mixture
from sde_gen.models import ScoreModel
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE, LinearSDE, SubVPSDE
from sde_gen.sde.ddpm import CosineSchedule

SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(0.01, 10.0),
    "linear": LinearSDE(lambda t: -1.0 - torch.sin(3 * t), lambda t: 0.5 + t),
    "ddpm_cosine": DiscreteVPSDE(CosineSchedule(T=100).betas),
}

MIXTURES = {
    "isotropic": ring_mixture(5, radius=2.0, std=0.2),
    "diagonal": GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.0, 0.5], [1.0, 1.0], [0.0, -1.5]],
        [[0.3, 0.1], [0.05, 0.4], [0.2, 0.2]],
    ),
    "64d": random_mixture(4, 64, seed=3),
}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("mix_name", list(MIXTURES))
def test_score_is_gradient_of_log_prob(sde_name, mix_name):
    sde, mix = SDES[sde_name], MIXTURES[mix_name]
    g = torch.Generator().manual_seed(1)
    t = torch.rand(64, dtype=torch.float64, generator=g) * 0.999 + 1e-3
    x = sde.marginal_sample(mix.sample64(64, g), t, torch.randn(64, mix.dim, generator=g).double())
    x = x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, t, sde).sum(), x)
    assert torch.allclose(mix.score(x.detach(), t, sde), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mix_name", ["isotropic", "diagonal"])
def test_log_prob_at_t0_is_the_data_density(mix_name):
    mix = MIXTURES[mix_name]
    x = mix.sample64(200, torch.Generator().manual_seed(0))
    comps = torch.distributions.Independent(torch.distributions.Normal(mix.means, mix.stds), 1)
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mix.weights), comps)
    assert torch.allclose(mix.log_prob(x), ref.log_prob(x), rtol=1e-12)
    for sde in SDES.values():
        t = torch.full((200,), 1e-9, dtype=torch.float64)
        assert torch.allclose(mix.log_prob(x, t, sde), ref.log_prob(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "linear"])
def test_diffused_density_integrates_to_one(sde_name):
    sde, mix = SDES[sde_name], MIXTURES["diagonal"]
    t0 = 0.05
    half = (
        6
        * math.sqrt(
            sde.gamma(torch.tensor([t0])).item() ** 2 * 0.16
            + sde.sigma(torch.tensor([t0])).item() ** 2
        )
        + 3
    )
    u = torch.linspace(-half, half, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    p = mix.log_prob(pts, torch.full((len(pts),), t0, dtype=torch.float64), sde).exp()
    mass = torch.trapezoid(torch.trapezoid(p.reshape(801, 801), u), u)
    assert abs(mass.item() - 1) < 1e-6


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_score_identities_under_the_diffused_marginal(sde_name):
    """Stein identities: E_q[∇log q] = 0 and E_q[x·∇log q] = −D, within 4 standard errors."""
    sde, mix = SDES[sde_name], MIXTURES["diagonal"]
    g = torch.Generator().manual_seed(2)
    n = 20000
    t = torch.full((n,), 0.3, dtype=torch.float64)
    x = sde.marginal_sample(mix.sample64(n, g), t, torch.randn(n, 2, generator=g).double())
    s = mix.score(x, t, sde)
    for values, target in ((s, torch.zeros(2, dtype=torch.float64)), ((x * s).sum(1), -2.0)):
        se = values.std(0) / math.sqrt(n)
        assert torch.all((values.mean(0) - target).abs() < 4 * se)


def test_samples_follow_the_mixture():
    mix = MIXTURES["diagonal"]
    n = 40000
    x = mix.sample64(n, torch.Generator().manual_seed(5))
    mean = (mix.weights[:, None] * mix.means).sum(0)
    second = (mix.weights[:, None] * (mix.means**2 + mix.stds**2)).sum(0)
    sd = torch.sqrt(second - mean**2)
    assert torch.all((x.mean(0) - mean).abs() < 4 * sd / math.sqrt(n))
    assert mix.sample(3).dtype == torch.float32


def test_score_model_round_trip_and_tweedie():
    """ScoreModel(ε_net) with ε = −σ ∇log q_t gives back the exact score, and its denoiser is
    Tweedie's E[x0|x_t] = μ + γ s²/(γ² s² + σ²)(x_t − γ μ) for a single Gaussian."""
    sde = SDES["vp"]
    mu, s = torch.tensor([[0.5, -1.0]], dtype=torch.float64), 0.4
    mix = GaussianMixture([1.0], mu, s)

    class ExactEps(torch.nn.Module):
        def forward(self, x, t):
            return -sde.sigma(t)[:, None] * mix.score(x, t, sde)

    model = ScoreModel(ExactEps(), sde)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, dtype=torch.float64, generator=g)
    t = torch.rand(16, dtype=torch.float64, generator=g) * 0.9 + 0.05
    assert torch.allclose(model(x, t), mix.score(x, t, sde), rtol=1e-12)
    gamma, sigma = sde.gamma(t)[:, None], sde.sigma(t)[:, None]
    tweedie = mu + gamma * s**2 / (gamma**2 * s**2 + sigma**2) * (x - gamma * mu)
    assert torch.allclose(model.denoise(x, t), tweedie, rtol=1e-10)


def test_score_model_rejects_wrong_output_shape():
    class Bad(torch.nn.Module):
        def forward(self, x, t):
            return x[:, :1]

    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        ScoreModel(Bad(), SDES["vp"])(torch.zeros(3, 2), torch.full((3,), 0.5))


@pytest.mark.parametrize(
    "args, match",
    [
        (([1.0], [[0.0, 0.0]], -0.1), "stds"),
        (([1.0, 1.0], [[0.0, 0.0]], 0.1), "weights shape"),
        (([-1.0], [[0.0, 0.0]], 0.1), "weights must be positive"),
        (([1.0], [0.0, 0.0], 0.1), "means must have shape"),
        (([1.0], [[0.0, 0.0]], [[0.1, 0.1, 0.1]]), "stds must be"),
    ],
)
def test_bad_mixture_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


def test_bad_query_shapes():
    mix = MIXTURES["isotropic"]
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        mix.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        mix.score(torch.zeros(4, 2), torch.zeros(5), SDES["vp"])
