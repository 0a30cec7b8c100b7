"""Convergence orders of solvers measured against an exact-score mixture's probability-flow ODE
(the end-point error's slope in log–log over a range of step counts), shared by the solver tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from sde_gen.metrics.mixtures import mixture_flow


def exact_flow(mixture, sde, t_min: float, n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(x_T, the exact PF-ODE's end point at t_min) for n float64 draws of the prior."""
    x_T = sde.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x_T, mixture_flow(mixture, sde, x_T, t_min, rtol=1e-12, atol=1e-12)[0]


def measured_order(
    solve: Callable[[int], Tensor], exact: Tensor, steps: Sequence[int]
) -> tuple[float, list[float]]:
    """(−slope of log max|x0 − exact| against log steps, the errors) for ``solve(steps) → x0``."""
    errs = [(solve(n) - exact).abs().max().item() for n in steps]
    return -float(np.polyfit(np.log(steps), np.log(errs), 1)[0]), errs


def assert_first_order_is_ddim(solver, t_min: float) -> None:
    """``solver`` (at order one) gives DDIM's η = 0 samples on its own grid, steps and final step,
    to 1e-12 in float64, on a 4-mode ring diffused by the VP SDE."""
    from sde_gen.data import ring_mixture
    from sde_gen.sde import VPSDE
    from sde_gen.solvers import DDIM

    sde = VPSDE()
    score = ring_mixture(num_modes=4, std=0.5).score_fn(sde)
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = DDIM(solver.steps, t_min, solver.grid, final_step=solver.final_step.value)
    a, b = solver(sde, score, x_T).x0, ddim(sde, score, x_T).x0
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
