"""sde_gen: score-based diffusion generative models as stochastic differential equations."""

from sde_gen.sde import SDE, VESDE, VPSDE, DiscreteVPSDE, LinearSDE, SubVPSDE

__version__ = "0.1.0"
__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "DiscreteVPSDE"]
