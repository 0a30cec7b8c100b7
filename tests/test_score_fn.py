"""ScoreFn: the score of a Gaussian in closed form, its ε̂ and Tweedie x̂0, counted and checked."""

import pytest
import torch

from sde_gen.sde import VESDE, VPSDE
from sde_gen.sde.score_fn import ScoreFn

MU, S = 0.7, 0.3  # data N(μ, s² I)


def gaussian_score(sde):
    """∇log q_t for x0 ~ N(μ, s² I): q_t = N(γ_t μ, γ_t² s² + σ_t²)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g, sig = (v.to(x.dtype)[:, None] for v in (sde.gamma(t.double()), sde.sigma(t.double())))
        return -(x - g * MU) / (g**2 * S**2 + sig**2)

    return score


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("vector_t", [False, True], ids=["float_t", "vector_t"])
def test_x0_and_eps_are_the_closed_forms(sde, vector_t):
    """x̂0 = μ + γ s² (x − γ μ)/(γ² s² + σ²) (the Gaussian posterior mean) and
    ε̂ = σ (x − γ μ)/(γ² s² + σ²), to 1e-12 in float64, one evaluation each."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 0.4
    tt = torch.full((5,), t, dtype=torch.float64)
    g, sig = float(sde.gamma(tt)[0]), float(sde.sigma(tt)[0])
    var = g**2 * S**2 + sig**2
    score = ScoreFn(gaussian_score(sde), sde)
    at = tt if vector_t else t
    assert torch.allclose(score.x0(x, at), MU + g * S**2 * (x - g * MU) / var, atol=1e-12)
    assert torch.allclose(score.eps(x, at), sig * (x - g * MU) / var, atol=1e-12)
    assert torch.allclose(score(x, at), -(x - g * MU) / var, atol=1e-12)
    assert score.nfe == 3


def test_of_wraps_once_per_sde():
    """``of`` returns a ScoreFn for the same SDE itself (its count goes on), a new one otherwise."""
    sde = VPSDE()
    score = ScoreFn(gaussian_score(sde), sde)
    assert ScoreFn.of(score, sde) is score
    other = ScoreFn.of(score, VESDE())
    assert other is not score and other.score_fn is score
    other(torch.zeros(2, 3), 0.5)
    assert (other.nfe, score.nfe) == (1, 1)


def test_a_non_finite_or_misshaped_score_names_t():
    sde = VPSDE()
    bad = ScoreFn(lambda x, t: x * float("nan"), sde)
    with pytest.raises(
        ValueError,
        match=r"t=0.25 returned NaN or inf \(a non-finite score of shape \(2, 3\) at t=0.25\)",
    ):
        bad(torch.ones(2, 3), 0.25)
    flat = ScoreFn(lambda x, t: x[:, :1], sde)
    with pytest.raises(ValueError, match=r"t=0.5 returned shape \(2, 1\), expected \(2, 3\)"):
        flat.x0(torch.ones(2, 3), 0.5)
    with pytest.raises(ValueError, match="score_fn must be callable"):
        ScoreFn(3, sde)
