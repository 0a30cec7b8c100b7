"""Forward processes dx = f(t) x dt + g(t) dw and their Gaussian marginals (survey §4.1–4.2).

One family a module: ``base`` (the contract ``SDE``), ``vp`` (VP and sub-VP on ``LinearBeta``),
``ve``, ``linear`` (any f, g, integrated numerically), ``discrete`` (the DDPM chain); the
score/noise/data/drift identities live once in ``conversions``.
"""

from sde_gen.sde.base import SDE, Coefficients, expand_as
from sde_gen.sde.conversions import (
    drift,
    eps_from_score,
    score_from_eps,
    score_from_x0,
    x0_from_score,
)
from sde_gen.sde.discrete import DiscreteVPSDE
from sde_gen.sde.linear import LinearSDE, Polynomial
from sde_gen.sde.vdm import VDMSDE, LearnedNegLogSNR, NegLogSNR
from sde_gen.sde.ve import VESDE
from sde_gen.sde.vp import VPSDE, LinearBeta, SubVPSDE

__all__ = [
    "SDE",
    "Coefficients",
    "VPSDE",
    "SubVPSDE",
    "LinearBeta",
    "VESDE",
    "LinearSDE",
    "DiscreteVPSDE",
    "VDMSDE",
    "NegLogSNR",
    "LearnedNegLogSNR",
    "Polynomial",
    "expand_as",
    "x0_from_score",
    "score_from_x0",
    "eps_from_score",
    "score_from_eps",
    "drift",
]
