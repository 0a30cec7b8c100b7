"""``first_eval='prior_mean'`` (sde_gen.solvers.first_eval): the first evaluation, at T, is the
calibrated prior mean m_T of x̂0 instead of a model call."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sde_gen.data import GaussianMixture
from sde_gen.sde import VESDE, VPSDE
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers import (
    DDIM,
    DEIS,
    DPM2,
    LMS,
    PNDM,
    AnalyticDPM,
    Ancestral,
    DPMSolver,
    DPMSolverSinglestep,
    EDMStochastic,
    EulerMaruyama,
    Heun,
    PredictorCorrector,
    SASolver,
    SDEDPMSolver,
    UniPC,
)
from sde_gen.solvers.first_eval import PRIOR_MEAN_SAMPLES, calibrate_prior_mean
from sde_gen.solvers.grids import QuadraticGrid

F64 = torch.float64
MU = [[1.0, -0.5]]
S = 0.5

MAKERS = {
    "DDIM": lambda fe: DDIM(6, first_eval=fe),
    "Heun": lambda fe: Heun(4, first_eval=fe),
    "DPMSolver-3": lambda fe: DPMSolver(6, order=3, first_eval=fe),
    "DPMSolverSinglestep-3": lambda fe: DPMSolverSinglestep(6, order=3, first_eval=fe),
    "UniPC-bh1-3": lambda fe: UniPC(6, grid=QuadraticGrid(), order=3, variant="bh1", first_eval=fe),
    "DEIS-3": lambda fe: DEIS(6, order=3, first_eval=fe),
    "iPNDM": lambda fe: PNDM(6, order=4, start="euler", first_eval=fe),
    "PNDM": lambda fe: PNDM(6, order=4, start="runge_kutta", first_eval=fe),
    "LMS-3": lambda fe: LMS(6, order=3, first_eval=fe),
    "DPM2": lambda fe: DPM2(4, first_eval=fe),
    "EulerMaruyama": lambda fe: EulerMaruyama(6, first_eval=fe),
    "Ancestral": lambda fe: Ancestral(6, first_eval=fe),
    "PredictorCorrector": lambda fe: PredictorCorrector(4, first_eval=fe),
    "SASolver": lambda fe: SASolver(6, first_eval=fe),
    "SDEDPMSolver": lambda fe: SDEDPMSolver(6, first_eval=fe),
    "EDMStochastic": lambda fe: EDMStochastic(4, s_churn=0.0, first_eval=fe),
    "EDMStochastic-churn": lambda fe: EDMStochastic(4, s_churn=40.0, s_tmax=1e4, first_eval=fe),
}


def prior(sde, n: int = 16, seed: int = 3) -> torch.Tensor:
    return sde.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_on_a_point_mass_the_start_is_exact_and_saves_one_evaluation(name):
    """Data δ_μ: x̂0(x, t) = μ at every x and t, so m_T = μ with spread 0 and the prior_mean
    solver walks the model's own path (same noise) to round-off, one NFE cheaper, as declared."""
    sde = VPSDE()
    score = GaussianMixture([1.0], MU, 0.0).score_fn(sde)
    x_T, make = prior(sde), MAKERS[name]
    runs = {}
    for fe in ("model", "prior_mean"):
        solver = make(fe)
        runs[fe] = solver(sde, score, x_T, torch.Generator().manual_seed(1), record=True)
        assert runs[fe].nfe == solver.expected_nfe()
    assert runs["prior_mean"].nfe == runs["model"].nfe - 1
    assert (runs["prior_mean"].trajectory - runs["model"].trajectory).abs().max() < 1e-10


def test_prior_mean_of_gaussian_data_is_the_closed_form():
    """Data N(μ, s²I): x̂0(x, T) = μ + k (x − γ_T μ), k = γ_T s²/(γ_T² s² + σ_T²). Over the
    calibration's own prior draws x_i (seed 0), m_T = μ (1 − k γ_T) + k x̄ and the spread is
    k · RMS‖x_i − x̄‖, exactly; and m_T lies within √SNR_T-order of μ."""
    sde = VESDE(sigma_max=5.0)
    score = GaussianMixture([1.0], MU, S).score_fn(sde)
    like = torch.zeros(3, 2, dtype=F64)
    pm = calibrate_prior_mean(sde, score, like)
    tT = torch.tensor([sde.T], dtype=F64)
    gamma, sigma = float(sde.gamma(tT)[0]), float(sde.sigma(tT)[0])
    k = gamma * S**2 / (gamma**2 * S**2 + sigma**2)
    g = torch.Generator().manual_seed(0)
    x = sde.prior_sample((PRIOR_MEAN_SAMPLES, 2), g, dtype=F64)
    mu = torch.tensor(MU[0], dtype=F64)
    expected = mu * (1 - k * gamma) + k * x.mean(0)
    assert torch.allclose(pm.x0, expected, atol=1e-12, rtol=0)
    spread = k * float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())
    assert pm.spread == pytest.approx(spread, rel=1e-10)
    assert pm.samples == PRIOR_MEAN_SAMPLES and pm.at == (sde.T, gamma, sigma)
    assert float((pm.x0 - mu).norm()) < 3 * k * math.sqrt(2) * sigma / 16 + k * gamma


def test_the_start_error_is_first_order_in_the_first_step():
    """Gaussian data: prior_mean and model differ only through x̂0 at T, which enters the first
    step with weight γ_{t₁}(1 − e^{−h₁}) = O(h₁); doubling the steps halves their end-point gap
    (log-log slope 1), so the solver still converges."""
    sde = VPSDE()
    score = GaussianMixture([1.0], MU, S).score_fn(sde)
    x_T = prior(sde, 64)
    gaps = []
    steps = [40, 80, 160, 320]
    for n in steps:
        a, b = (
            DPMSolver(n, order=2, first_eval=fe)(sde, score, x_T).x0
            for fe in ("model", "prior_mean")
        )
        gaps.append(float((a - b).abs().max()))
    order = -np.polyfit(np.log(steps), np.log(gaps), 1)[0]
    assert 0.85 < order < 1.15, (order, gaps)
    assert gaps[0] < 1e-3  # small by √SNR_T = 0.0067 on the VP SDE


def test_the_calibration_is_made_once_per_score_and_anew_for_another_sde():
    """The m_T of one score function object is reused across calls (no more calls to it than
    the sampling steps); another SDE (another q_T) is calibrated again."""
    mixture = GaussianMixture([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.5]], 0.3)
    chunks = PRIOR_MEAN_SAMPLES // 64
    for sde in (VPSDE(), VESDE(sigma_max=5.0)):
        exact = mixture.score_fn(sde)
        calls = []

        def score(x, t, exact=exact, calls=calls):
            calls.append(len(x))
            return exact(x, t)

        solver = UniPC(5, first_eval="prior_mean")
        solver(sde, score, prior(sde))
        assert calls == [64] * chunks + [16] * 4
        solver(sde, score, prior(sde, seed=4))
        assert calls == [64] * chunks + [16] * 8


def test_a_first_call_at_another_time_is_refused_naming_both_times():
    sde = VPSDE()
    score = ScoreFn(GaussianMixture([1.0], MU, S).score_fn(sde), sde)
    score.start_from(sde.T, torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"for t=1, but the first score call is at t=0\.5"):
        score(prior(sde), 0.5)


def test_solvers_that_cannot_take_the_start_say_so():
    with pytest.raises(ValueError, match="first_eval='prior_mean' needs the step loop"):
        AnalyticDPM(10, first_eval="prior_mean")
    with pytest.raises(ValueError, match="first_eval"):
        DDIM(10, first_eval="prior")
    with pytest.raises(ValueError, match="variance='learned' reads the model's variance output"):
        Ancestral(10, variance="learned", first_eval="prior_mean")
    with pytest.raises(ValueError, match="not a learned variance's output"):
        sde = VPSDE()
        score = ScoreFn(GaussianMixture([1.0], MU, S).score_fn(sde), sde)
        score.start_from(sde.T, torch.zeros(2, dtype=F64))
        score.eps_and_extra(prior(sde), sde.T)


class PointMass(torch.nn.Module):
    """The exact score of δ_μ under a linear SDE, with μ a parameter: (γ_t μ − x)/σ_t²."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde
        self.mu = torch.nn.Parameter(torch.tensor(MU[0], dtype=F64))

    def forward(self, x, t):
        gamma, sigma = (c.to(x.dtype)[:, None] for c in (self.sde.gamma(t), self.sde.sigma(t)))
        return (gamma * self.mu - x) / sigma**2


def test_a_module_updated_in_place_is_calibrated_again():
    """A training step or EMA update changes a module's weights in place, not its identity: the
    solver notices (its fingerprint of the weights) and estimates m_T anew, so the start stays
    exact on the moved point mass instead of keeping the old μ."""
    sde = VPSDE()
    model = PointMass(sde)
    solver = DDIM(6, first_eval="prior_mean")
    x_T = prior(sde)
    with torch.no_grad():
        first = solver(sde, model, x_T).x0
        model.mu.add_(1.0)
        moved = solver(sde, model, x_T, record=True).trajectory
        exact = DDIM(6)(sde, model, x_T, record=True).trajectory
    assert torch.allclose(first, torch.tensor(MU, dtype=F64).expand_as(first), atol=1e-8)
    assert (moved - exact).abs().max() < 1e-10
    assert solver._prior_means._entry[2].x0.tolist() == pytest.approx([2.0, 0.5], abs=1e-10)
