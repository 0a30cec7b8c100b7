"""Hugging Face diffusers schedulers driven by an exact ε, with the solver contract of sde_gen.

The peers run on diffusers' own discrete chain (β linear 1e-4 → 0.02, 1000 train steps), which is
our ``sde=ddpm_linear`` (``DiscreteVPSDE``). Time mapping: diffusers' 0-based train timestep k has
``alphas_cumprod[k] = Π_{j≤k}(1 − β_j) = ᾱ_{k+1}``, which ``DiscreteVPSDE`` reaches at t = (k+1)/N.
Schedulers that use fractional timesteps τ (Euler, Heun on ``linspace`` spacing) interpolate
σ_EDM(τ) = √((1−ᾱ)/ᾱ) linearly in τ; we map every τ through that same interpolation to its
log-SNR λ = −2 log σ_EDM(τ) and then to t = sde.t_from_log_snr(λ), which gives t = (k+1)/N at
integer τ = k and the exact noise level the scheduler assumes elsewhere. The model input after
``scale_model_input`` is in VP scale, so the exact ε there is ε = −σ_t ∇log q_t(x).

``diffusers`` is the optional ``bench`` extra: this module does not import it; the scheduler
configs (``_target_: diffusers.…``) fail to instantiate without it, and the experiment skips them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sde_gen.sde import SDE, DiscreteVPSDE


@dataclass
class PeerResult:
    """Same fields as ``sde_gen.solvers.SampleResult``."""

    x0: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None = None


class ExactEps:
    """ε(x_in, τ) = −σ_t ∇log q_t(x_in) at the time t whose log-SNR matches diffusers' τ."""

    def __init__(self, sde: SDE, score_fn: Callable[[Tensor, Tensor], Tensor], alphas_cumprod):
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
        self.sde, self.score_fn = sde, score_fn
        self.train_sigmas = np.sqrt((1 - ac) / ac)
        self.nfe = 0
        self._times: dict[float, float] = {}

    def times_of(self, taus: Tensor) -> Tensor:
        """t(τ) = t_from_log_snr(−2 log σ_EDM(τ)) for a batch of diffusers timesteps (cached)."""
        taus64 = np.asarray(taus, dtype=np.float64).reshape(-1)
        sigma_edm = np.interp(taus64, np.arange(len(self.train_sigmas)), self.train_sigmas)
        log_snr = torch.as_tensor(-2 * np.log(sigma_edm), dtype=torch.float64)
        t = self.sde.t_from_log_snr(log_snr)
        self._times.update(zip(taus64.tolist(), t.tolist()))
        return t

    def times_of_sigmas(self, sigmas: Tensor) -> Tensor:
        """t with σ_t/γ_t = σ_EDM for the scheduler's own noise levels (``scheduler.sigmas``)."""
        sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        return self.sde.t_from_log_snr(-2 * torch.log(sig))

    def __call__(self, x: Tensor, tau: Tensor | float, t: float | None = None) -> Tensor:
        """ε at diffusers' timestep τ, or at the time ``t`` where given (the scheduler's own σ)."""
        self.nfe += 1
        if t is None:
            tau = float(tau)
            if tau not in self._times:
                self.times_of(torch.tensor([tau]))
            t = self._times[tau]
        t = torch.full((x.shape[0],), float(t), dtype=torch.float64)
        x64 = x.to(torch.float64)
        return self.sde.eps_from_score(x64, t, self.score_fn(x64, t)).to(x.dtype)


class DiffusersSampler:
    """A diffusers scheduler as a solver: ``sampler(sde, score_fn, x_T, generator, record)``.

    ``scheduler`` is a diffusers scheduler instance (built by Hydra from its ``_target_``);
    ``steps`` is ``num_inference_steps``. The loop is diffusers' pipeline loop:
    x = x_T · init_noise_sigma; for τ: x = step(ε(scale_model_input(x, τ), τ), τ, x).
    Where the scheduler keeps its own σ_EDM per step (``sigmas``: DPM-Solver, UniPC, DEIS,
    Euler, also with Karras or λ-uniform σ whose τ = ``_sigma_to_t`` is fractional), ε is exact
    at that σ; else at τ (``ExactEps.times_of``). Runs under float32 default dtype (diffusers'
    UniPC fails under float64). ``ends_at_zero``: the last step lands on σ = 0 (DPM-Solver++,
    UniPC ``final_sigmas_type="zero"``, DDIM ``set_alpha_to_one``), not on t = 1/N (DEIS).
    """

    def __init__(self, scheduler, steps: int = 50, ends_at_zero: bool = True):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r} must be a positive integer")
        self.scheduler, self.steps, self.ends_at_zero = scheduler, steps, bool(ends_at_zero)

    def family(self) -> str:
        """Scheduler class and order, e.g. ``DPMSolverMultistep-3`` (a row family), with UniPC's
        ``bh1`` variant named (``UniPCMultistep-bh1-2``) as ours is."""
        name = type(self.scheduler).__name__.removesuffix("Scheduler")
        if getattr(self.scheduler.config, "solver_type", None) == "bh1":
            name += "-bh1"
        order = getattr(self.scheduler.config, "solver_order", None)
        return f"{name}-{order}" if order else name

    def __call__(
        self,
        sde: SDE,
        score_fn: Callable[[Tensor, Tensor], Tensor],
        x_T: Tensor,
        generator: torch.Generator | None = None,
        record: bool = False,
    ) -> PeerResult:
        if not isinstance(sde, DiscreteVPSDE) or sde.N != self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"diffusers peers need sde=ddpm_linear (a DiscreteVPSDE with N="
                f"{self.scheduler.config.num_train_timesteps}), got {sde!r}"
            )
        ours = torch.exp(sde._log_alpha_bar[1:])
        theirs = self.scheduler.alphas_cumprod.to(torch.float64)
        if not torch.allclose(ours, theirs, rtol=1e-4):
            raise ValueError("the scheduler's alphas_cumprod differ from the SDE's ᾱ")
        eps = ExactEps(sde, score_fn, theirs.numpy())
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            return self._loop(eps, x_T, generator, record)
        finally:
            torch.set_default_dtype(default)

    def _loop(self, eps: ExactEps, x_T: Tensor, generator, record: bool) -> PeerResult:
        sched = self.scheduler
        sched.set_timesteps(self.steps)
        n = len(sched.timesteps)
        own = getattr(sched, "sigmas", None)
        if own is not None and len(own) >= n and not sched.__class__.__name__.startswith("DDIM"):
            times = eps.times_of_sigmas(own[:n])
        else:
            times = eps.times_of(sched.timesteps)
        takes_generator = "generator" in inspect.signature(sched.step).parameters
        kwargs = {"generator": generator} if takes_generator else {}
        x = x_T.to(torch.float32) * sched.init_noise_sigma
        trajectory = [x.clone()] if record else None
        for tau, t in zip(sched.timesteps, times.tolist(), strict=True):
            x_in = sched.scale_model_input(x, tau)
            x = sched.step(eps(x_in, tau, t), tau, x, **kwargs).prev_sample
            if record:
                trajectory.append(x.clone())
        return PeerResult(x0=x, nfe=eps.nfe, times=times, trajectory=trajectory)


def scheduler_on_grid(
    scheduler,
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    times: Tensor,
    generator: torch.Generator | None = None,
    scaled: bool = False,
    noises: list[Tensor] | None = None,
) -> list[Tensor]:
    """The states of a diffusers scheduler stepping in float64 on sde_gen's grid ``times``
    (T = t_0 > … > t_N): after ``set_timesteps(N)`` its σ_EDM are replaced by σ_t/γ_t at
    ``times`` and its ``alphas_cumprod`` by the SDE's ᾱ, so both sides take the same steps and
    only the update formulas differ. ε is exact at t_i, taken at ``scale_model_input`` as in the
    pipeline. ``scaled``: the scheduler's sample is x̃ = x/γ_t (k-diffusion's form: LMS, Euler,
    KDPM2), started at x_T/γ_T and returned as γ_t x̃. ``noises``: the N(0, I) draw of each
    step, given to ``step(variance_noise=…)`` (stochastic DPM-Solver). Returns [x_T, …, x_N]."""
    steps = len(times) - 1
    scheduler.set_timesteps(steps)
    if len(scheduler.timesteps) != steps:
        raise ValueError(f"the scheduler takes {len(scheduler.timesteps)} steps, not {steps}")
    ratio = (sde.sigma(times) / sde.gamma(times)).to(torch.float64)
    if hasattr(scheduler, "sigmas"):
        scheduler.sigmas = ratio
    if isinstance(sde, DiscreteVPSDE):
        scheduler.alphas_cumprod = torch.exp(sde._log_alpha_bar[1:]).to(torch.float64)
    eps = ExactEps(sde, score_fn, scheduler.alphas_cumprod.double().numpy())
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generator} if takes_generator else {}
    gamma = sde.gamma(times).tolist() if scaled else [1.0] * len(times)
    x = x_T.to(torch.float64) / gamma[0]
    states = [x_T.to(torch.float64)]
    for i, (tau, t) in enumerate(zip(scheduler.timesteps, times[:-1].tolist(), strict=True)):
        x_in = scheduler.scale_model_input(x, tau)
        if noises is not None:
            kwargs["variance_noise"] = noises[i]
        x = scheduler.step(eps(x_in, tau, t), tau, x, **kwargs).prev_sample
        states.append(gamma[i + 1] * x)
    return states
