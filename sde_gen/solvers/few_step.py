"""The declarations the few-step solvers of the fast-sampling literature share (DPM-Solver,
DEIS, UniPC, SA-Solver, LMS, DPM-2): 20 steps on the λ-uniform grid, one score evaluation a
step, deterministic; a solver states only where it differs, and writes its step."""

from __future__ import annotations

from typing import ClassVar

from sde_gen.solvers.base import FixedStepSolver
from sde_gen.solvers.grids import Grid, LogSNRGrid

__all__ = ["FewStepSolver"]


class FewStepSolver(FixedStepSolver):
    """A ``FixedStepSolver`` with the few-step defaults above (``steps`` 20, ``LogSNRGrid``)."""

    stochastic = False
    evals_per_step = 1
    default_steps = 20
    default_grid: ClassVar[Grid] = LogSNRGrid()
