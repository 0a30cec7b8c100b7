"""The diffusers adapter's time mapping: train step k ↔ t = (k+1)/N, fractional τ ↔ log-SNR."""

import sys
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

diffusers = pytest.importorskip("diffusers")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

from diffusers_peers import DiffusersSampler, ExactEps  # noqa: E402

from sde_gen.data import ring_mixture  # noqa: E402
from sde_gen.sde import VPSDE, DiscreteVPSDE  # noqa: E402
from sde_gen.sde.ddpm import linear_betas  # noqa: E402
from sde_gen.solvers import LogSNRGrid  # noqa: E402


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


@pytest.fixture(scope="module")
def ring_on_chain():
    """The ring's exact score on sde=ddpm_linear (the peers' chain) and 200 fixed x_T."""
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    x_T = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return sde, ring_mixture().score_fn(sde), x_T


def run_peer(name: str, steps: int, sde, score, x_T):
    """diffusers' sampler ``experiments/conf/solver/diffusers_<name>.yaml`` at ``steps``: its
    result and its scheduler (a fresh instance, for ``peer_times``)."""
    node = OmegaConf.load(EXPERIMENTS / "conf" / "solver" / f"diffusers_{name}.yaml")
    node.steps = steps
    return hydra.utils.instantiate(node)(sde, score, x_T), hydra.utils.instantiate(node.scheduler)


@pytest.mark.parametrize(
    "peer,steps",
    [("dpm_2m_trailing", 10), ("dpm_2m_lu", 10), ("dpm_2m_lu", 50), ("dpm_2m_karras", 10)],
)
def test_our_dpm_solver_2m_on_the_peers_grid_is_the_peer(ring_on_chain, peer, steps):
    """``peer_grid``: our DPM-Solver++(2M) stepping on a scheduler's own noise levels ends where
    diffusers' DPM-Solver++(2M) ends, to its float32 schedule's round-off (5e-6), and spends the
    same evaluations; so a gap left between the two on that grid is the update formula's."""
    from peer_grid import peer_times

    from sde_gen.solvers import DPMSolver, FittedGrid

    sde, score, x_T = ring_on_chain
    theirs, scheduler = run_peer(peer, steps, sde, score, x_T)
    times = peer_times(scheduler, steps, sde)
    assert times[0] == sde.T and len(times) == steps + 1
    ours = DPMSolver(steps=steps, order=2, grid=FittedGrid(times.tolist()))(sde, score, x_T)
    assert ours.nfe == theirs.nfe == steps
    assert (ours.x0 - theirs.x0).abs().max() < 5e-6
    moved = DPMSolver(steps=steps, order=2, grid=LogSNRGrid())(sde, score, x_T)
    assert (moved.x0 - theirs.x0).abs().max() > 100 * (ours.x0 - theirs.x0).abs().max()


def test_our_3m_on_the_peers_grid_differs_by_the_third_order_weight(ring_on_chain):
    """On the same grid DPM-Solver++(3M) is not diffusers': diffusers weights the second
    difference by φ₃, ours by the exact 2φ₃ (docs/theory.md), and the end points differ by more than
    100× the 2M round-off."""
    from peer_grid import peer_times

    from sde_gen.solvers import DPMSolver, FittedGrid

    sde, score, x_T = ring_on_chain
    theirs, scheduler = run_peer("dpm_3m_trailing", 10, sde, score, x_T)
    times = peer_times(scheduler, 10, sde)
    ours = DPMSolver(steps=10, order=3, grid=FittedGrid(times.tolist()))(sde, score, x_T)
    assert (ours.x0 - theirs.x0).abs().max() > 5e-4


@pytest.mark.parametrize(
    "config,steps,says",
    [
        ("conf/solver/diffusers_ddim.yaml", 10, "starts at t=0.901"),
        ("../sde_gen/conf/solver/dpm_solver.yaml", 10, "has no 'scheduler' node"),
        ("conf/solver/diffusers_dpm_3m_lu.yaml", 0, "--steps 0 must be >= 1"),
    ],
    ids=["ddim_leading", "not_a_peer", "no_steps"],
)
def test_peer_grid_refuses_what_is_no_grid_of_ours(tmp_path, capsys, config, steps, says):
    """DDIM's leading spacing starts at t = 0.901, and no grid of ours (which starts at T) is it;
    sde_gen's own solver config has no scheduler; zero steps are no grid. Each: one line naming
    the file, exit 2, nothing written."""
    from peer_grid import main

    out = tmp_path / "g.yaml"
    assert main([str(EXPERIMENTS / config), "--steps", str(steps), "--out", str(out)]) == 2
    assert says in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize(
    "peer,grid", [("dpm_2m_karras", "karras"), ("dpm_2m_lu", "logsnr"), ("unipc_karras", "karras")]
)
def test_zero_from_t_min_on_our_karras_and_logsnr_grids_is_the_peers_schedule(
    ring_on_chain, peer, grid, steps
):
    """diffusers' Karras and Lu-λ schedules put their N noise levels on T … t_min and jump from
    t_min to 0: our KarrasGrid / LogSNRGrid with final_step='zero_from_t_min' are those levels,
    and our 2M / UniPC-2 end where diffusers' do, to its float32 levels' round-off (1e-4), where
    final_step='zero' (levels one step further apart, last evaluation one step above t_min) ends
    more than 100× further off."""
    from sde_gen.solvers import DPMSolver, KarrasGrid, UniPC

    sde, score, x_T = ring_on_chain
    theirs = run_peer(peer, steps, sde, score, x_T)[0].x0
    make = UniPC if peer.startswith("unipc") else DPMSolver
    g = KarrasGrid() if grid == "karras" else LogSNRGrid()
    ours = make(steps=steps, order=2, grid=g, final_step="zero_from_t_min")(sde, score, x_T)
    shifted = make(steps=steps, order=2, grid=g, final_step="zero")(sde, score, x_T)
    assert ours.nfe == steps
    gap = float((ours.x0 - theirs).abs().max())
    assert gap < 1e-4 and float((shifted.x0 - theirs).abs().max()) > 100 * gap
