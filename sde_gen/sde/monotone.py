"""The monotone network of a learned noise schedule (Kingma et al. 2021, VDM, appendix D).

    γ̃(t) = l1(t) + l3(φ(l2(l1(t)))),   φ = sigmoid,
    l1(t) = a t + b (1 → 1),  l2(u) = w u + c (1 → H),  l3(h) = Σ_j v_j h_j / H (H → 1),

with every weight positive (a, w, v = softplus of unconstrained parameters), so γ̃ is strictly
increasing for any parameters. The schedule needs only D(t) = γ̃(t) − γ̃(0) and D'(t); both are
computed without cancellation, in float64 (parameters are float32, cast with their gradient):

    σ(h_j(t)) − σ(h_j(0)) = σ(h_j(t)) σ(−h_j(0)) (−expm1(−w_j a t)),   h_j(t) = w_j l1(t) + c_j,
    D(t) = a t + Σ_j v_j [σ(h_j(t)) − σ(h_j(0))]/H,   D'(t) = a (1 + Σ_j v_j w_j σ'(h_j(t))/H),

so D(0) = 0 exactly and D is increasing in floating point as well, however saturated φ is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

__all__ = ["MonotoneNet", "positive", "inverse_softplus"]


def positive(x: Tensor) -> Tensor:
    """softplus(x) = log(1 + eˣ) > 0, exact in float64 (torch's default switches to x at 20)."""
    return softplus(x, threshold=40.0)


def inverse_softplus(y: Tensor) -> Tensor:
    """x with softplus(x) = y > 0: y + log(−expm1(−y))."""
    return y + torch.log(-torch.expm1(-y))


class MonotoneNet(nn.Module):
    """γ̃(t) of VDM with ``hidden`` = H units; ``increment(t)`` gives (D(t), D'(t)) in float64.

    Initialised near the identity, D(t) ≈ t (VDM's linear start: the nonlinear part is ~1% of
    the linear one), from a local generator seeded by ``seed``; ``fit_cdf`` re-initialises it
    to a given increasing shape.
    """

    def __init__(self, hidden: int = 1024, seed: int = 0):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden={hidden!r} must be an integer >= 1")
        g = torch.Generator().manual_seed(int(seed))
        self.hidden = hidden
        one = torch.tensor(1.0, dtype=torch.float64)
        self.a_raw = nn.Parameter(inverse_softplus(one).float())
        self.b = nn.Parameter(torch.zeros(()))
        self.w_raw = nn.Parameter(torch.randn(hidden, generator=g))
        self.c = nn.Parameter(torch.randn(hidden, generator=g))
        small = 0.01 * positive(torch.randn(hidden, generator=g, dtype=torch.float64))
        self.v_raw = nn.Parameter(inverse_softplus(small).float())

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        d = torch.float64
        return (
            positive(self.a_raw.to(d)),
            self.b.to(d),
            positive(self.w_raw.to(d)),
            self.c.to(d),
            positive(self.v_raw.to(d)),
        )

    def forward(self, t: Tensor) -> Tensor:
        """γ̃(t) as written (float64), for reference; the schedule uses ``increment``."""
        a, b, w, c, v = self._weights()
        u = a * t.to(torch.float64) + b
        return u + (torch.sigmoid(w * u[..., None] + c) * v).mean(-1)

    def increment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(D(t), D'(t)) = (γ̃(t) − γ̃(0), γ̃'(t)) in float64, both > 0 for t > 0 (module doc)."""
        a, b, w, c, v = self._weights()
        t = t.to(torch.float64)[..., None]
        h_t = w * (a * t + b) + c
        h_0 = w * b + c
        up = torch.sigmoid(h_t)
        rise = up * torch.sigmoid(-h_0) * -torch.expm1(-w * a * t)
        slope = up * torch.sigmoid(-h_t)
        D = a * t[..., 0] + (v * rise).mean(-1)
        dD = a * (1 + (v * w * slope).mean(-1))
        return D, dD

    @torch.no_grad()
    def fit_cdf(
        self,
        shape: Callable[[Tensor], Tensor],
        slope: Callable[[Tensor], Tensor],
        grid_size: int = 20001,
    ) -> None:
        """Set the weights so that D(t)/D(1) ≈ s(t) for an increasing s with s(0) = 0, s(1) = 1
        and derivative ``slope`` (both float64 → float64), without optimisation.

        With l1(t) = t: s(t) = ρ t + (1 − ρ) S(t) for ρ = ½ min s' (S is then increasing), and
        S is a smoothed staircase of equal steps at its quantiles c_j = S⁻¹(ℓ_j), each a sigmoid
        of the local spacing 1/(n S'(c_j)) of the quantiles as scale; a few of the H steps lie
        beyond [0, 1] (S extended linearly) so that the ends carry no truncation error.
        """
        grid = torch.linspace(0, 1, grid_size, dtype=torch.float64)
        rho = 0.5 * float(slope(grid).min())
        if not rho > 0:
            raise ValueError(f"the target schedule must be strictly increasing (min slope {rho})")
        H = self.hidden
        m = min(8, H // 4)  # steps beyond [0, 1], where S continues linearly: no end effects
        steps = H - 2 * m
        level = (torch.arange(H, dtype=torch.float64) + 0.5 - m) / steps

        def S(t: Tensor) -> Tensor:
            return (shape(t) - rho * t) / (1 - rho)

        def dS(t: Tensor) -> Tensor:
            return (slope(t.clamp(0, 1)) - rho) / (1 - rho)

        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        d0, d1 = dS(ends)
        lo, hi = torch.zeros_like(level), torch.ones_like(level)
        for _ in range(60):  # S⁻¹ by bisection: S is increasing
            mid = 0.5 * (lo + hi)
            below = S(mid) < level
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        centre = torch.where(
            level < 0, level / d0, torch.where(level > 1, 1 + (level - 1) / d1, 0.5 * (lo + hi))
        )
        w = steps * dS(centre)
        self.a_raw.copy_(inverse_softplus(torch.tensor(1.0, dtype=torch.float64)))
        self.b.zero_()
        self.w_raw.copy_(inverse_softplus(w))
        self.c.copy_(-w * centre)
        height = (1 - rho) / rho * H / steps
        self.v_raw.fill_(float(inverse_softplus(torch.tensor(height, dtype=torch.float64))))
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise ValueError("fit_cdf produced non-finite weights (is the target increasing?)")
