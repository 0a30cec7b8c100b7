"""The discrete DDPM objectives (survey §3.1; Ho et al. 2020; Nichol & Dhariwal 2021).

    L_vlb = L_T + Σ_{t=2}^T L_{t−1} + L_0,
    L_T = KL(q(x_T|x0) ‖ N(0, I)),  L_{t−1} = KL(q(x_{t−1}|x_t, x0) ‖ p_θ(x_{t−1}|x_t)),
    L_0 = −log p_θ(x0|x1)  (discretised Gaussian decoder on ``num_bins`` bins of [−1, 1]),
    p_θ(x_{t−1}|x_t) = N(μ_θ, Σ_t),  μ_θ = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t = μ̃_t(x̂0(ε_θ), x_t),
    Σ_t = β̃_t (fixed small), β_t (fixed large, ``large_variance``) or learned: log Σ_t from the
    network's extra output by the model's convention (``model.variance``, ``models.
    learned_variance``), e.g. log Σ_t = f log β_t + (1 − f) log β̃_t (eq. 15) or Σ_t itself.

The network sees the continuous time t = i/T; ``model.sde`` must be the chain's DiscreteVPSDE.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor

from sde_gen.losses.base import Draws, Loss, SampleLosses, model_batch, randn_like
from sde_gen.losses.step_samplers import StepSampler, UniformStepSampler
from sde_gen.models.score_model import ScoreModel
from sde_gen.sde import DiscreteVPSDE
from sde_gen.sde.ddpm import DiscreteSchedule, discretized_gaussian_log_likelihood, normal_kl

__all__ = [
    "SimpleLoss",
    "VLBLoss",
    "HybridLoss",
    "model_mean_log_variance",
    "vlb_term",
    "prior_term",
    "vlb_terms",
    "vlb",
    "schedule_of",
    "VLBUnits",
]


def schedule_of(model: ScoreModel, schedule: DiscreteSchedule | None = None) -> DiscreteSchedule:
    """The DDPM chain of ``model.sde`` (a DiscreteVPSDE); checks it equals ``schedule`` if given."""
    sde = model.sde
    if not isinstance(sde, DiscreteVPSDE):
        raise ValueError(
            f"model.sde={sde!r} must be the DiscreteVPSDE of the DDPM chain (e.g. sde=ddpm_linear)"
        )
    if schedule is None:
        return DiscreteSchedule(sde.betas)
    if sde.N != schedule.T or not torch.allclose(sde.betas, schedule.betas, rtol=1e-9, atol=0):
        raise ValueError(
            f"model.sde={sde!r} does not match the loss schedule {type(schedule).__name__}"
            f"(T={schedule.T}): their betas differ"
        )
    return schedule


def _learned_log_variance(
    model: ScoreModel, schedule: DiscreteSchedule, v: Tensor, steps: Tensor
) -> Tensor:
    """log Σ_t of the extra output v by the model's convention (``model.variance``) with log β_t
    and the clipped log β̃_t (β̃_1 = 0 replaced by β̃_2); the sampler calls the same one."""
    log_max = schedule._at(torch.log(schedule.betas), steps, v)
    log_min = schedule._at(schedule.posterior_log_variance_clipped, steps, v)
    return model.variance.log_variance(v, log_max, log_min)


def _fixed_log_variance(
    schedule: DiscreteSchedule, steps: Tensor, x: Tensor, large_variance: bool
) -> Tensor:
    if large_variance:  # log β_t, with β̃_2 at t = 1 as in Nichol & Dhariwal's code
        arr = torch.log(torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]]))
    else:
        arr = schedule.posterior_log_variance_clipped
    return schedule._at(arr, steps, x)


def model_mean_log_variance(
    model: ScoreModel,
    schedule: DiscreteSchedule,
    xt: Tensor,
    steps: Tensor,
    large_variance: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """(μ_θ(x_t, t), log Σ_t, ε_θ) of p_θ(x_{t−1}|x_t) at integer steps t ∈ 1..T."""
    eps, v = model.eps_and_extra(xt, schedule.continuous_time(steps).to(xt.dtype))
    x0_hat = schedule.predict_x0_from_eps(xt, steps, eps)
    mean, _, _ = schedule.posterior_mean_variance(x0_hat, xt, steps)
    if v is None:
        log_var = _fixed_log_variance(schedule, steps, xt, large_variance)
    else:
        log_var = _learned_log_variance(model, schedule, v, steps)
    return mean, log_var, eps


def _terms_from_mean(
    schedule: DiscreteSchedule,
    x0: Tensor,
    xt: Tensor,
    steps: Tensor,
    mean: Tensor,
    log_var: Tensor,
    num_bins: int,
) -> Tensor:
    """L_{t−1} in nats per sample: KL for t ≥ 2, decoder NLL −log p(x0|x1) for t = 1."""
    true_mean, _, true_log_var = schedule.posterior_mean_variance(x0, xt, steps)
    kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).sum(1)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var, num_bins)
    return torch.where(steps == 1, nll.flatten(1).sum(1), kl)


def vlb_term(
    model: ScoreModel,
    schedule: DiscreteSchedule,
    x0: Tensor,
    xt: Tensor,
    steps: Tensor,
    num_bins: int = 256,
    large_variance: bool = False,
    log_variance: Tensor | None = None,
) -> Tensor:
    """L_{t−1}(x0, x_t) in nats per sample (sum over dimensions) at steps t ∈ 1..T;
    ``log_variance`` (shape (T,): log Σ_t for t = 1..T, e.g. Analytic-DPM's) replaces the model's
    fixed or learned variance."""
    mean, log_var, _ = model_mean_log_variance(model, schedule, xt, steps, large_variance)
    if log_variance is not None:
        log_var = schedule._at(log_variance.to(xt.device), steps, xt).expand_as(xt)
    return _terms_from_mean(schedule, x0, xt, steps, mean, log_var, num_bins)


def prior_term(schedule: DiscreteSchedule, x0: Tensor) -> Tensor:
    """L_T = KL(N(√ᾱ_T x0, (1 − ᾱ_T) I) ‖ N(0, I)) in nats per sample."""
    steps = torch.full((x0.shape[0],), schedule.T, dtype=torch.int64, device=x0.device)
    mean, var = schedule.q_mean_variance(x0, steps)
    zero = torch.zeros_like(x0)
    return normal_kl(mean, torch.log(var).expand_as(x0), zero, zero).flatten(1).sum(1)


@torch.no_grad()
def vlb_terms(
    model: ScoreModel,
    schedule: DiscreteSchedule,
    x0: Tensor,
    num_bins: int = 256,
    generator: torch.Generator | None = None,
    large_variance: bool = False,
    log_variance: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """All T terms of L_vlb for a batch: ((B, T) with column t−1 = L_{t−1}, prior L_T of (B,)),
    nats per sample, each x_t ~ q(x_t|x0) drawn independently. T network calls on the batch.
    Bits/dim = (terms.sum(1) + prior) / (D ln 2). ``log_variance``: as in ``vlb_term``."""
    steps_all = torch.arange(1, schedule.T + 1, device=x0.device)
    cols = []
    for s in steps_all.tolist():
        steps = torch.full((x0.shape[0],), s, dtype=torch.int64, device=x0.device)
        xt = schedule.q_sample(x0, steps, randn_like(x0, generator))
        cols.append(
            vlb_term(model, schedule, x0, xt, steps, num_bins, large_variance, log_variance)
        )
    return torch.stack(cols, dim=1), prior_term(schedule, x0)


def vlb(
    model: ScoreModel,
    schedule: DiscreteSchedule,
    x0: Tensor,
    num_bins: int = 256,
    generator: torch.Generator | None = None,
    large_variance: bool = False,
    log_variance: Tensor | None = None,
) -> Tensor:
    """L_vlb = L_T + Σ_t L_{t−1} in nats per sample (an upper bound on −log p(x0) of the bins);
    ``log_variance``: as in ``vlb_term``."""
    terms, prior = vlb_terms(model, schedule, x0, num_bins, generator, large_variance, log_variance)
    return terms.sum(1) + prior


class _DiscreteLoss(Loss):
    """Shared draw: t ~ p_t (``step_sampler``), ε ~ N(0, I), x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.

    ``schedule`` is the chain (from the config); it must equal ``model.sde``'s DiscreteVPSDE
    (ValueError otherwise), and ``None`` takes it from ``model.sde``. ``num_bins`` is the number
    of levels of the data for the decoder L_0: 256 for uint8 images, 17 for digits; ``None``
    (the configs' default) lets the trainer set it from the data's ``num_bins``.
    """

    per_dimension = True  # L_simple and the VLB term are means over the data's dimensions

    simple_weight: float = 0.0
    vlb_weight: float = 0.0
    vlb_per_nat: float = 1.0  # the VLB part's unit per nat (1/ln 2 for bits)
    detach_mean: bool = False

    def __init__(
        self,
        schedule: DiscreteSchedule | None = None,
        num_bins: int | None = 256,
        step_sampler: StepSampler | None = None,
        large_variance: bool = False,
    ):
        if num_bins is not None and num_bins < 2:
            raise ValueError(f"num_bins={num_bins} must be >= 2")
        self.schedule = schedule
        self.num_bins = None if num_bins is None else int(num_bins)
        self.step_sampler = UniformStepSampler() if step_sampler is None else step_sampler
        self.large_variance = large_variance

    @property
    def needs_feedback(self) -> bool:
        """True when the step sampler learns from the per-sample losses (``update``)."""
        return self.step_sampler.learns

    def draw(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Draws:
        """Steps t ~ p_t with weights 1/(T p_t), and ε ~ N(0, I), for a batch like ``x0`` (only
        its shape, dtype and device are read)."""
        schedule = schedule_of(model, self.schedule)
        x0 = model_batch(model, x0)
        steps, weights = self.step_sampler(x0.shape[0], schedule.T, generator, x0.device)
        return {"steps": steps, "weights": weights, "noise": randn_like(x0, generator)}

    def terms(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> dict:
        """Per-sample pieces: steps, weights 1/(T p_t), x_t, ε, ``simple`` = mean over dims of
        ‖ε − ε_θ‖², ``vb`` = L_{t−1} in nats per sample (computed only when vlb_weight > 0)."""
        return self._terms(model, x0, self.draw(model, x0, generator))

    def _terms(self, model: ScoreModel, x0: Tensor, draws: Draws) -> dict:
        schedule = schedule_of(model, self.schedule)
        x0 = model_batch(model, x0)
        steps, weights, noise = draws["steps"], draws["weights"], draws["noise"]
        xt = schedule.q_sample(x0, steps, noise)
        mean, log_var, eps = model_mean_log_variance(
            model, schedule, xt, steps, self.large_variance
        )
        out = {"steps": steps, "weights": weights, "xt": xt, "noise": noise, "T": schedule.T}
        out["simple"] = (noise - eps).pow(2).flatten(1).mean(1)
        if self.vlb_weight > 0:
            if self.num_bins is None:
                raise ValueError(
                    "num_bins=None: the decoder L_0 needs the data's number of levels; set "
                    "loss.num_bins (the trainer sets it from discrete data)"
                )
            if self.detach_mean:
                mean = mean.detach()
            out["vb"] = _terms_from_mean(schedule, x0, xt, steps, mean, log_var, self.num_bins)
            out["prior"] = prior_term(schedule, x0)
        return out

    def evaluate(self, model: ScoreModel, x0: Tensor, draws: Draws) -> SampleLosses:
        """w_t · (per-sample loss) with w_t = 1/(T p_t); feedback L_{t−1} (or L_simple without a
        VLB part) for the step sampler."""
        terms = self._terms(model, x0, draws)
        per = self.combine(terms, model_batch(model, x0), terms["T"])
        feedback = terms["vb"] if "vb" in terms else terms["simple"]
        return SampleLosses(terms["weights"].to(per.dtype) * per, feedback.detach())

    def update(self, model: ScoreModel, draws: Draws, feedback: Tensor | None) -> None:
        """Feed the per-sample ``feedback`` of the batch ``draws`` to the step sampler."""
        if feedback is not None:
            T = schedule_of(model, self.schedule).T
            self.step_sampler.update(draws["steps"], feedback.detach(), T)

    def combine(self, terms: dict[str, Tensor], x0: Tensor, T: int) -> Tensor:
        """simple_weight · L_simple + vlb_weight · (T L_{t−1} + L_T)/D per dimension, the VLB
        part in nats times ``vlb_per_nat`` (1/ln 2 when it is counted in bits)."""
        loss = self.simple_weight * terms["simple"]
        if self.vlb_weight > 0:
            D = x0[0].numel()
            vlb = (T * terms["vb"] + terms["prior"]) / D * self.vlb_per_nat
            loss = loss + self.vlb_weight * vlb
        return loss

    def state_dict(self) -> dict:
        return {"step_sampler": self.step_sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step_sampler.load_state_dict(state.get("step_sampler", {}))


class SimpleLoss(_DiscreteLoss):
    """L_simple = E_{t,x0,ε} mean_dims ‖ε − ε_θ(x_t, t/T)‖² (Ho et al. 2020, eq. 14)."""

    simple_weight = 1.0

    def __repr__(self) -> str:
        return f"SimpleLoss(num_bins={self.num_bins}, {self.step_sampler!r})"


class VLBLoss(_DiscreteLoss):
    """L_vlb per dimension, estimated by (T L_{t−1} + L_T)/D with t ~ U{1..T} (nats/dim); the
    gradient reaches both the mean and the variance."""

    vlb_weight = 1.0

    def __repr__(self) -> str:
        return f"VLBLoss(num_bins={self.num_bins}, {self.step_sampler!r})"


class VLBUnits(Enum):
    """Units of the VLB part of L_hybrid: bits (improved-diffusion's ``vb``) or nats."""

    bits = "bits"
    nats = "nats"


class HybridLoss(_DiscreteLoss):
    """L_hybrid = L_simple + λ L_vlb (Nichol & Dhariwal 2021, eq. 16), λ = ``vlb_weight``.

    Scale: λ multiplies the FULL bound L_vlb ≈ L_T + T·E_t[L_{t−1}] (estimated by T·L_{t−1} for
    the one sampled t), per dimension, in ``vlb_units``: bits by default, as the reference code
    (improved-diffusion's ``vb`` term is in bits/dim, rescaled by T/1000 for λ = 0.001), or nats,
    which weighs the VLB part ln 2 ≈ 0.693 times as much for the same λ. Implementations that put λ
    on the single sampled term are T× weaker. The mean μ_θ is detached in the VLB term, so it
    trains only Σ_θ; ε_θ learns from L_simple.
    """

    simple_weight = 1.0
    detach_mean = True

    def __init__(
        self,
        schedule: DiscreteSchedule | None = None,
        num_bins: int | None = 256,
        step_sampler: StepSampler | None = None,
        vlb_weight: float = 0.001,
        large_variance: bool = False,
        vlb_units: VLBUnits | str = VLBUnits.bits,
    ):
        super().__init__(schedule, num_bins, step_sampler, large_variance)
        if not (math.isfinite(vlb_weight) and vlb_weight >= 0):
            raise ValueError(f"hybrid coefficient vlb_weight={vlb_weight} must be >= 0")
        try:
            self.vlb_units = VLBUnits(vlb_units)
        except ValueError:
            allowed = [u.value for u in VLBUnits]
            raise ValueError(f"vlb_units={vlb_units!r} is not one of {allowed}") from None
        self.vlb_weight = float(vlb_weight)
        self.vlb_per_nat = 1 / math.log(2) if self.vlb_units is VLBUnits.bits else 1.0

    def __repr__(self) -> str:
        return (
            f"HybridLoss(vlb_weight={self.vlb_weight}, vlb_units={self.vlb_units.value}, "
            f"num_bins={self.num_bins})"
        )
