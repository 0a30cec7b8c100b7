"""Coordinates of the PF-ODE: each is the same ODE as dx/dt = f x − ½ g² ∇log q_t, checked
against the closed-form flow of Gaussian data, with maps that invert each other and the
log-Jacobian their change of variables has."""

import math

import pytest
import torch

from sde_gen.data import GaussianMixture
from sde_gen.sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from sde_gen.sde.coordinates import AngleCoordinates, ScaledCoordinates, TimeCoordinates
from sde_gen.sde.ddpm import CosineSchedule, LinearSchedule
from sde_gen.solvers import PFODE, ScipyODE

F64 = torch.float64
MU = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
S = torch.tensor([0.3, 0.1, 1.0], dtype=F64)
SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "ddpm_linear": DiscreteVPSDE(LinearSchedule().betas),
    "ddpm_cosine": DiscreteVPSDE(CosineSchedule().betas),
}
COORDS = [TimeCoordinates(), ScaledCoordinates(), AngleCoordinates()]


def _at(sde: SDE, t: float) -> tuple[float, float]:
    c = sde.coefficients(torch.tensor([t], dtype=F64))
    return float(c.gamma[0]), float(c.sigma[0])


def flow(sde: SDE, w: torch.Tensor, t: float) -> torch.Tensor:
    """The PF-ODE path of N(μ, diag s²) data: x_t = γ_t μ + √(γ_t² s² + σ_t²) w, w fixed."""
    gamma, sigma = _at(sde, t)
    return gamma * MU + torch.sqrt(gamma**2 * S**2 + sigma**2) * w


@pytest.mark.parametrize("sde", SDES.values(), ids=SDES.keys())
@pytest.mark.parametrize("coords", COORDS, ids=repr)
def test_maps_invert_and_log_jacobian_is_the_state_scale(sde, coords):
    """t(u(t)) = t, to_x(to_state(x)) = x, and log_jacobian = log|∂y/∂x| of the linear map."""
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    for t in (1e-5, 3e-3, 0.0505, 0.4, 0.9, sde.T):
        u = float(coords.u_of_t(sde, torch.tensor([t], dtype=F64))[0])
        assert coords.t_of_u(sde, u) == pytest.approx(t, rel=1e-9, abs=1e-12)
        assert torch.allclose(coords.to_x(sde, coords.to_state(sde, x, u), u), x, rtol=1e-12)
        slope = float(coords.to_state(sde, torch.ones(1, dtype=F64), u)[0])
        assert coords.log_jacobian(sde, u) == pytest.approx(math.log(slope), abs=1e-12)
    bounds = coords.bounds(sde, 1e-5)
    assert bounds == pytest.approx([float(coords.u_of_t(sde, torch.tensor([v], dtype=F64))[0])
                                    for v in (sde.T, 1e-5)])  # fmt: skip


@pytest.mark.parametrize("sde", SDES.values(), ids=SDES.keys())
@pytest.mark.parametrize("coords", COORDS, ids=repr)
def test_rhs_is_the_derivative_of_the_exact_flow(sde, coords):
    """rhs(y(u), u) = dy/du along the closed-form path (central differences, h = 1e-5, whose
    round-off is ~1e-11 |y|): every coordinate system is the PF-ODE, whatever its variable."""
    w = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    score = GaussianMixture([1.0], MU[None], S[None]).score_fn(sde)

    def counted(x: torch.Tensor, t: float) -> torch.Tensor:
        return score(x, torch.full((x.shape[0],), t, dtype=F64))

    def state(u: float) -> torch.Tensor:
        return coords.to_state(sde, flow(sde, w, coords.t_of_u(sde, u)), u)

    for t in (0.0105, 0.2005, 0.7005):  # off the nodes of the DDPM chains, where β jumps
        u, h = float(coords.u_of_t(sde, torch.tensor([t], dtype=F64))[0]), 1e-5
        numeric = (state(u + h) - state(u - h)) / (2 * h)
        y = state(u)
        rhs = coords.rhs(sde, counted, y, u)
        assert torch.allclose(rhs, numeric, rtol=1e-5, atol=1e-9 * y.abs().max())


def test_angle_state_is_the_variance_preserving_one():
    """z = x for the VP SDE (log-Jacobian 0); for VE z = x/√(1 + σ²) and φ = arctan σ."""
    vp, ve, x = VPSDE(), VESDE(), torch.ones(1, 3, dtype=F64)
    angle = AngleCoordinates()
    for t in (1e-3, 0.5, 1.0):
        u = float(angle.u_of_t(vp, torch.tensor([t], dtype=F64))[0])
        assert torch.allclose(angle.to_state(vp, x, u), x, rtol=1e-12)
        assert abs(angle.log_jacobian(vp, u)) < 1e-12
        sigma = _at(ve, t)[1]
        phi = float(angle.u_of_t(ve, torch.tensor([t], dtype=F64))[0])
        assert phi == pytest.approx(math.atan(sigma), rel=1e-12)
        assert torch.allclose(angle.to_state(ve, x, phi), x / math.sqrt(1 + sigma**2), rtol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ddpm_linear"])
def test_pf_ode_sampler_in_angle_coordinates_matches_closed_form(name):
    """The sampler takes the angle coordinates too: the closed-form end point, and the recorded
    path (dense output through u_of_t) at the requested times."""
    sde = SDES[name]
    x_T = sde.prior_sample((4, 3), torch.Generator().manual_seed(2), dtype=F64)
    gamma_T, sigma_T = _at(sde, sde.T)
    w = (x_T - gamma_T * MU) / torch.sqrt(gamma_T**2 * S**2 + sigma_T**2)
    score = GaussianMixture([1.0], MU[None], S[None]).score_fn(sde)
    solver = PFODE(ScipyODE("DOP853", 1e-10, 1e-10, AngleCoordinates()), 1e-3, record_points=5)
    res = solver(sde, score, x_T, record=True)
    assert (res.x0 - flow(sde, w, 1e-3)).abs().max() < 1e-6
    for t, x in zip(res.times.tolist()[1:-1], res.trajectory[1:-1], strict=True):
        assert (x - flow(sde, w, t)).abs().max() < 1e-5
