"""DPM-2 and DPM-2 ancestral in EDM variables (Karras et al. 2022; k-diffusion's sample_dpm_2):
the ancestral split, order 2 on a mixture's exact PF-ODE flow, and state-by-state agreement with
diffusers' KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler (same noise) on our grid."""

from __future__ import annotations

import math

import pytest
import torch
from orders import exact_flow, measured_order

from sde_gen.data import ring_mixture
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DPM2
from sde_gen.solvers.dpm2 import ancestral_split
from sde_gen.solvers.grids import KarrasGrid, TrailingGrid

F64 = torch.float64
T_MIN = 1e-2


def test_ancestral_split_is_the_posterior_noise():
    """η = 1: ρ_up² = ρ_s²(ρ_t² − ρ_s²)/ρ_t², the variance of q(x̃_s | x̃_t, x0) in EDM
    variables, and ρ_d² + ρ_up² = ρ_s²; η = 0 keeps ρ_d = ρ_s."""
    rho_t, rho_s = 3.0, 1.2
    down, up = ancestral_split(rho_t, rho_s, 1.0)
    assert up**2 == pytest.approx(rho_s**2 * (rho_t**2 - rho_s**2) / rho_t**2, rel=1e-14)
    assert down**2 + up**2 == pytest.approx(rho_s**2, rel=1e-14)
    assert ancestral_split(rho_t, rho_s, 0.0) == (rho_s, 0.0)


def test_convergence_order_two_on_the_mixture_flow():
    sde, mixture = VPSDE(), ring_mixture(num_modes=4, std=0.5)
    x_T, exact = exact_flow(mixture, sde, T_MIN)

    def solve(n: int) -> torch.Tensor:
        return DPM2(n, T_MIN, KarrasGrid(), final_step="t_min")(sde, mixture.score_fn(sde), x_T).x0

    measured, errs = measured_order(solve, exact, [32, 64, 128])
    assert abs(measured - 2) < 0.2, (measured, errs)


def _interleave(per_step: torch.Tensor) -> torch.Tensor:
    """diffusers' KDPM2 layout of a per-time array: a_0, a_1, a_1, …, a_{N−1}, a_{N−1}, a_N."""
    return torch.cat([per_step[:1], per_step[1:].repeat_interleave(2), per_step[-1:]])


def _peer_states(sched, sde, score, x_T, rho, generator):
    """diffusers' pipeline loop in float64 with ε exact at the σ the scheduler scales its input
    by (x_in = x̃/√(σ² + 1)); the state after each full step, as x = x̃/√(ρ² + 1)."""
    x, states = x_T * math.sqrt(float(rho[0]) ** 2 + 1), [x_T]
    kwargs = {"generator": generator} if "Ancestral" in type(sched).__name__ else {}
    for tau in sched.timesteps:
        x_in = sched.scale_model_input(x, tau)
        sigma = math.sqrt(max(float(x[0, 0] / x_in[0, 0]) ** 2 - 1, 0.0))
        t = sde.t_from_log_snr(torch.tensor([-2 * math.log(sigma)], dtype=F64)).expand(len(x))
        x = sched.step(sde.eps_from_score(x_in, t, score(x_in, t)), tau, x, **kwargs).prev_sample
        if sched.state_in_first_order:  # a step is complete
            states.append(x / math.sqrt(float(rho[len(states)]) ** 2 + 1))
    if not sched.state_in_first_order:  # the last step: Euler onto σ = 0, one call
        states.append(x)
    return states


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_matches_diffusers_kdpm2_on_the_same_grid(eta):
    """KDPM2 (η = 0) and KDPM2 ancestral (η = 1, the same N(0, I) draws): with diffusers' σ
    arrays replaced by ours in float64, every state agrees to 1e-12 relative; both end with an
    Euler step onto σ = 0 (2N − 1 evaluations)."""
    diffusers = pytest.importorskip("diffusers")
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    solver = DPM2(8, grid=TrailingGrid(), eta=eta)
    ours = solver(sde, score, x_T, torch.Generator().manual_seed(5), record=True)
    times = solver.time_grid(sde)
    rho = sde.sigma(times) / sde.gamma(times)
    cls = diffusers.KDPM2AncestralDiscreteScheduler if eta else diffusers.KDPM2DiscreteScheduler
    sched = cls(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing")
    sched.set_timesteps(8)
    if eta:
        split = [ancestral_split(float(a), float(b), 1.0) for a, b in zip(rho, rho[1:])]
        down = torch.tensor([d for d, _ in split] + [0.0], dtype=F64)
        up = torch.tensor([u for _, u in split] + [0.0], dtype=F64)
        interpol = (rho * down).sqrt()
        interpol[-2:] = 0.0  # the last step is Euler
        sched.sigmas_up, sched.sigmas_down = _interleave(up), _interleave(down)
    else:
        interpol = torch.cat([rho[:1], (rho[1:] * rho[:-1]).sqrt()])
    sched.sigmas, sched.sigmas_interpol = _interleave(rho), _interleave(interpol)
    theirs = _peer_states(sched, sde, score, x_T, rho, torch.Generator().manual_seed(5))
    assert ours.nfe == solver.expected_nfe() == 15 == len(sched.timesteps)
    assert len(theirs) == len(ours.trajectory)
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()
