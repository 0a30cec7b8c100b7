"""Reverse-time samplers, one file a family, all called as
``solver(sde, score_fn, x_T, generator=None, record=False) -> SampleResult``."""

from sde_gen.solvers.ancestral import Ancestral
from sde_gen.solvers.base import FixedStepSolver, SampleResult, Solver
from sde_gen.solvers.ddim import DDIM
from sde_gen.solvers.dpm_solver import DPMSolver
from sde_gen.solvers.euler_maruyama import EulerMaruyama
from sde_gen.solvers.grids import Grid, KarrasGrid, LogSNRGrid, QuadraticGrid, UniformGrid
from sde_gen.solvers.heun import Heun
from sde_gen.solvers.pc import EulerMaruyamaPredictor, PredictorCorrector, ReverseDiffusionPredictor
from sde_gen.solvers.pf_ode import (
    PFODE,
    ScaledCoordinates,
    ScipyODE,
    TimeCoordinates,
    TorchsdeODE,
)
from sde_gen.solvers.torchsde_solver import TorchsdeSolver

__all__ = [
    "Solver",
    "FixedStepSolver",
    "SampleResult",
    "Ancestral",
    "EulerMaruyama",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "EulerMaruyamaPredictor",
    "PFODE",
    "ScipyODE",
    "ScaledCoordinates",
    "TimeCoordinates",
    "TorchsdeODE",
    "TorchsdeSolver",
    "DDIM",
    "Heun",
    "DPMSolver",
    "Grid",
    "UniformGrid",
    "QuadraticGrid",
    "LogSNRGrid",
    "KarrasGrid",
]
