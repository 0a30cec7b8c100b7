"""The reverse-time SDE (or probability-flow ODE) as a ``torchsde`` object in flipped time.

torchsde integrates forward in time, so with u = T − t the reverse SDE of survey §4.3 becomes
dx = −[f(t) x − g(t)² s_θ(x, t)] du + g(t) dw_u  (``probability_flow=False``) and the PF-ODE
dx = −[f(t) x − ½ g(t)² s_θ(x, t)] du (``probability_flow=True``, zero diffusion).
Images are flattened to (batch, channels) as torchsde requires; the noise is diagonal and additive,
so Itô and Stratonovich methods integrate the same equation.
"""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.solvers.base import CountedScore

__all__ = ["ReverseTorchsde", "SDE_TYPE_OF_METHOD", "torchsde_integrate"]

# torchsde methods for diagonal noise and the sde_type each expects (g does not depend on x).
SDE_TYPE_OF_METHOD = {
    "euler": "ito",
    "milstein": "ito",
    "srk": "ito",
    "midpoint": "stratonovich",
    "heun": "stratonovich",
    "euler_heun": "stratonovich",
    "reversible_heun": "stratonovich",
}


def check_method(method: str, allowed: tuple[str, ...] | None = None) -> str:
    allowed = tuple(SDE_TYPE_OF_METHOD) if allowed is None else allowed
    if method not in allowed:
        raise ValueError(f"method={method!r} is not supported; allowed: {list(allowed)}")
    return method


class ReverseTorchsde(torch.nn.Module):
    """f(u, y), g(u, y) of the reverse SDE / PF-ODE at t = T − u, on y of shape (B, D)."""

    noise_type = "diagonal"

    def __init__(
        self,
        sde: SDE,
        score: CountedScore,
        shape: tuple[int, ...],
        probability_flow: bool,
        sde_type: str = "ito",
    ):
        super().__init__()
        self.sde, self.score, self.shape = sde, score, shape
        self.probability_flow = probability_flow
        self.sde_type = sde_type

    def _t(self, u: Tensor) -> float:
        return min(max(self.sde.T - float(u), 0.0), self.sde.T)

    def f(self, u: Tensor, y: Tensor) -> Tensor:
        t = self._t(u)
        x = y.reshape(self.shape)
        t64 = torch.tensor([t], dtype=torch.float64)
        f, g2 = float(self.sde.f(t64)[0]), float(self.sde.g2(t64)[0])
        weight = 0.5 if self.probability_flow else 1.0
        drift = f * x - weight * g2 * self.score(x, t)
        return -drift.reshape(y.shape)

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        if self.probability_flow:
            return torch.zeros_like(y)
        g = float(self.sde.g(torch.tensor([self._t(u)], dtype=torch.float64))[0])
        return torch.full_like(y, g)


def torchsde_integrate(
    sde: SDE,
    score: CountedScore,
    x_T: Tensor,
    t_min: float,
    probability_flow: bool,
    method: str,
    steps: int,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    record_times: Tensor | None = None,
    entropy: int = 0,
) -> tuple[Tensor, Tensor]:
    """Integrate from T to t_min; returns (x at t_min, path at ``record_times`` or at [T, t_min]).

    Fixed steps of size (T − t_min)/steps (or the initial size when ``adaptive``); the Brownian
    motion is a ``torchsde.BrownianInterval`` seeded by ``entropy``.
    """
    batch = x_T.shape[0]
    y0 = x_T.reshape(batch, -1)
    span = sde.T - t_min
    t_out = (
        torch.tensor([sde.T, t_min], dtype=torch.float64) if record_times is None else record_times
    )
    us = (sde.T - t_out).to(dtype=y0.dtype, device=y0.device)
    us[0], us[-1] = 0.0, span
    levy = "space-time" if method == "srk" else "none"
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=max(span, float(us[-1])),  # us is in x's dtype: float32 may round span up
        size=y0.shape,
        dtype=y0.dtype,
        device=y0.device,
        entropy=entropy,
        levy_area_approximation=levy,
    )
    model = ReverseTorchsde(
        sde, score, tuple(x_T.shape), probability_flow, SDE_TYPE_OF_METHOD[method]
    )
    # a hair over span/steps so that round-off never adds a tiny extra step
    dt = span / steps * (1 + 1e-9)
    with torch.no_grad():
        ys = torchsde.sdeint(
            model, y0, us, bm=bm, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol
        )
    return ys[-1].reshape(x_T.shape), ys.reshape((len(us),) + tuple(x_T.shape))
