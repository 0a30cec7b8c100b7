"""Reverse-time samplers, one file a family, all called as
``solver(sde, score_fn, x_T, generator=None, record=False) -> SampleResult``."""

from sde_gen.solvers.adaptive import AdaptiveDPM, AdaptiveUniPC
from sde_gen.solvers.analytic_dpm import AnalyticDPM
from sde_gen.solvers.ancestral import Ancestral, Variance
from sde_gen.solvers.base import FinalStep, FixedStepSolver, SampleResult, Solver
from sde_gen.solvers.ddim import DDIM
from sde_gen.solvers.deis import DEIS
from sde_gen.solvers.dpm2 import DPM2
from sde_gen.solvers.dpm_singlestep import DPMSolverSinglestep
from sde_gen.solvers.dpm_solver import DPMSolver
from sde_gen.solvers.edm_stochastic import EDMStochastic
from sde_gen.solvers.euler_maruyama import EulerMaruyama
from sde_gen.solvers.first_eval import FirstEval
from sde_gen.solvers.fit_grid import FittedGrid, fit_grid
from sde_gen.solvers.grids import (
    Grid,
    KarrasGrid,
    LogSNRGrid,
    QuadraticGrid,
    TrailingGrid,
    UniformGrid,
)
from sde_gen.solvers.heun import Heun
from sde_gen.solvers.lms import LMS
from sde_gen.solvers.optimal_trajectory import OptimalTrajectory
from sde_gen.solvers.pc import EulerMaruyamaPredictor, PredictorCorrector, ReverseDiffusionPredictor
from sde_gen.solvers.pf_ode import (
    PFODE,
    AngleCoordinates,
    ScaledCoordinates,
    ScipyODE,
    TimeCoordinates,
    TorchsdeODE,
)
from sde_gen.solvers.pndm import PNDM, Start
from sde_gen.solvers.sa_solver import SASolver
from sde_gen.solvers.sde_dpm_solver import SDEDPMSolver, SecondOrder
from sde_gen.solvers.torchsde_solver import TorchsdeSolver
from sde_gen.solvers.unipc import UniPC, Variant

__all__ = [
    "Solver",
    "FixedStepSolver",
    "SampleResult",
    "FinalStep",
    "FirstEval",
    "Ancestral",
    "AnalyticDPM",
    "OptimalTrajectory",
    "Variance",
    "EulerMaruyama",
    "PredictorCorrector",
    "ReverseDiffusionPredictor",
    "EulerMaruyamaPredictor",
    "PFODE",
    "ScipyODE",
    "ScaledCoordinates",
    "AngleCoordinates",
    "TimeCoordinates",
    "TorchsdeODE",
    "TorchsdeSolver",
    "DDIM",
    "Heun",
    "DPMSolver",
    "DEIS",
    "PNDM",
    "LMS",
    "DPMSolverSinglestep",
    "SDEDPMSolver",
    "DPM2",
    "EDMStochastic",
    "SASolver",
    "SecondOrder",
    "Start",
    "UniPC",
    "Variant",
    "AdaptiveUniPC",
    "AdaptiveDPM",
    "Grid",
    "UniformGrid",
    "QuadraticGrid",
    "LogSNRGrid",
    "KarrasGrid",
    "TrailingGrid",
    "FittedGrid",
    "fit_grid",
]
