"""Analytic-DPM's optimal trajectory: the dynamic programme against brute force, the hop cost
against the closed-form step KL of Gaussian data, and the errors of a misused grid."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sde_gen.data import GaussianMixture
from sde_gen.sde import VESDE, VPSDE
from sde_gen.solvers import DDIM, AnalyticDPM, Ancestral, OptimalTrajectory
from sde_gen.solvers.calibration import Calibration, CalibrationKey
from sde_gen.solvers.optimal_trajectory import cheapest_path, hop_costs

F64 = torch.float64
MU = torch.tensor([[0.7, -0.2]], dtype=F64)
S = 0.4
GAUSS = GaussianMixture([1.0], MU, S)


def exact_ms_eps(sde, t):
    """Γ_t of N(μ, s² I): σ_t²/(γ_t² s² + σ_t²)."""
    return sde.sigma(t) ** 2 / (sde.gamma(t) ** 2 * S**2 + sde.sigma(t) ** 2)


def calibrated(solver: AnalyticDPM, sde) -> AnalyticDPM:
    """``solver`` holding the exact Γ_t at every candidate (no Monte Carlo)."""
    times = solver.noisy_times(sde)
    key = CalibrationKey.of(sde, times, None, solver.mc_samples, solver.mc_seed, F64)
    values = tuple(exact_ms_eps(sde, times).tolist())
    solver.calibration = Calibration(key, values, (0.0,) * len(times), 0, 0.0)
    return solver


@pytest.mark.parametrize("hops", [1, 2, 3, 5, 7])
def test_cheapest_path_is_the_brute_force_minimum(hops):
    """Random costs on 8 nodes: the programme's path is a path 0 → 7 of ``hops`` hops whose cost
    equals the minimum over all C(6, hops − 1) such paths."""
    g = torch.Generator().manual_seed(hops)
    m = 8
    cost = torch.rand((m, m), generator=g, dtype=F64).triu(1)
    cost[torch.ones(m, m).tril().bool()] = math.inf
    path = cheapest_path(cost, hops)

    def total(p):
        return sum(float(cost[a, b]) for a, b in zip(p, p[1:], strict=False))

    brute = min(
        total([0, *mid, m - 1]) for mid in itertools.combinations(range(1, m - 1), hops - 1)
    )
    assert path[0] == 0 and path[-1] == m - 1 and len(path) == hops + 1
    assert total(path) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ValueError, match="8 noisy steps need between 1 and 7"):
        cheapest_path(cost, 8)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_hop_cost_is_the_step_kl_with_the_optimal_variance(sde):
    """On N(μ, s² I) with the exact Γ_t: J(t, s) = log(σ*²/β̃) equals 2/d times the expected
    KL(q(x_s | x_t, x0) ‖ N(μ̃(x_t, x̂0), σ*² I)) = d/2 ((β̃ + D)/σ*² − 1 + log(σ*²/β̃)), with
    D = b² Var(x0 | x_t) = b² s² σ_t²/(γ_t² s² + σ_t²), for every hop between 9 candidates."""
    solver = calibrated(AnalyticDPM(steps=4, grid=OptimalTrajectory(candidates=8)), sde)
    times = solver.grid.candidate_times(sde, solver.t_min)
    ms = solver.clipped_ms_eps(sde, times[:-1])
    cost = hop_costs(sde, times, lambda i, t, s: solver.variances(sde, t, s, ms[i]))
    i, j = torch.triu_indices(9, 9, offset=1)
    t, s = times[i], times[j]
    _, b, beta_tilde = sde.posterior(s, t)
    var_x0 = S**2 * sde.sigma(t) ** 2 / (sde.gamma(t) ** 2 * S**2 + sde.sigma(t) ** 2)
    opt = beta_tilde + b**2 * var_x0  # the KL minimiser for this mean
    kl = ((beta_tilde + b**2 * var_x0) / opt - 1 + torch.log(opt / beta_tilde)) / 2 * 2
    assert torch.allclose(cost[i, j], kl, rtol=1e-9, atol=1e-12)
    assert torch.isinf(cost[j, i]).all() and torch.isinf(cost.diagonal()).all()


def test_the_trajectory_is_the_cheapest_path_through_the_candidates():
    """Exact Γ_t, 6 steps over 40 candidates: the grid's 5 noisy hops are candidate times from
    T to t_min, end at 0, and their summed J equals the programme's minimum. On Gaussian data
    that minimum is every path's total (to 1e-10): the reverse steps with σ*² are exact there,
    the bound is tight, and its other terms do not depend on the path."""
    sde = VPSDE()
    solver = calibrated(AnalyticDPM(steps=6, grid=OptimalTrajectory(candidates=40)), sde)
    times = solver.time_grid(sde)
    candidates = solver.grid.candidate_times(sde, solver.t_min)
    assert times[0] == sde.T and times[-2] == solver.t_min and times[-1] == 0 and len(times) == 7
    index = [int((candidates == t).nonzero()) for t in times[:-1]]
    ms = solver.clipped_ms_eps(sde, candidates[:-1])
    cost = hop_costs(sde, candidates, lambda i, t, s: solver.variances(sde, t, s, ms[i]))

    def total(p):
        return sum(float(cost[a, b]) for a, b in zip(p, p[1:], strict=False))

    assert total(index) == pytest.approx(total(cheapest_path(cost, 5)), rel=1e-12)
    for path in ([0, 8, 16, 24, 32, 40], [0, 1, 2, 3, 4, 40], [0, 3, 11, 30, 39, 40]):
        assert total(path) == pytest.approx(total(index), rel=1e-10)


def test_a_trajectory_needs_analytic_dpm_and_its_calibration():
    sde = VPSDE()
    x_T = sde.prior_sample((4, 2), torch.Generator().manual_seed(0), dtype=F64)
    for other in (DDIM(steps=5, grid=OptimalTrajectory()), Ancestral(grid=OptimalTrajectory())):
        with pytest.raises(ValueError, match="use it with solver=analytic_dpm"):
            other(sde, GAUSS.score_fn(sde), x_T)
    with pytest.raises(ValueError, match="needs denoise_final=true"):
        AnalyticDPM(denoise_final=False)
    with pytest.raises(ValueError, match="candidates=1 must be an integer >= 2"):
        OptimalTrajectory(candidates=1)
    with pytest.raises(ValueError, match=r"call solver.calibrate\(sde, score_fn, data\)"):
        AnalyticDPM(steps=5).time_grid(sde)
    too_many = calibrated(AnalyticDPM(steps=12, grid=OptimalTrajectory(candidates=10)), sde)
    with pytest.raises(ValueError, match=r"steps=12 needs solver.grid.candidates >= 11"):
        too_many.time_grid(sde)
    with pytest.raises(ValueError, match="estimator='mean' is not one of"):
        AnalyticDPM(estimator="mean")


def test_one_calibration_serves_every_step_count():
    """The candidates do not depend on ``steps``: after one calibration (200 times × 2 batches)
    the solver samples at 5 and at 10 steps with no further evaluation, NFE = steps."""
    sde = VPSDE()
    calls = []

    def score(x, t):
        calls.append(len(x))
        return GAUSS.score_fn(sde)(x, t)

    solver, data = AnalyticDPM(steps=5, mc_samples=2000, mc_batch=1000), GAUSS.sample64
    found = solver.calibrate(sde, score, data)
    assert found.nfe == len(calls) == 400
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    for steps in (5, 10):
        solver.steps = steps
        assert solver.calibrate(sde, score, data).origin == "memory"
        assert solver(sde, score, x_T).nfe == steps and len(solver.time_grid(sde)) == steps + 1
    assert len(calls) == 400 + 5 + 10
