"""The continuous-time variational bound of VDM (Kingma et al. 2021, eqs. 11–17) as a loss.

For data x (continuous, or dequantised levels), on a ``VDMSDE`` with schedule γ = −log SNR,
z_t = α_t x + σ_t ε, α_t² = sigmoid(−γ(t)), σ_t² = sigmoid(γ(t)):

    −log p(x) ≤ L_prior + L_recon + L_∞                                         (nats)
    L_prior = KL(q(z_1|x) ‖ N(0, I)) = ½ Σ_i (α_1² x_i² + σ_1² − log σ_1² − 1),
    L_recon = E_{q(z_0|x)}[−log N(x; z_0/α_0, σ_0²/α_0² I)] = ½ D (1 + log 2π + γ_0),
    L_∞ = ½ E_{t~U(0,1), ε}[γ'(t) ‖ε − ε̂_θ(z_t, t)‖²].

The decoder N(x; z_0/α_0, e^{γ_0} I) is a density of x, so the bound is one on the continuous
−log p(x) (σ_0²/α_0² = e^{γ_0}; its expectation is exact, no draw). L_prior is exact, L_∞ is
estimated with one t per sample, low-discrepancy over the batch (VDM's antithetic times
t_i = (u + i/n) mod 1, one u a batch) or i.i.d. Discrete data (``num_bins`` levels; the trainer
sets it from the data) are dequantised with uniform noise over their bin, drawn with the times,
so the bound is the project's dequantised one (``likelihood.nats_to_bits_per_dim``), ≥ the
discrete −log₂ P(x)/D.

Scale: the per-sample loss is the bound in bits per dimension of the data's units,
(L_prior + L_recon + L_∞ − D log(2/(K−1)))/(D ln 2) for K levels (no shift for continuous data).

Relation to DSM (``DSMLoss`` with ``LikelihoodWeighting``, λ = g²): its per-sample factor is
λ/σ² = g²/σ² = γ'(t), and it has no ½, so on the same (t, ε) the DSM term is exactly twice
½ γ' ‖ε − ε̂‖²: L_∞ = ½ (T − t_min) · L_DSM(λ = g²) (``tests/test_vdm.py``).

The schedule is trained as in VDM: the end points γ_0, γ_1 by this bound; the interior of the
monotone network to minimise the variance of the L_∞ estimator. E[L_∞] = ½ ∫_{γ_0}^{γ_1}
E‖ε − ε̂(z_v, v)‖² dv does not depend on the interior, since the network sees the noise level
(``VDMSDE.level``(γ(t)), not t: ``ScoreModel`` asks ``sde.network_time``), so VDM descends
∇_η E[L_∞²] = E[2 L_∞ ∇_η L_∞] for it: the gradient that reaches the interior D(t_i)/D(1),
D'(t_i)/D(1) of sample i (a ``GradientGate``) is multiplied by 2·L_∞,i (detached, in the loss's
units). On a fixed batch the interior's gradient is then that of mean(L_∞,i²) exactly, while the
end points and ε̂_θ get the gradient of
the bound. ``variance_gradient=false`` gives the interior the bound's gradient instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from sde_gen.likelihood.ode import dequantize, nats_to_bits_per_dim
from sde_gen.losses.base import Draws, Loss, SampleLosses, model_batch, randn_like
from sde_gen.models.score_model import ScoreModel
from sde_gen.sde.base import expand_as
from sde_gen.sde.ddpm import normal_kl
from sde_gen.sde.vdm import VDMSDE, GradientGate, alpha_log, sigma2

__all__ = ["VDMLoss", "VLBTerms", "vdm_vlb"]


class VLBTerms(NamedTuple):
    """The bound's terms in nats per sample: L_∞ (one draw), L_prior, L_recon."""

    diffusion: Tensor
    prior: Tensor
    reconstruction: Tensor

    def total(self) -> Tensor:
        return self.diffusion + self.prior + self.reconstruction


def _vdm_sde(model: ScoreModel) -> VDMSDE:
    if not isinstance(model.sde, VDMSDE):
        raise ValueError(f"loss=vdm needs the VDM SDE (sde=vdm), got sde={model.sde!r}")
    return model.sde


def prior_kl(x: Tensor, neg_log_snr_1: Tensor) -> Tensor:
    """L_prior = KL(N(α_1 x, σ_1² I) ‖ N(0, I)) per sample."""
    mean = expand_as(torch.exp(alpha_log(neg_log_snr_1)).expand(x.shape[0]), x) * x
    log_var = torch.nn.functional.logsigmoid(neg_log_snr_1).to(x.dtype).expand_as(x)
    zero = torch.zeros_like(x)
    return normal_kl(mean, log_var, zero, zero).flatten(1).sum(1)


def reconstruction(x: Tensor, neg_log_snr_0: Tensor) -> Tensor:
    """L_recon = E[−log N(x; z_0/α_0, e^{γ_0} I)] = ½ D (1 + log 2π + γ_0) per sample."""
    dim = x[0].numel()
    value = 0.5 * dim * (1 + math.log(2 * math.pi) + neg_log_snr_0)
    return value.to(x.dtype).expand(x.shape[0])


class VDMLoss(Loss):
    """VDM's continuous-time VLB (module docstring) in bits/dim per sample; ``model.sde`` must be
    a ``VDMSDE``. ``antithetic``: low-discrepancy times over the batch; ``num_bins``: levels of
    discrete data (None: continuous; the trainer sets it from the data); ``variance_gradient``:
    the interior of the schedule descends the variance of L_∞ (VDM) instead of the bound."""

    per_dimension = True  # bits/dim

    def __init__(
        self, antithetic: bool = True, num_bins: int | None = None, variance_gradient: bool = True
    ):
        if num_bins is not None and (isinstance(num_bins, bool) or int(num_bins) < 2):
            raise ValueError(f"num_bins={num_bins!r} must be null or an integer >= 2")
        self.antithetic = bool(antithetic)
        self.num_bins = None if num_bins is None else int(num_bins)
        self.variance_gradient = bool(variance_gradient)

    def __repr__(self) -> str:
        return (
            f"VDMLoss(antithetic={self.antithetic}, num_bins={self.num_bins}, "
            f"variance_gradient={self.variance_gradient})"
        )

    def draw(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Draws:
        """t ∈ [0, 1) (antithetic: (u + i/n) mod 1), ε ~ N(0, I) and, for discrete data, the
        dequantisation offsets, for a batch like ``x0`` (only its shape, dtype, device are read)."""
        _vdm_sde(model)
        x0 = model_batch(model, x0)
        n, dev = x0.shape[0], generator.device if generator is not None else x0.device
        if self.antithetic:
            u = torch.rand(1, generator=generator, dtype=torch.float64, device=dev)
            t = torch.remainder(u + torch.arange(n, dtype=torch.float64, device=dev) / n, 1.0)
        else:
            t = torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
        draws = {"t": t.to(x0.device), "noise": randn_like(x0, generator)}
        if self.num_bins is not None:
            zero = torch.zeros(x0.shape, dtype=x0.dtype, device=dev)
            draws["dequant"] = dequantize(zero, self.num_bins, generator).to(x0.device)
        return draws

    def terms(self, model: ScoreModel, x0: Tensor, draws: Draws) -> VLBTerms:
        """The bound's terms in nats per sample on the batch's draws; with ``variance_gradient``
        the interior of the schedule gets E[2 L_∞ ∇L_∞] through a ``GradientGate``."""
        sde = _vdm_sde(model)
        x = model_batch(model, x0)
        if "dequant" in draws:
            x = x + draws["dequant"]
        t, noise = draws["t"].to(torch.float64), draws["noise"]
        gate = GradientGate() if self.variance_gradient else None
        gamma, slope = sde.schedule(t, gate)
        alpha = expand_as(torch.exp(alpha_log(gamma)), x)
        sigma = expand_as(sigma2(gamma).sqrt(), x)
        z = alpha * x + sigma * noise
        level = sde.level(gamma).to(x.dtype) if sde.level_input else None
        eps = model.eps(z, t.to(x.dtype), level=level)
        sq = (noise - eps).pow(2).flatten(1).sum(1)
        diffusion = 0.5 * slope.to(sq.dtype) * sq
        if gate is not None:
            gate.scale(2 * self._units(diffusion, x[0].numel()))
        gamma_0, gamma_1 = sde.neg_log_snr.ends()
        return VLBTerms(diffusion, prior_kl(x, gamma_1), reconstruction(x, gamma_0))

    def _units(self, nats: Tensor, dim: int) -> Tensor:
        """A part of the bound in the loss's units (bits/dim, no level shift)."""
        return nats / (dim * math.log(2.0))

    def evaluate(self, model: ScoreModel, x0: Tensor, draws: Draws) -> SampleLosses:
        """The bound per sample in bits/dim of the data's units (module docstring)."""
        vlb = self.terms(model, x0, draws).total()
        return SampleLosses(nats_to_bits_per_dim(-vlb, x0[0].numel(), self.num_bins))


@torch.no_grad()
def vdm_vlb(
    model: ScoreModel,
    x: Tensor,
    num_bins: int | None = None,
    generator: torch.Generator | None = None,
    time_draws: int = 16,
) -> Tensor:
    """The VDM bound in nats per sample of x, L_∞ averaged over ``time_draws`` stratified times
    per sample (t = u + b/(kB) + j/k mod 1 for sample b of B, draw j of k) and, for discrete
    data, as many dequantisations; bits/dim: ``nats_to_bits_per_dim(−vlb, D, num_bins)``."""
    if isinstance(time_draws, bool) or not isinstance(time_draws, int) or time_draws < 1:
        raise ValueError(f"time_draws={time_draws!r} must be an integer >= 1")
    loss = VDMLoss(antithetic=True, num_bins=num_bins, variance_gradient=False)
    tiled = x.repeat(time_draws, *([1] * (x.ndim - 1)))
    vlb = loss.terms(model, tiled, loss.draw(model, tiled, generator)).total()
    return vlb.reshape(time_draws, x.shape[0]).mean(0)
