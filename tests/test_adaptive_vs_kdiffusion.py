"""experiments/adaptive_vs_kdiffusion.py without k-diffusion: its exact denoiser in k-diffusion's
σ parametrisation is the mixture's Tweedie estimate on the DDPM chain, the log–log
interpolation along our curve is exact on a power law, and on its mixture2d problem our
error-controlled step to t = 0 reaches below the old t_min floor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import adaptive_vs_kdiffusion as avk  # noqa: E402

from sde_gen.metrics.mixtures import endpoint_error  # noqa: E402
from sde_gen.sde import DiscreteVPSDE  # noqa: E402
from sde_gen.sde.ddpm import linear_betas  # noqa: E402
from sde_gen.solvers import AdaptiveUniPC  # noqa: E402


@pytest.mark.parametrize("data", ["ring", "mixture2d"])
def test_denoiser_is_tweedie_on_the_ddpm_chain(data):
    """D(x̃, σ̃) = x̃ + σ̃² ∇log p(x̃; σ̃) equals (x + σ_t² ∇log q_t(x))/γ_t at x = γ_t x̃, σ̃ = σ_t/γ_t:
    both sides integrate the same ODE."""
    mixture, sde = avk.DATA[data](), DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    t = torch.tensor([0.001, 0.05, 0.3, 0.9], dtype=torch.float64)
    gamma, sigma = sde.gamma(t), sde.sigma(t)
    y = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = gamma[:, None] * y
    tweedie = (x + sigma[:, None] ** 2 * mixture.score_fn(sde)(x, t)) / gamma[:, None]
    count = [0]
    denoised = avk.denoiser(mixture, count)(y, sigma / gamma)
    assert torch.allclose(denoised, tweedie, rtol=1e-10, atol=1e-12) and count == [1]


def test_nfe_at_error_is_exact_on_a_power_law():
    """error = 3 · NFE^(−2): the interpolated NFE at any error on the curve is (3/error)^(1/2)."""
    curve = [{"nfe": n, "error": 3.0 * n**-2.0} for n in (10, 20, 40, 80)]
    for error in (3.0 / 15**2, 3.0 / 33**2, 3.0 / 70**2):
        assert avk.nfe_at_error(curve, error) == pytest.approx((3.0 / error) ** 0.5, rel=1e-12)
    assert avk.nfe_at_error(curve, 1e-9) is None  # below our curve
    assert avk.nfe_at_error(curve, 1.0) == 10  # our cheapest run already does better


def test_controlled_end_reaches_below_the_t_min_floor_on_mixture2d():
    """data=mixture2d, sde=ddpm_linear, 2000 x_T, against the flow at σ̃ = 1e-5: with the
    defaults (t_min = 1e-3, t_floor = 1e-4) at tol 1e-6 the error falls below 5e-6, under the
    1.45e-5 floor of the step to t = 0 from t_min (measured: 186 evaluations, 2.7e-6), within
    200 evaluations."""
    mixture, sde, x_T, ref = avk.problem("mixture2d", 0)
    res = AdaptiveUniPC(rtol=1e-6, atol=1e-6)(sde, mixture.score_fn(sde), x_T)
    err = endpoint_error(res.x0, ref)
    assert err < 5e-6 and res.nfe <= 200, (err, res.nfe)
