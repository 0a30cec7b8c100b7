"""Variational diffusion models (Kingma et al. 2021, VDM): a variance-preserving SDE whose noise
schedule is learned.

VDM writes the schedule as γ(t) = −log SNR(t) (not the survey's mean coefficient γ_t, which this
package calls ``gamma``: here the VDM quantity is ``neg_log_snr``), increasing on [0, 1], and

    α_t² = sigmoid(−γ(t)),   σ_t² = sigmoid(γ(t)),   α_t² + σ_t² = 1,
    f(t) = d log α_t/dt = −½ σ_t² γ'(t),
    g(t)² = dσ_t²/dt − 2 f σ_t² = σ_t² α_t² γ' + σ_t⁴ γ' = σ_t² γ'(t),

so g²/σ² = γ' = −d log SNR/dt, as for every linear SDE. Unlike VP, z_0 is not the data: at t = 0
the marginal is N(α_0 x, σ_0² I) with σ_0² = sigmoid(γ_0) > 0 (VDM's default γ_0 = −13.3 gives
σ_0 ≈ 1.3e-3), and the prior at t = 1 is N(0, I).

The learned schedule (``LearnedNegLogSNR``) is γ_η(t) = γ_0 + (γ_1 − γ_0) D(t)/D(1) with
D(t) = γ̃(t) − γ̃(0) of VDM's monotone network (``monotone.MonotoneNet``), so γ(0) = γ_0 and
γ(1) = γ_1 exactly, and γ'(t) = (γ_1 − γ_0) D'(t)/D(1) exactly (no autograd in t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import torch
from torch import Tensor, nn
from torch.nn.functional import logsigmoid

from sde_gen.sde.base import SDE, finite_float
from sde_gen.sde.monotone import MonotoneNet, inverse_softplus, positive
from sde_gen.sde.vp import VPSDE

Shape = Callable[[Tensor], Tensor]

__all__ = [
    "VDMSDE",
    "NegLogSNR",
    "LearnedNegLogSNR",
    "ScheduleInit",
    "GradientGate",
    "alpha_log",
    "sigma2",
    "drift",
    "diffusion2",
]


# -- the VDM closed forms, written once (γ = neg_log_snr, γ' = its t-derivative) ----------------
def alpha_log(neg_log_snr: Tensor) -> Tensor:
    """log α_t = ½ log sigmoid(−γ)."""
    return 0.5 * logsigmoid(-neg_log_snr)


def sigma2(neg_log_snr: Tensor) -> Tensor:
    """σ_t² = sigmoid(γ)."""
    return torch.sigmoid(neg_log_snr)


def drift(neg_log_snr: Tensor, slope: Tensor) -> Tensor:
    """f(t) = −½ σ_t² γ'(t)."""
    return -0.5 * sigma2(neg_log_snr) * slope


def diffusion2(neg_log_snr: Tensor, slope: Tensor) -> Tensor:
    """g(t)² = σ_t² γ'(t)."""
    return sigma2(neg_log_snr) * slope


# -- per-sample gradient scaling (VDM's variance minimisation, used by losses.vdm) ------------
class GradientGate:
    """Identity on values; ``scale(w)`` later multiplies the gradient that reaches each gated
    per-sample tensor (shape (B,)) by w (shape (B,)), through tensor hooks. A schedule gates its
    normalised interior D(t)/D(1) and D'(t)/D(1), so the loss can turn the interior's gradient
    into that of another objective (VDM: ∇ E[L²] = E[2 L ∇L])."""

    def __init__(self) -> None:
        self._gated: list[Tensor] = []

    def __call__(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            self._gated.append(x)
        return x

    def scale(self, weight: Tensor) -> None:
        w = weight.detach()
        for x in self._gated:
            x.register_hook(lambda grad, w=w: grad * w.to(grad.device, grad.dtype))
        self._gated.clear()


# -- schedules --------------------------------------------------------------------------------
class NegLogSNR(nn.Module):
    """A schedule γ(t) = −log SNR(t), increasing on [0, 1]: ``forward(t, gate)`` gives
    (γ(t), γ'(t)) in float64; ``ends()`` gives (γ(0), γ(1))."""

    def forward(self, t: Tensor, gate: GradientGate | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def ends(self) -> tuple[Tensor, Tensor]:
        gamma, _ = self(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return gamma[0], gamma[1]


class ScheduleInit(Enum):
    """The start of a learned schedule: VDM's (near-)linear γ, or the shape of the VP SDE's."""

    linear = "linear"
    vp = "vp"


class LearnedNegLogSNR(NegLogSNR):
    """γ_η(t) = γ_0 + (γ_1 − γ_0) D(t)/D(1) (VDM, appendix D), D from ``MonotoneNet(hidden)``.

    End points: γ_0 = ``gamma_min`` (a parameter) and γ_1 = γ_0 + softplus(ρ) (ρ a parameter,
    initialised so that γ_1 = ``gamma_max``), so γ_1 > γ_0 whatever the weights. Parameters are
    float32 (as the network's), the schedule float64. ``init``: ``linear`` (VDM's start, γ nearly
    linear in t) or ``vp``: the log-SNR of ``VPSDE(vp_beta_min, vp_beta_max)`` between the end
    points, γ(t) ≈ γ_VP(τ_0 + (τ_1 − τ_0) t) with γ_VP(τ_0) = γ_0, γ_VP(τ_1) = γ_1 (VP's own time
    shifted by τ_0 ≈ 1.7e-5 for γ_0 = −13.3; γ_1 ≤ γ_VP(1) ≈ 10.05 for β 0.1 → 20).
    ``learned=false`` freezes it.
    """

    def __init__(
        self,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        hidden: int = 1024,
        init: ScheduleInit | str = ScheduleInit.linear,
        vp_beta_min: float = 0.1,
        vp_beta_max: float = 20.0,
        learned: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        g0, g1 = finite_float("gamma_min", gamma_min), finite_float("gamma_max", gamma_max)
        if not g0 < g1:
            raise ValueError(f"gamma_min={g0} must be < gamma_max={g1}")
        try:
            self.init = ScheduleInit(getattr(init, "value", init))
        except ValueError:
            allowed = [i.value for i in ScheduleInit]
            raise ValueError(f"init={init!r} is not one of {allowed}") from None
        self.gamma_min = nn.Parameter(torch.tensor(g0))
        gap = torch.tensor(g1 - g0, dtype=torch.float64)
        self.gap_raw = nn.Parameter(inverse_softplus(gap).float())
        self.net = MonotoneNet(hidden, seed)
        if self.init is ScheduleInit.vp:
            self.net.fit_cdf(*vp_shape(VPSDE(vp_beta_min, vp_beta_max), g0, g1))
        self.requires_grad_(bool(learned))

    def width(self) -> Tensor:
        """γ_1 − γ_0 = softplus(ρ) > 0 (float64), kept apart from γ_0 so that γ' > 0 even when
        the width is below the resolution of γ_0."""
        return positive(self.gap_raw.to(torch.float64))

    def ends(self) -> tuple[Tensor, Tensor]:
        """(γ_0, γ_1) in float64, exactly γ(0) and γ(1)."""
        g0 = self.gamma_min.to(torch.float64)
        return g0, g0 + self.width()

    def forward(self, t: Tensor, gate: GradientGate | None = None) -> tuple[Tensor, Tensor]:
        """(γ(t), γ'(t)); ``gate`` sees the interior D(t)/D(1) and D'(t)/D(1) per sample."""
        D, dD = self.net.increment(t)
        D1, _ = self.net.increment(torch.ones((), dtype=torch.float64, device=D.device))
        shape, slope = D / D1, dD / D1
        if gate is not None:
            shape, slope = gate(shape), gate(slope)
        width = self.width()
        return self.gamma_min.to(torch.float64) + width * shape, width * slope

    def extra_repr(self) -> str:
        return f"init={self.init.value}"


def vp_shape(vp: VPSDE, gamma_0: float, gamma_1: float) -> tuple[Shape, Shape]:
    """(s, s') of VP's log-SNR between γ_0 and γ_1, normalised to [0, 1] (``ScheduleInit.vp``):
    s(t) = (γ_VP(τ(t)) − γ_0)/(γ_1 − γ_0), τ(t) = τ_0 + (τ_1 − τ_0) t, γ_VP' = g²/σ²."""
    top = -float(vp.log_snr(torch.ones(1, dtype=torch.float64))[0])
    if gamma_1 > top:
        raise ValueError(f"gamma_max={gamma_1} is above the VP schedule's −log SNR(1) = {top:.4g}")
    taus = vp.t_from_log_snr(-torch.tensor([gamma_0, gamma_1], dtype=torch.float64))
    tau0, tau1 = float(taus[0]), float(taus[1])

    def tau(t: Tensor) -> Tensor:
        return (tau0 + (tau1 - tau0) * t).clamp(0, 1)

    def shape(t: Tensor) -> Tensor:
        return (-vp.log_snr(tau(t)) - gamma_0) / (gamma_1 - gamma_0)

    def slope(t: Tensor) -> Tensor:
        s = tau(t)
        return (tau1 - tau0) * vp.g2(s) / vp.sigma(s) ** 2 / (gamma_1 - gamma_0)

    return shape, slope


# -- the SDE ----------------------------------------------------------------------------------
class VDMSDE(SDE, nn.Module):
    """The VP SDE of a schedule γ(t) = −log SNR(t) (module docstring): f = −½σ²γ', g² = σ²γ',
    α_t² = sigmoid(−γ), σ_t² = sigmoid(γ), on t ∈ [0, 1] with prior N(0, I).

    An ``nn.Module``: inside ``ScoreModel(eps_net, sde)`` the schedule's parameters are trained,
    averaged by the EMA, saved in checkpoints and restored on load with the network's. The
    coefficients keep the parameters' gradient (with ``loss=dsm`` the schedule is then trained by
    that loss; ``neg_log_snr.learned=false`` freezes it).

    ``level_input`` (default): the ε-network sees the noise level ``level(γ(t))`` instead of t, as
    in VDM, so that E[L_∞] depends on the end points only and the interior may be trained for the
    variance alone (``losses.vdm``); false: it sees t (e.g. an exact score written in t).
    """

    T = 1.0

    def __init__(self, neg_log_snr: NegLogSNR | None = None, level_input: bool = True):
        super().__init__()
        if not isinstance(level_input, bool):
            raise ValueError(f"level_input={level_input!r} must be true or false")
        self.level_input = level_input
        neg_log_snr = LearnedNegLogSNR() if neg_log_snr is None else neg_log_snr
        if not isinstance(neg_log_snr, NegLogSNR):
            raise ValueError(
                f"neg_log_snr={neg_log_snr!r} is not a NegLogSNR schedule "
                "(e.g. sde_gen.sde.LearnedNegLogSNR)"
            )
        self.neg_log_snr = neg_log_snr

    def __repr__(self) -> str:
        g0, g1 = (float(g.detach()) for g in self.neg_log_snr.ends())
        return f"VDMSDE({type(self.neg_log_snr).__name__}, gamma_0={g0:.4g}, gamma_1={g1:.4g})"

    def variational_bound(self) -> str:
        """``vdm_vlb``: VDM's continuous-time bound (Kingma et al. 2021, eqs. 11–17)."""
        return "vdm_vlb"

    def schedule(self, t: Tensor, gate: GradientGate | None = None) -> tuple[Tensor, Tensor]:
        """(γ(t), γ'(t)) in float64 on t's device (evaluated where the parameters live)."""
        param = next(self.neg_log_snr.parameters(), None)
        where = t.device if param is None else param.device
        gamma, slope = self.neg_log_snr(t.to(device=where, dtype=torch.float64), gate)
        return gamma.to(t.device), slope.to(t.device)

    def level(self, neg_log_snr: Tensor) -> Tensor:
        """The noise level the ε-network sees: (γ − γ_0)/(γ_1 − γ_0) ∈ [0, 1] (VDM conditions
        on γ, so that E[L_∞] depends on the end points only, not on the interior)."""
        gamma_0, gamma_1 = self.neg_log_snr.ends()
        return (neg_log_snr - gamma_0) / (gamma_1 - gamma_0)

    def network_time(self, t: Tensor) -> Tensor:
        """The network's input at times t: ``level(γ(t))`` in t's dtype (t itself without
        ``level_input``)."""
        if not self.level_input:
            return t
        return self.level(self.schedule(t.to(torch.float64))[0]).to(t.dtype)

    def _f(self, t: Tensor) -> Tensor:
        return drift(*self.schedule(t))

    def _g2(self, t: Tensor) -> Tensor:
        return diffusion2(*self.schedule(t))

    def _log_gamma(self, t: Tensor) -> Tensor:
        return alpha_log(self.schedule(t)[0])

    def _sigma2(self, t: Tensor) -> Tensor:
        return sigma2(self.schedule(t)[0])

    @property
    def prior_std(self) -> float:
        """1: α_1² + σ_1² = 1 exactly (VDM's prior N(0, I))."""
        return 1.0

    def log_snr(self, t: Tensor) -> Tensor:
        """log SNR(t) = −γ(t)."""
        return self._eval(lambda s: -self.schedule(s)[0], t)

    @torch.no_grad()
    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """The t with γ(t) = −log_snr (clamped to [0, 1] outside [γ_0, γ_1]): Newton's method on
        the increasing γ with the exact γ', kept inside a shrinking bracket (bisection when a
        Newton step leaves it); converges to float64 precision in a few steps."""
        g0, g1 = (float(g) for g in self.neg_log_snr.ends())
        if not (math.isfinite(g0) and math.isfinite(g1)):
            return super().t_from_log_snr(log_snr)
        target = (-log_snr.detach().to(torch.float64)).clamp(g0, g1)
        t = ((target - g0) / (g1 - g0)).nan_to_num(0.5).clamp(0, 1)
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(100):
            gamma, slope = self.schedule(t)
            error = gamma - target
            lo, hi = torch.where(error > 0, lo, t), torch.where(error > 0, t, hi)
            newton = t - error / slope
            inside = (newton >= lo) & (newton <= hi)
            step = torch.where(inside, newton, 0.5 * (lo + hi))
            step = torch.where(error == 0, t, step)
            moved = float((step - t).abs().max()) if t.numel() else 0.0
            t = step
            if moved <= 1e-15:
                break
        return t.to(log_snr.dtype)
