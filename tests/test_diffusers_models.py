"""``model=diffusers``: saved diffusers models sampled by sde_gen's solvers equal diffusers' own
scheduler loops, state by state, on tiny random UNet2DModels the tests save themselves."""

from __future__ import annotations

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers_folders import (  # noqa: E402
    linspace_ancestral,
    save_model_folder,
    save_pipeline,
    tiny_unet,
)

from sde_gen.models.learned_variance import Direct, LinearRange  # noqa: E402
from sde_gen.models.network_time import DiscreteIndex, Sigma  # noqa: E402
from sde_gen.models.parametrisation import X0, Eps, Score, V  # noqa: E402
from sde_gen.networks.diffusers_folder import load_diffusers  # noqa: E402
from sde_gen.networks.diffusers_schedule import chain_betas  # noqa: E402
from sde_gen.sde import VESDE, DiscreteVPSDE  # noqa: E402
from sde_gen.solvers import DDIM, Ancestral, DPMSolver, UniPC  # noqa: E402
from sde_gen.solvers.grids import TrailingGrid, UniformGrid  # noqa: E402

F64 = torch.float64
PREDICTIONS = {"epsilon": Eps, "v_prediction": V, "sample": X0}


def _x_T(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _loaded(tmp_path, scheduler, out_channels: int = 3, clip_x0=None):
    """(sde_gen's score model of the saved folder, diffusers' own UNet), both float64."""
    unet = tiny_unet(out_channels)
    folder = save_pipeline(tmp_path / "pipe", unet, scheduler)
    return load_diffusers(str(folder), clip_x0=clip_x0).double(), unet.double()


def _their_states(scheduler, unet, x_T, steps: int, seed: int = 1, **step_kwargs):
    """diffusers' pipeline loop: x_T and the state after every ``scheduler.step``."""
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x, states = x_T.clone(), [x_T]
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = unet(x, k).sample
            if isinstance(scheduler, diffusers.DDPMScheduler):
                step_kwargs["generator"] = generator
            x = scheduler.step(out, k, x, **step_kwargs).prev_sample
            states.append(x)
    return states


def _our_states(solver, model, x_T, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        result = solver(model.sde, model, x_T, generator=generator, record=True)
    return list(result.trajectory)


def _assert_states_equal(ours, theirs, rtol: float = 1e-5):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        err = float((a - b.to(F64)).abs().max() / b.abs().max())
        assert err <= rtol, f"state {i}: relative error {err:.3g}"


STEPS = [10, 50]


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_ddpm_ancestral_equals_ddpm_scheduler(tmp_path, prediction, steps):
    """Ancestral (β̃) on T, T − 1/n, …, 1/n then 0 = DDPMScheduler(trailing), same noise."""
    sched = diffusers.DDPMScheduler(
        prediction_type=prediction, clip_sample=False, timestep_spacing="trailing"
    )
    model, unet = _loaded(tmp_path, sched)
    assert isinstance(model.param, PREDICTIONS[prediction])
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps)
    solver = Ancestral(steps, t_min=1 / steps, grid=UniformGrid(), variance="beta_tilde")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_ddim_equals_ddim_scheduler(tmp_path, prediction, steps):
    sched = diffusers.DDIMScheduler(
        prediction_type=prediction, clip_sample=False, timestep_spacing="trailing"
    )
    model, unet = _loaded(tmp_path, sched)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps, eta=0.0)
    solver = DDIM(steps, grid=TrailingGrid(), eta=0.0, final_step="zero")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_dpm_solver_2m_equals_dpm_multistep_scheduler(tmp_path, prediction, steps):
    sched = diffusers.DPMSolverMultistepScheduler(
        prediction_type=prediction, timestep_spacing="trailing", solver_order=2
    )
    model, unet = _loaded(tmp_path, sched)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps)
    solver = DPMSolver(steps, grid=TrailingGrid(), order=2, final_step="zero")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_unipc_equals_unipc_scheduler(tmp_path, prediction, steps):
    sched = diffusers.UniPCMultistepScheduler(
        prediction_type=prediction, timestep_spacing="trailing", solver_order=2, solver_type="bh2"
    )
    model, unet = _loaded(tmp_path, sched)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps)
    solver = UniPC(steps, grid=TrailingGrid(), order=2, variant="bh2", final_step="zero")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


def test_clip_x0_equals_clip_sample(tmp_path):
    """model.clip_x0=[-1, 1] is DDPMScheduler's default clip_sample=True; without it the samples
    differ (the random network's x̂0 leaves [−1, 1] near T)."""
    sched = diffusers.DDPMScheduler(clip_sample=True, timestep_spacing="trailing")
    unet = tiny_unet()
    folder = save_pipeline(tmp_path / "pipe", unet, sched)
    unet = unet.double()
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, 10)
    solver = Ancestral(10, t_min=0.1, grid=UniformGrid(), variance="beta_tilde")
    clipped = load_diffusers(str(folder), clip_x0=[-1, 1]).double()
    _assert_states_equal(_our_states(solver, clipped, x_T), theirs)
    free = _our_states(solver, load_diffusers(str(folder)).double(), x_T)
    assert float((free[-1] - theirs[-1]).abs().max()) > 1e-2


@pytest.mark.parametrize("steps", STEPS)
def test_learned_range_variance_equals_ddpm_scheduler(tmp_path, steps):
    """variance_type=learned_range: solver.variance=learned draws with diffusers' Σ_θ (their
    (v + 1)/2 is sde_gen's sigmoid, through the adapter's logit)."""
    sched = diffusers.DDPMScheduler(
        variance_type="learned_range", clip_sample=False, timestep_spacing="trailing"
    )
    model, unet = _loaded(tmp_path, sched, out_channels=6)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps)
    solver = Ancestral(steps, t_min=1 / steps, grid=UniformGrid(), variance="learned")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


def test_fixed_small_is_not_learned(tmp_path):
    """Sanity of the comparison: β (fixed_large) noise differs from β̃ (fixed_small)."""
    sched = diffusers.DDPMScheduler(clip_sample=False, timestep_spacing="trailing")
    model, unet = _loaded(tmp_path, sched)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, 10)
    ours = _our_states(Ancestral(10, t_min=0.1, grid=UniformGrid(), variance="beta"), model, x_T)
    assert float((ours[-1] - theirs[-1]).abs().max()) > 1e-3


@pytest.mark.parametrize(
    "options",
    [
        {"beta_schedule": "linear", "beta_start": 2e-4, "beta_end": 0.03},
        {"beta_schedule": "scaled_linear", "beta_start": 8.5e-4, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"trained_betas": torch.linspace(1e-3, 0.05, 1000).tolist()},
        {"beta_schedule": "scaled_linear", "rescale_betas_zero_snr": True},
        {"beta_schedule": "linear", "num_train_timesteps": 400},
    ],
)
def test_chain_betas_are_the_schedulers(options):
    """ᾱ of the chain built from a scheduler config equals the scheduler's alphas_cumprod (float32
    round-off), except ᾱ_N after zero-SNR rescaling, which is 2⁻²⁴ instead of 0."""
    sched = diffusers.DDPMScheduler(**options)
    betas = chain_betas(dict(sched.config, _class_name="DDPMScheduler"), "test")
    sde = DiscreteVPSDE(betas)
    n = len(betas)
    t = torch.arange(1, n + 1, dtype=F64) / n
    ours, theirs = sde.gamma(t) ** 2, sched.alphas_cumprod.to(F64)
    if options.get("rescale_betas_zero_snr"):
        assert float(theirs[-1]) == 0.0 and float(ours[-1]) == pytest.approx(2.0**-24, rel=1e-9)
        ours, theirs = ours[:-1], theirs[:-1]
    assert torch.allclose(ours, theirs, rtol=2e-5, atol=1e-7)


def test_network_time_is_the_timestep_and_node_k_plus_one(tmp_path):
    """ε̂(x, t = (k + 1)/N) = unet(x, k) at integer k; a fractional t gives timestep N t − 1."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=500)
    model, unet = _loaded(tmp_path, sched)
    assert isinstance(model.sde, DiscreteVPSDE) and model.sde.N == 500
    assert isinstance(model.time, DiscreteIndex) and model.time.offset == 1.0
    x = _x_T(3, batch=3)
    k = torch.tensor([0.0, 249.0, 499.0], dtype=F64)
    with torch.no_grad():
        assert torch.allclose(model.eps(x, (k + 1) / 500), unet(x, k).sample, rtol=0, atol=1e-12)
        frac = model.eps(x, torch.tensor([0.3013] * 3, dtype=F64))
        assert torch.allclose(frac, unet(x, torch.tensor([149.65] * 3, dtype=F64)).sample)


def test_single_model_folder_with_its_scheduler_config(tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_unet(), diffusers.DDIMScheduler())
    model = load_diffusers(str(folder))
    x = _x_T(batch=1).float()
    with torch.no_grad():
        assert torch.equal(model.eps(x, torch.tensor([0.5])), tiny_unet()(x, 499.0).sample)


def test_score_sde_ve_model(tmp_path):
    """ScoreSdeVeScheduler + Fourier UNet → VESDE(σ_min, σ_max), time σ, output the score."""
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.02, sigma_max=50.0)
    unet = tiny_unet(fourier=True)
    model = load_diffusers(str(save_pipeline(tmp_path / "ve", unet, sched))).double()
    unet = unet.double()
    assert isinstance(model.sde, VESDE)
    assert (model.sde.sigma_min, model.sde.sigma_max) == (0.02, 50.0)
    assert isinstance(model.param, Score) and isinstance(model.time, Sigma)
    x, t = _x_T(batch=2), torch.tensor([0.3, 0.9], dtype=F64)
    sigma = model.sde.sigma(t)
    with torch.no_grad():
        assert torch.allclose(model(x, t), unet(x, sigma).sample, rtol=1e-10, atol=0)
    assert math.isclose(float(model.sde.sigma(torch.tensor([1.0], dtype=F64))), 50.0, rel_tol=1e-6)


def _their_ve_states(sched, unet, x_T, steps: int, seed: int = 1):
    """ScoreSdeVePipeline's loop: at each σ_i a Langevin corrector, then the predictor; the state
    after every predictor step (the last one with its noise, as sde_gen's PC keeps it)."""
    sched.set_timesteps(steps)
    sched.set_sigmas(steps)
    generator = torch.Generator().manual_seed(seed)
    x, states = x_T.clone(), [x_T]
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            sigma = sched.sigmas[i] * torch.ones(x.shape[0])
            out = unet(x, sigma).sample
            x = sched.step_correct(out, x, generator=generator).prev_sample
            out = unet(x, sigma).sample
            x = sched.step_pred(out, t, x, generator=generator).prev_sample
            states.append(x)
    return states


@pytest.mark.parametrize("steps", [10, 50])
def test_score_sde_ve_pc_equals_the_predictor_corrector_loop(tmp_path, steps):
    """sde_gen's PC (Langevin corrector at snr 0.15, reverse-diffusion predictor) on the VE SDE,
    at the times where σ_t is diffusers' geometric σ_i (then t_min, σ ≈ 1e-6), with the same
    noise (float32, as diffusers' corrector draws it): every state equals ScoreSdeVeScheduler's
    to 1e-4 relative (5e-6 measured; snr = 0.16 instead of 0.15 moves them by 7e-2)."""
    from sde_gen.solvers import PredictorCorrector
    from sde_gen.solvers.fit_grid import FittedGrid

    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0, snr=0.15)
    unet = tiny_unet(fourier=True)
    model = load_diffusers(str(save_pipeline(tmp_path / "ve", unet, sched)))
    x_T = 50.0 * _x_T(2).float()  # float32: diffusers' corrector draws float32 noise
    theirs = _their_ve_states(sched, unet, x_T, steps)
    sde = model.sde
    sigmas = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), steps, dtype=F64)).flip(0)
    ratio = math.log(sde.sigma_max / sde.sigma_min)
    times = torch.log1p((sigmas / sde.sigma_min) ** 2) / (2 * ratio)
    knots = [sde.T, *times[1:].tolist(), 1e-9]
    solver = PredictorCorrector(
        steps, t_min=1e-9, grid=FittedGrid(knots), denoise_final=False, snr=0.15
    )
    ours = _our_states(solver, model, x_T)
    _assert_states_equal(ours, theirs, rtol=1e-4)


def test_learned_range_is_the_linear_fraction_without_a_clamp():
    """diffusers' learned_range log Σ = f log β + (1 − f) log β̃, f = (v + 1)/2 (DDPMScheduler's
    _get_variance) equals LinearRange's log Σ of the loaded folder's convention for v across
    [−1, 1], at 1 − 1e-7 and beyond (no clamp: 1.5 extrapolates as theirs does); v = ±1 give
    log β and log β̃ exactly, v = 0.9999999 stays 5e-8 (log β − log β̃) from log β (a clamp of f
    at 1 − 1e-6 would put it 1e-6 (log β − log β̃) away)."""
    sched = diffusers.DDPMScheduler(variance_type="learned_range")
    sched.set_timesteps(1000)
    grid = torch.linspace(-0.99, 0.99, 7, dtype=F64)
    ends = torch.tensor([-1.0, 1.0, 0.9999999, -0.9999999, 1.5], dtype=F64)
    v = torch.cat([grid, ends]).view(1, 1, 3, 4)
    convention = LinearRange()
    alpha_bar = sched.alphas_cumprod  # float32, as the scheduler computes β and β̃
    for k in (1, 10, 500, 999):
        theirs = sched._get_variance(k, predicted_variance=v).to(F64)
        beta = 1 - alpha_bar[k] / alpha_bar[k - 1]
        beta_tilde = beta * (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k])
        lb, lt = float(beta.log()), float(beta_tilde.log())
        ours = convention.log_variance(v, lb, lt)
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
        flat = ours.flatten()
        assert float(flat[7]) == lt and float(flat[8]) == lb
        gap = abs(float(flat[9]) - lb)
        assert gap == pytest.approx(0.5e-7 * (lb - lt), rel=1e-6)
        assert gap < 0.1 * 1e-6 * (lb - lt)


def _learned_variance_unet(variance_type: str, bias: float | None = None):
    """A tiny UNet2DModel with 2C outputs; for ``learned`` (v = Σ) the variance channels' bias is
    raised by 0.3 so that Σ = 0.3 ± 0.1 > 0; ``bias``: the variance channels are that constant."""
    unet = tiny_unet(6)
    with torch.no_grad():
        if variance_type == "learned":
            unet.conv_out.bias[3:] += 0.3
        if bias is not None:
            unet.conv_out.weight[3:] = 0.0
            unet.conv_out.bias[3:] = bias
    return unet


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("variance_type", ["learned_range", "learned"])
def test_learned_variance_equals_ddpm_scheduler(tmp_path, variance_type, steps):
    """variance_type learned_range (LinearRange) and learned (Direct: the output is Σ itself,
    whatever the stride): solver.variance=learned on diffusers' linspace times (10 and 50 strided
    steps) draws the same states as DDPMScheduler's loop with the same noise, each within 1e-5
    relative. (The full 1000-step chain, 16 s a run, is left out: there DDPMScheduler's float32
    schedule alone moves the states by up to 6.4e-5, as much for fixed_small as for these.)"""
    sched = diffusers.DDPMScheduler(
        variance_type=variance_type, clip_sample=False, timestep_spacing="linspace"
    )
    unet = _learned_variance_unet(variance_type)
    model = load_diffusers(str(save_pipeline(tmp_path / "pipe", unet, sched))).double()
    unet = unet.double()
    expected = {"learned_range": LinearRange, "learned": Direct}[variance_type]
    assert type(model.variance) is expected
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, steps)
    assert all(bool(torch.isfinite(x).all()) for x in theirs)
    _assert_states_equal(_our_states(linspace_ancestral(sched, steps), model, x_T), theirs)


@pytest.mark.parametrize("variance_type", ["learned_range", "learned"])
def test_learned_variance_on_the_whole_chain_with_a_float64_schedule(tmp_path, variance_type):
    """The whole N = 50 chain (every node, no stride) with DDPMScheduler's schedule recomputed in
    float64: every state equals diffusers' to 1e-10 (3.5e-13 measured on N = 1000; with its float32
    schedule the 1000-step chain differs by 6.4e-5, as much for fixed_small)."""
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=50,
        variance_type=variance_type,
        clip_sample=False,
        timestep_spacing="linspace",
    )
    unet = _learned_variance_unet(variance_type)
    model = load_diffusers(str(save_pipeline(tmp_path / "pipe", unet, sched))).double()
    sched.betas = model.sde.betas.clone()
    sched.alphas = 1 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    sched.one = torch.tensor(1.0, dtype=F64)
    x_T = _x_T()
    theirs = _their_states(sched, unet.double(), x_T, 50)
    _assert_states_equal(_our_states(linspace_ancestral(sched, 50), model, x_T), theirs, 1e-10)


@pytest.mark.parametrize(("v", "fixed"), [(1.0, "beta"), (-1.0, "beta_tilde")])
def test_learned_range_at_the_ends_is_exactly_beta_or_beta_tilde(tmp_path, v, fixed):
    """A learned_range network whose variance output is exactly v = 1 (−1) samples as the fixed
    σ² = β (β̃) of each strided step, to 1e-12 with the same noise (a logit clamped at 1e-6 moved
    them by ~1e-7), and both equal DDPMScheduler's loop."""
    sched = diffusers.DDPMScheduler(
        variance_type="learned_range", clip_sample=False, timestep_spacing="linspace"
    )
    unet = _learned_variance_unet("learned_range", bias=v)
    model = load_diffusers(str(save_pipeline(tmp_path / "pipe", unet, sched))).double()
    x_T = _x_T()
    learned = _our_states(linspace_ancestral(sched, 10), model, x_T)
    fixed_states = _our_states(linspace_ancestral(sched, 10, fixed), model, x_T)
    _assert_states_equal(learned, fixed_states, rtol=1e-12)
    _assert_states_equal(learned, _their_states(sched, unet.double(), x_T, 10))


@pytest.mark.parametrize("sigma", [-0.25, 0.0])
def test_direct_variance_at_or_below_zero_is_an_error_naming_it(tmp_path, sigma):
    """variance_type=learned whose network outputs Σ ≤ 0: a ValueError naming the value and the
    time of the step, not NaN samples."""
    sched = diffusers.DDPMScheduler(
        variance_type="learned", clip_sample=False, timestep_spacing="linspace"
    )
    unet = _learned_variance_unet("learned", bias=sigma)
    model = load_diffusers(str(save_pipeline(tmp_path / "pipe", unet, sched))).double()
    solver = linspace_ancestral(sched, 10)
    message = rf"at t=1: model\.variance=Direct: .*Σ = {sigma:g} is not > 0"
    with pytest.raises(ValueError, match=message):
        _our_states(solver, model, _x_T())


def test_clip_x0_ddim_equals_ddim_with_the_clipped_model_output(tmp_path):
    """With model.clip_x0=[-1, 1], sde_gen's DDIM is DDIMScheduler(clip_sample=True) stepped with
    use_clipped_model_output=True (ε recomputed from the clamped x̂0, as the score implies)."""
    sched = diffusers.DDIMScheduler(clip_sample=True, timestep_spacing="trailing")
    model, unet = _loaded(tmp_path, sched, clip_x0=[-1, 1])
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, 10, eta=0.0, use_clipped_model_output=True)
    solver = DDIM(10, grid=TrailingGrid(), eta=0.0, final_step="zero")
    _assert_states_equal(_our_states(solver, model, x_T), theirs)


def test_zero_terminal_snr_v_prediction_ddim(tmp_path):
    """A zero-terminal-SNR v-prediction model (rescale_betas_zero_snr, the models of Lin et al.)
    under DDIM equals DDIMScheduler to 1e-4 relative (1.4e-5 measured): the only gap is
    ᾱ_N = 2⁻²⁴ instead of 0 (γ_T = 2.4e-4 in x̂0 = γ x − σ v at T), above float round-off."""
    sched = diffusers.DDIMScheduler(
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        beta_schedule="scaled_linear",
        clip_sample=False,
        timestep_spacing="trailing",
    )
    model, unet = _loaded(tmp_path, sched)
    x_T = _x_T()
    theirs = _their_states(sched, unet, x_T, 10, eta=0.0)
    ours = _our_states(DDIM(10, grid=TrailingGrid(), eta=0.0, final_step="zero"), model, x_T)
    _assert_states_equal(ours, theirs, rtol=1e-4)
    assert float((ours[1] - theirs[1]).abs().max() / theirs[1].abs().max()) > 1e-6
