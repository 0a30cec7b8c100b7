"""UniPC (Zhao et al. 2023) against closed forms: convergence orders p + 1 (UniC) and p (UniP
alone) on Gaussian data for VP, VE and sub-VP; UniP-2 with B(h) = 1 − e^{−h} is DPM-Solver++(2M);
its one-evaluation-a-step count; and, where diffusers is installed, its UniPCMultistepScheduler."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_solvers import T_MIN, gaussian, pf_ode_exact, prior, slope

from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DPMSolver, UniPC
from sde_gen.solvers.exponential import exact_weights, phi
from sde_gen.solvers.grids import LogSNRGrid, TrailingGrid

SDES = [VPSDE(), VESDE(), SubVPSDE()]


def make(order: int, variant: str, corrector: bool = True):
    """UniPC measured to t_min (the x̂0 jump to 0 has an error that does not shrink with h)."""
    return lambda n: UniPC(
        n,
        T_MIN,
        LogSNRGrid(),
        order=order,
        variant=variant,
        corrector=corrector,
        final_step="t_min",
    )


# (order p, variant, corrector, steps, below, above): declared order p + corrector
ORDER_CASES = [
    (1, "bh1", True, [16, 32, 64, 128], 0.2, 0.3),
    (1, "bh2", True, [16, 32, 64, 128], 0.2, 0.3),
    (2, "bh1", True, [32, 64, 128, 256], 0.3, 0.4),
    (2, "bh2", True, [32, 64, 128, 256], 0.3, 0.4),
    (3, "bh2", True, [64, 128, 256, 512], 0.5, 2.0),
    (1, "bh2", False, [16, 32, 64, 128], 0.15, 0.15),
    (2, "bh1", False, [32, 64, 128, 256], 0.2, 0.3),
]


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve", "subvp"])
@pytest.mark.parametrize(
    "p,variant,corrector,steps,below,above",
    ORDER_CASES,
    ids=[f"p{c[0]}_{c[1]}_{'unipc' if c[2] else 'unip'}" for c in ORDER_CASES],
)
def test_convergence_order(sde, p, variant, corrector, steps, below, above):
    """Measured slope within [q − below, q + above] of the declared order q = p + corrector."""
    declared = make(p, variant, corrector)(steps[0]).order
    assert declared == p + corrector
    order, errs = slope(sde, make(p, variant, corrector), steps)
    assert declared - below <= order <= declared + above, (order, errs)
    assert errs[-1] < 0.05


def test_unip2_bh2_is_dpm_solver_2m():
    sde = VPSDE()
    x_T = prior(sde)
    score = gaussian().score_fn(sde)
    for final_step in ("t_min", "zero"):
        a = UniPC(9, order=2, variant="bh2", corrector=False, final_step=final_step)
        b = DPMSolver(9, order=2, final_step=final_step)
        assert torch.allclose(a(sde, score, x_T).x0, b(sde, score, x_T).x0, atol=1e-13, rtol=0)


def test_the_corrector_helps_at_the_same_cost():
    """UniPC-2 (order 3) is > 2× closer than UniP-2 (order 2) at 32 evaluations on Gaussian data
    (at 10 it is not: there the last, uncorrected step dominates)."""
    sde = VPSDE()
    x_T = prior(sde)
    exact = pf_ode_exact(sde, x_T, T_MIN)
    errs = {}
    for corrector in (True, False):
        res = make(2, "bh2", corrector)(32)(sde, gaussian().score_fn(sde), x_T)
        assert res.nfe == 32
        errs[corrector] = (res.x0 - exact).abs().max().item()
    assert errs[True] < 0.5 * errs[False], errs


def test_weights_solve_the_order_conditions():
    """Σ_k w_k r_k^{j−1} = j! h φ_{j+1}(−h); one point: B(h)/2 (bh1 h/2, bh2 (1 − e^{−h})/2)."""
    r, h = [-0.7, -1.5, 1.0], 0.3
    w = exact_weights(r, h)
    for j in (1, 2, 3):
        lhs = sum(w_k * r_k ** (j - 1) for w_k, r_k in zip(w, r, strict=True))
        assert lhs == pytest.approx(math.factorial(j) * h * phi(j + 1, -h), rel=1e-12)
    assert UniPC(variant="bh1").weights([-1.0], h) == [pytest.approx(h / 2)]
    assert UniPC(variant="bh2").weights([-1.0], h) == [pytest.approx(-np.expm1(-h) / 2)]
    # φ_k by its series and its recursion agree where they meet
    assert phi(3, 0.4999999) == pytest.approx(phi(3, 0.5000001), rel=1e-6)
    assert phi(1, -2.0) == pytest.approx((1 - np.exp(-2.0)) / 2.0, rel=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_matches_diffusers_unipc(order, variant):
    """Every state of our UniPC on the trailing grid of the DDPM chain equals diffusers'
    UniPCMultistepScheduler (timestep_spacing="trailing", float32) to float32 round-off, and so
    does the final x̂0 for bh2 (diffusers' bh1 returns NaN at its σ = 0 last step)."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import DiffusersSampler  # noqa: PLC0415

    from sde_gen.data import ring_mixture  # noqa: PLC0415

    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = UniPC(8, grid=TrailingGrid(), order=order, variant=variant)(sde, score, x_T, record=True)
    sched = diffusers.UniPCMultistepScheduler(
        beta_schedule="linear", timestep_spacing="trailing", solver_order=order, solver_type=variant
    )
    theirs = DiffusersSampler(sched, 8)(sde, score, x_T, record=True)
    last = None if variant == "bh2" else -1
    for a, b in zip(ours.trajectory[1:last], theirs.trajectory[1:last], strict=True):
        assert (a - b.double()).abs().max() < 1e-5
