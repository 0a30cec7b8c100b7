"""The reverse-time SDE (survey §4.3) integrated by ``torchsde.sdeint`` in flipped time."""

from __future__ import annotations

import torch
from torch import Tensor

from sde_gen.solvers.base import Solver, check_int
from sde_gen.solvers.torchsde_adapter import check_method, torchsde_integrate

__all__ = ["TorchsdeSolver"]


class TorchsdeSolver(Solver):
    """``torchsde.sdeint`` with ``steps`` fixed steps of size (T − t_min)/steps (method euler,
    milstein, srk, midpoint, heun, euler_heun, reversible_heun: the noise is additive, so each
    integrates the same SDE). The ``torchsde.BrownianInterval`` is seeded from ``generator``.
    nfe counts every drift evaluation, including torchsde's initial shape check; ``order`` and
    ``evals_per_step`` are the method's (``torchsde_adapter.METHODS``).
    """

    order: float = 1.0
    stochastic = True
    evals_per_step: int | None = 1
    adaptive = False

    def __init__(
        self,
        method: str = "euler",
        steps: int = 500,
        t_min: float = 1e-3,
        denoise_final: bool = True,
        progress: bool = False,
    ):
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        self._method = check_method(method)
        self.method = method
        self.steps = check_int("steps", steps, 1)
        self.order, self.evals_per_step = self._method.order, self._method.evals_per_step

    def __repr__(self) -> str:
        return (
            f"TorchsdeSolver(method={self.method!r}, steps={self.steps}, t_min={self.t_min}, "
            f"denoise_final={self.denoise_final})"
        )

    def expected_nfe(self) -> int:
        return self._method.nfe(self.steps) + int(self.denoise_final)

    def integrate(self, sde, score, x_T, generator, keep, record) -> Tensor:
        device = generator.device if generator is not None else None
        entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        times = None
        if record:
            times = torch.linspace(sde.T, self.t_min, self.steps + 1, dtype=torch.float64)
        x0, path = torchsde_integrate(
            sde,
            score,
            x_T,
            self.t_min,
            probability_flow=False,
            method=self.method,
            steps=self.steps,
            record_times=times,
            entropy=entropy,
        )
        if record:
            for t, x in zip(times.tolist(), path, strict=True):
                keep(t, x)
        return x0
