"""SA-Solver (Xue et al. 2023): exact exponential Lagrange weights, its τ = 0 and τ = 1 first
orders (DDIM, SDE-DPM-Solver++ 1), convergence order of the τ = 0 predictor–corrector on a
mixture's exact PF-ODE flow, and state-by-state agreement with diffusers' SASolverScheduler
under the same noise on the same grid."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from sde_gen.data import ring_mixture
from sde_gen.metrics.mixtures import mixture_flow
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DDIM, SASolver, SDEDPMSolver
from sde_gen.solvers.grids import LogSNRGrid
from sde_gen.solvers.sa_solver import sa_weights

F64 = torch.float64
T_MIN = 1e-2
MIXTURE = ring_mixture(num_modes=4, std=0.5)


@pytest.mark.parametrize("a", [1.0, 2.0, 1.5])
def test_weights_are_the_exponentially_weighted_lagrange_integrals(a):
    """b_j = ∫_{λ_t}^{λ_s} a e^{−a(λ_s − λ)} ℓ_j(λ) dλ by quadrature, for 1–3 nodes."""
    lams, lam_t, lam_s = [0.4, 0.1, -0.3], 0.4, 0.9

    def basis(j, k, lam):
        return math.prod((lam - lams[i]) / (lams[j] - lams[i]) for i in range(k) if i != j)

    for k in (1, 2, 3):
        got = sa_weights(lams[:k], lam_t, lam_s, a, crude=False)
        for j in range(k):
            f = lambda lam, j=j, k=k: a * math.exp(-a * (lam_s - lam)) * basis(j, k, lam)  # noqa: E731
            assert got[j] == pytest.approx(quad(f, lam_t, lam_s)[0], rel=1e-10, abs=1e-13)
    crude = sa_weights(lams[:2], lam_t, lam_s, a, crude=True)  # linear moment a h²/2 (÷ h)
    h = lam_s - lam_t
    assert sum(crude) == pytest.approx(-math.expm1(-a * h), rel=1e-12)
    assert crude[1] * (lams[1] - lam_t) / h == pytest.approx(a * h / 2, rel=1e-12)


def _run(solver, sde=None, seed=1):
    sde = sde or VPSDE()
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=F64)
    return solver(sde, MIXTURE.score_fn(sde), x_T, torch.Generator().manual_seed(seed)).x0


def test_first_orders_are_ddim_and_sde_dpm_solver():
    """τ = 0, p = 1, no corrector: DDIM; τ = 1 on all of [0, 1]: SDE-DPM-Solver++(1)."""
    opts = {"predictor_order": 1, "corrector_order": 0, "final_step": "t_min"}
    ddim = DDIM(7, T_MIN, LogSNRGrid(), final_step="t_min")
    assert torch.allclose(_run(SASolver(7, T_MIN, tau=0.0, **opts)), _run(ddim), atol=1e-12)
    sde_dpm = SDEDPMSolver(7, T_MIN, order=1, final_step="t_min")
    sa = SASolver(7, T_MIN, tau=1.0, tau_from=0.0, tau_to=1.0, **opts)
    assert torch.allclose(_run(sa), _run(sde_dpm), atol=1e-12)


@pytest.mark.parametrize("p,c,steps", [(2, 2, [32, 64, 128]), (3, 3, [32, 64, 128])])
def test_order_of_the_deterministic_predictor_corrector(p, c, steps):
    """τ = 0: the measured order on the mixture flow is the declared min(c, p + 1) within 0.3."""
    sde = VPSDE()
    x_T = sde.prior_sample((8, 2), torch.Generator().manual_seed(0), dtype=F64)
    exact = mixture_flow(MIXTURE, sde, x_T, T_MIN, rtol=1e-12, atol=1e-12)[0]
    errs = []
    for n in steps:
        solver = SASolver(
            n,
            T_MIN,
            None,
            predictor_order=p,
            corrector_order=c,
            tau=0.0,
            lower_order_final=False,
            final_step="t_min",
        )
        errs.append((solver(sde, MIXTURE.score_fn(sde), x_T).x0 - exact).abs().max().item())
    measured = -float(np.polyfit(np.log(steps), np.log(errs), 1)[0])
    assert abs(measured - solver.order) < 0.3, (measured, errs)


@pytest.mark.parametrize("p,c", [(1, 1), (2, 2), (3, 3), (2, 1)])
def test_matches_diffusers_sa_solver_under_the_same_noise(p, c):
    """diffusers' SASolverScheduler with our τ(t) and σ in float64: every state equals ours to
    1e-10 relative (τ = 1 inside [0.2, 0.8], 0 outside; both draw one z a step)."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import scheduler_on_grid  # noqa: PLC0415

    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    solver = SASolver(8, predictor_order=p, corrector_order=c, final_step="t_min")
    ours = solver(sde, score, x_T, torch.Generator().manual_seed(3), record=True)
    times = solver.time_grid(sde)
    sched = diffusers.SASolverScheduler(
        beta_schedule="linear", predictor_order=p, corrector_order=c
    )
    sched.set_timesteps(8)
    t_of = dict(zip(sched.timesteps.tolist(), times.tolist(), strict=False))
    sched.tau_func = lambda k: solver.tau_at(t_of[float(k)])
    theirs = scheduler_on_grid(
        sched, sde, score, x_T, times, generator=torch.Generator().manual_seed(3)
    )
    assert 0 < sum(solver.tau_at(t) for t in times.tolist()) < 8  # τ switches on the grid
    assert ours.nfe == 8 == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
