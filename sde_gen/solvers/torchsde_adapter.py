"""The reverse-time SDE (or probability-flow ODE) as a ``torchsde`` object in flipped time.

torchsde integrates forward in time, so with u = T − t the reverse SDE of survey §4.3 becomes
dx = −[f(t) x − g(t)² s_θ(x, t)] du + g(t) dw_u  (``probability_flow=False``) and the PF-ODE
dx = −[f(t) x − ½ g(t)² s_θ(x, t)] du (``probability_flow=True``, zero diffusion).
Images are flattened to (batch, channels) as torchsde requires; the noise is diagonal and additive,
so Itô and Stratonovich methods integrate the same equation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchsde
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.conversions import drift
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers.base import coefficients_at

__all__ = [
    "ReverseTorchsde",
    "TorchsdeMethod",
    "METHODS",
    "check_method",
    "torchsde_integrate",
]


@dataclass(frozen=True)
class TorchsdeMethod:
    """What a torchsde method is on our additive-noise SDEs: the ``sde_type`` it expects, its
    convergence order on the drift (measured on the PF-ODE, tests/test_solvers.py), and its drift
    evaluations: ``evals_per_step`` a step plus ``extra_evals`` once (torchsde's shape check)."""

    sde_type: str
    order: float
    evals_per_step: int
    extra_evals: int = 1

    def nfe(self, steps: int) -> int:
        """Drift evaluations of ``steps`` fixed steps."""
        return steps * self.evals_per_step + self.extra_evals


METHODS = {
    "euler": TorchsdeMethod("ito", 1.0, 1),
    "milstein": TorchsdeMethod("ito", 1.0, 1),
    "srk": TorchsdeMethod("ito", 3.0, 10),
    "midpoint": TorchsdeMethod("stratonovich", 2.0, 2),
    "heun": TorchsdeMethod("stratonovich", 2.0, 2),
    "euler_heun": TorchsdeMethod("stratonovich", 1.0, 1),
    "reversible_heun": TorchsdeMethod("stratonovich", 2.0, 1, extra_evals=2),
}


def check_method(method: str) -> TorchsdeMethod:
    """The ``TorchsdeMethod`` named ``method``, else a ValueError listing the allowed names."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; allowed: {list(METHODS)}")
    return METHODS[method]


class ReverseTorchsde(torch.nn.Module):
    """f(u, y), g(u, y) of the reverse SDE / PF-ODE at t = T − u, on y of shape (B, D)."""

    noise_type = "diagonal"

    def __init__(
        self,
        sde: SDE,
        score: ScoreFn,
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
        c = coefficients_at(self.sde, t)
        weight = 0.5 if self.probability_flow else 1.0
        dx = drift(x, self.score(x, t), c.f, c.g2, weight)
        return -dx.reshape(y.shape)

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        if self.probability_flow:
            return torch.zeros_like(y)
        g = float(self.sde.g(torch.tensor([self._t(u)], dtype=torch.float64))[0])
        return torch.full_like(y, g)


def torchsde_integrate(
    sde: SDE,
    score: ScoreFn,
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
        sde, score, tuple(x_T.shape), probability_flow, METHODS[method].sde_type
    )
    # a hair over span/steps so that round-off never adds a tiny extra step
    dt = span / steps * (1 + 1e-9)
    with torch.no_grad():
        ys = torchsde.sdeint(
            model, y0, us, bm=bm, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol
        )
    return ys[-1].reshape(x_T.shape), ys.reshape((len(us),) + tuple(x_T.shape))
