"""A diffusers scheduler config as sde_gen's SDE, parametrisation and network time.

The DDPM-family schedulers (``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler``
…) describe one discrete chain of ``num_train_timesteps`` = N betas: its ᾱ at diffusers'
0-based timestep k is ᾱ_{k+1} of the chain, which ``DiscreteVPSDE`` reaches at t = (k + 1)/N, so
the network's time is ``DiscreteIndex(N, offset=1)`` (fractional between nodes). Score-SDE's
``ScoreSdeVeScheduler`` describes the VE SDE σ ∈ [σ_min, σ_max] whose networks take σ and return
the score (``VESDE``, ``Sigma``, ``Score``). Each ``prediction_type`` names a parametrisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sde_gen.models.network_time import DiscreteIndex, NetworkTime, Sigma
from sde_gen.models.parametrisation import X0, Eps, Parametrisation, Score, V
from sde_gen.sde import SDE, VESDE, DiscreteVPSDE
from sde_gen.sde.ddpm import cosine_betas

__all__ = [
    "CHAIN_SCHEDULERS",
    "VE_SCHEDULERS",
    "PREDICTIONS",
    "chain_betas",
    "zero_terminal_snr",
    "scheduler_parts",
]

CHAIN_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "DDIMInverseScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
)
"""Scheduler classes whose config is a discrete DDPM chain (betas, prediction_type)."""

VE_SCHEDULERS = ("ScoreSdeVeScheduler",)

PREDICTIONS: dict[str, type[Parametrisation]] = {
    "epsilon": Eps,
    "v_prediction": V,
    "sample": X0,
}
"""diffusers' ``prediction_type`` → what the network's output means."""

TERMINAL_ALPHA_BAR = 2.0**-24
"""ᾱ_N after zero-terminal-SNR rescaling: 0 exactly would put σ/γ = ∞ at t = T; like diffusers'
σ-based schedulers the chain keeps this tiny ᾱ_N (γ_T ≈ 2.4e-4)."""


def _number(cfg: dict[str, Any], key: str, where: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {key}={value!r} must be a finite number")
    return float(value)


def _steps(cfg: dict[str, Any], where: str, default: int) -> int:
    n = cfg.get("num_train_timesteps", default)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"{where}: num_train_timesteps={n!r} must be an integer >= 2")
    return n


def zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. (2024), Algorithm 1: √ᾱ moved affinely so that √ᾱ_N = 0 and √ᾱ_1 keeps its
    value; then ᾱ_N is raised to ``TERMINAL_ALPHA_BAR`` so the chain stays a finite SDE."""
    root = torch.exp(0.5 * torch.cumsum(torch.log1p(-betas), 0))
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    alpha_bar = root**2
    alpha_bar[-1] = TERMINAL_ALPHA_BAR
    ratio = alpha_bar / torch.cat([torch.ones(1, dtype=alpha_bar.dtype), alpha_bar[:-1]])
    return 1.0 - ratio


def chain_betas(cfg: dict[str, Any], where: str) -> Tensor:
    """The chain's β_1..β_N (float64) from a scheduler config: ``trained_betas``, or
    ``beta_schedule`` linear (β linear in k), scaled_linear (√β linear in k) or
    squaredcos_cap_v2 (Nichol & Dhariwal's cosine ᾱ, β ≤ 0.999); then ``rescale_betas_zero_snr``."""
    n = _steps(cfg, where, 1000)
    trained = cfg.get("trained_betas")
    schedule = cfg.get("beta_schedule", "linear")
    if trained is not None:
        if not isinstance(trained, list) or len(trained) != n:
            got = len(trained) if isinstance(trained, list) else type(trained).__name__
            raise ValueError(
                f"{where}: trained_betas must be a list of num_train_timesteps={n} numbers, "
                f"got {got}"
            )
        betas = torch.tensor(trained, dtype=torch.float64)
    elif schedule in ("linear", "scaled_linear"):
        start = _number(cfg, "beta_start", where, 1e-4)
        end = _number(cfg, "beta_end", where, 0.02)
        if schedule == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        else:
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif schedule == "squaredcos_cap_v2":
        betas = cosine_betas(n, s=0.008, max_beta=0.999)
    else:
        known = "linear, scaled_linear, squaredcos_cap_v2 (or trained_betas)"
        raise ValueError(f"{where}: beta_schedule={schedule!r} is not supported: one of {known}")
    if not (betas.min() > 0 and betas.max() < 1):
        raise ValueError(f"{where}: betas must lie in (0, 1), got [{betas.min()}, {betas.max()}]")
    if cfg.get("rescale_betas_zero_snr", False):
        betas = zero_terminal_snr(betas)
    return betas


def prediction(cfg: dict[str, Any], where: str, default: str = "epsilon") -> Parametrisation:
    """The parametrisation of diffusers' ``prediction_type``."""
    kind = cfg.get("prediction_type", default)
    if kind not in PREDICTIONS:
        raise ValueError(
            f"{where}: prediction_type={kind!r} is not one of {tuple(PREDICTIONS)} "
            "(epsilon: ε, v_prediction: v, sample: x0)"
        )
    return PREDICTIONS[kind]()


def scheduler_parts(cfg: dict[str, Any], where: str) -> tuple[SDE, Parametrisation, NetworkTime]:
    """(SDE, parametrisation, network time) of a scheduler config (its ``_class_name`` picks the
    family); ``where`` names the file in every error."""
    name = cfg.get("_class_name")
    if name in VE_SCHEDULERS:
        s_min = _number(cfg, "sigma_min", where, 0.01)
        s_max = _number(cfg, "sigma_max", where, 1348.0)
        if not 0 < s_min < s_max:
            raise ValueError(f"{where}: need 0 < sigma_min={s_min} < sigma_max={s_max}")
        return VESDE(sigma_min=s_min, sigma_max=s_max), Score(), Sigma()
    if name in CHAIN_SCHEDULERS:
        betas = chain_betas(cfg, where)
        return DiscreteVPSDE(betas), prediction(cfg, where), DiscreteIndex(len(betas), offset=1)
    known = ", ".join(CHAIN_SCHEDULERS + VE_SCHEDULERS)
    raise ValueError(f"{where}: _class_name={name!r} is not a scheduler sde_gen reads ({known})")
