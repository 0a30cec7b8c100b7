"""Any ``nn.Module`` as sde_gen's score model: the network, its SDE, what its output means
(``models.parametrisation``), the time it takes (``models.network_time``) and how a learned
variance reads (``models.learned_variance``), checked once here.

``wrap_network`` is the Python entry (a guided-diffusion U-Net: ``Eps`` or learned-range output,
``DiscreteIndex(1000, 1)``; a score_sde NCSN++: ``Score``, ``Sigma``; an EDM network: ``EDM``,
``EDMNoise``); ``score_model_from_config`` builds the same from a ``model`` config node whose
nested ``param``, ``time`` and ``variance`` groups it pops off the network's node.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sde_gen.models.learned_variance import LearnedVariance, SigmoidRange
from sde_gen.models.network_time import NetworkTime, SDETime
from sde_gen.models.parametrisation import Eps, Parametrisation
from sde_gen.models.score_model import ScoreModel
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.sde import SDE

__all__ = ["wrap_network", "probe", "score_model_from_config", "PARTS"]

PARTS = ("param", "time", "variance")
"""The keys of a ``model`` node that are not the network's: its parametrisation, time and
learned-variance convention."""


def wrap_network(
    module: nn.Module,
    sde: SDE,
    param: Parametrisation | None = None,
    time: NetworkTime | None = None,
    sample_shape: tuple[int, ...] | None = None,
    variance: LearnedVariance | None = None,
) -> ScoreModel:
    """The score model s_θ(x, t) = −ε̂/σ_t of ``module`` (called as ``module(x, net_time)``),
    whose output means ``param`` (default ε) at the time ``time(sde, t)`` (default the SDE's t),
    a learned variance read by ``variance`` (default ``SigmoidRange``).
    With ``sample_shape`` (one sample's shape, e.g. (3, 32, 32)) one forward pass on two samples
    at t = T/2 probes that the network takes it. Each bad argument is a one-line ValueError."""
    _check("module", module, nn.Module, "a torch.nn.Module called as module(x, t)")
    _check("sde", sde, SDE, "an sde_gen.sde.SDE (e.g. sde_gen.sde.DiscreteVPSDE(betas))")
    param = Eps() if param is None else param
    time = SDETime() if time is None else time
    variance = SigmoidRange() if variance is None else variance
    _check("param", param, Parametrisation, "a Parametrisation (Eps(), X0(), V(), Score(), EDM())")
    _check("time", time, NetworkTime, "a NetworkTime (SDETime(), DiscreteIndex(N, 1), Sigma() …)")
    what = "a LearnedVariance (SigmoidRange(), LinearRange(), Direct())"
    _check("variance", variance, LearnedVariance, what)
    model = ScoreModel(module, sde, param, time, variance)
    if sample_shape is not None:
        probe(model, sample_shape)
    return model


def _check(key: str, value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{key}={type(value).__name__} is invalid: need {what}")


@torch.no_grad()
def probe(model: ScoreModel, sample_shape: tuple[int, ...]) -> None:
    """ε̂ of two zero samples of ``sample_shape`` at t = T/2 must have their shape; else a
    ValueError naming the shape and the network's complaint."""
    if not (
        isinstance(sample_shape, tuple | list)
        and len(sample_shape) >= 1
        and all(isinstance(s, int) and s >= 1 for s in sample_shape)
    ):
        raise ValueError(f"sample_shape={sample_shape!r} is invalid: need a tuple of ints >= 1")
    weight = next(model.eps_net.parameters(), None)
    dtype = weight.dtype if weight is not None else torch.get_default_dtype()
    device = weight.device if weight is not None else torch.device("cpu")
    x = torch.zeros((2, *sample_shape), dtype=dtype, device=device)
    t = torch.full((2,), 0.5 * model.sde.T, dtype=dtype, device=device)
    try:
        out = model.eps(x, t)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"module does not take samples of shape {tuple(sample_shape)}: {e}") from e
    if out.shape != x.shape:
        raise ValueError(
            f"module returns shape {tuple(out.shape[1:])} for samples of shape "
            f"{tuple(sample_shape)}"
        )


def network_node(node: DictConfig | dict) -> dict[str, Any]:
    """The network's own part of a ``model`` node: without its ``PARTS`` subnodes."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {k: v for k, v in plain.items() if k not in PARTS}


def score_model_from_config(
    node: DictConfig | dict, sde: SDE, shape: tuple[int, ...]
) -> ScoreModel:
    """The ``model`` node as a score model: its ``param``, ``time`` and ``variance`` subnodes
    (absent: ε, the SDE's own time and ``SigmoidRange``, as in checkpoints written before they
    existed) are built apart, the rest is the network, built with ``shape=`` the data's shape. A
    node that builds a whole ``ScoreModel`` (``model=diffusers``: its SDE, parametrisation, time
    and variance convention from the folder) is returned as it is. Errors name ``model`` or its
    part (``model.param`` …)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    eps_net = instantiate_group("model", network_node(plain), shape=shape)
    if isinstance(eps_net, ScoreModel):  # a loader (model=diffusers) brings all of it
        for key in PARTS:
            if plain.get(key) is not None:
                raise ValueError(
                    f"model.{key} is set by the loaded model itself ({key}="
                    f"{getattr(eps_net, key)!r}); drop model/{key}"
                )
        return eps_net
    param = _part("model.param", plain.get("param"))
    time = _part("model.time", plain.get("time"))
    variance = _part("model.variance", plain.get("variance"))
    return wrap_network(eps_net, sde, param, time, variance=variance)


def _part(group: str, node: Any) -> Any:
    return None if node is None else instantiate_group(group, node)
