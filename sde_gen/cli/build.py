"""Objects from config groups, built early so that a bad value fails at once, naming its group.

``instantiate_group`` wraps ``hydra.utils.instantiate``; ``build_training`` instantiates every
group of a training run (sde, data, model, loss, solver) and probes that they fit together before
anything is trained or written; ``bytes_per_sample`` probes what a sample costs in memory, so the
command lines refuse absurd sizes before allocating them.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.wrap import network_node, score_model_from_config
from sde_gen.runtime.instantiate import check_parameter_memory, instantiate_group
from sde_gen.runtime.resources import activation_bytes

log = logging.getLogger(__name__)

__all__ = ["match_bins", "build_training", "Parts", "bytes_per_sample", "with_steps"]


@dataclass
class Parts:
    """Everything a training run is built from, instantiated from the config groups."""

    sde: Any
    data: Any
    model: ScoreModel
    loss_fn: Any
    solver: Any


def match_bins(loss_fn: Any, data: Any) -> None:
    """Give a discrete-decoder loss the data's number of levels (``num_bins: null``), or reject
    an explicit value that disagrees with the data's quantisation."""
    if not hasattr(loss_fn, "num_bins"):
        return
    if loss_fn.num_bins is None:
        loss_fn.num_bins = data.num_bins
    elif data.num_bins is not None and loss_fn.num_bins != data.num_bins:
        raise ValueError(
            f"loss.num_bins={loss_fn.num_bins} but the data have {data.num_bins} levels; "
            "set loss.num_bins=null to take it from the data"
        )


def with_steps(solver_cfg: DictConfig, steps: int | None) -> DictConfig:
    """The solver's config with the command's budget ``steps`` (the key every solver takes, so a
    sweep mixes fixed-step and adaptive solvers): a fixed-step solver (one whose config has
    ``steps``) gets ``solver.steps = steps``; an adaptive one has no steps, keeps its tolerances,
    and the log says so. ``steps=None`` leaves the config as it is."""
    if steps is None:
        return solver_cfg
    if "steps" not in solver_cfg:
        log.info(
            "steps=%d does not apply to %s: adaptive, its tolerances set its evaluations",
            steps,
            solver_cfg.get("_target_", "this solver"),
        )
        return solver_cfg
    out = copy.deepcopy(solver_cfg)
    with open_dict(out):
        out.steps = steps
    return out


TRAINING_COPIES = 5
"""Copies of every parameter training holds: weights, gradients, EMA weights, Adam's two moments."""


def build_training(cfg: Any, device: torch.device | None = None) -> Parts:
    """Instantiate the groups of a training config (``sde``, ``data``, ``model`` with its nested
    ``model/param`` and ``model/time``, ``loss`` and ``solver``) and probe that the network
    takes the data and the loss takes the network.

    Called after seeding, so the network's initial weights follow the seed. The network's
    parameters are counted before it is built: ``TRAINING_COPIES`` of them must fit ``device``
    (default the CPU), one the CPU where it is built. A model node that builds a whole score model
    (``model=diffusers model.path=<folder>``: fine-tuning) brings its own SDE, which replaces
    ``cfg.sde``.
    """
    sde = instantiate_group("sde", cfg.sde)
    data = instantiate_group("data", cfg.data)
    shape, cpu = tuple(data.shape), torch.device("cpu")
    device = cpu if device is None else device
    net_node = network_node(cfg.model)
    check_parameter_memory("model", net_node, device, TRAINING_COPIES, shape=shape)
    if device != cpu:
        check_parameter_memory("model", net_node, cpu, 1, shape=shape)
    model = score_model_from_config(cfg.model, sde, shape)
    sde = model.sde
    _probe_model(model, data)
    loss_fn = instantiate_group("loss", cfg.loss)
    match_bins(loss_fn, data)
    _probe_loss(loss_fn, model, data)
    solver = instantiate_group("solver", cfg.solver) if cfg.solver is not None else None
    return Parts(sde=sde, data=data, model=model, loss_fn=loss_fn, solver=solver)


@torch.no_grad()
def _probe_model(model: ScoreModel, data: Any) -> None:
    """One forward pass on two data points: the network must accept the data's shape."""
    x = data.sample(2, torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.5, dtype=x.dtype)
    was_training = model.training
    model.eval()
    try:
        out = model.eps(x, t)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"model does not fit data of shape {tuple(data.shape)}: {e}") from e
    finally:
        model.train(was_training)
    if out.shape != x.shape:
        raise ValueError(
            f"model returns ε of shape {tuple(out.shape[1:])} for data of shape {tuple(data.shape)}"
        )


@torch.no_grad()
def _probe_loss(loss_fn: Any, model: ScoreModel, data: Any) -> None:
    """The loss on two data points (a copy, so stateful losses keep their state): the loss must
    accept this model and SDE, e.g. a DDPM loss needs the matching discrete SDE."""
    x = data.sample(2, torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        value = copy.deepcopy(loss_fn)(model, x, torch.Generator().manual_seed(0))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"loss {type(loss_fn).__name__} does not fit the model/SDE: {e}") from e
    finally:
        model.train(was_training)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        name = type(loss_fn).__name__
        raise ValueError(f"loss {name} must return a scalar tensor, got {value!r}")


def bytes_per_sample(
    model: torch.nn.Module | None,
    data: Any,
    dtype: torch.dtype,
    device: torch.device,
    *,
    grad: bool = False,
    copies: int = 8,
) -> float:
    """Memory one sample needs at once: ``copies`` tensors of its size (state, noise, drift …),
    plus the network's layer outputs (:func:`activation_bytes`, probed on two samples), or for an
    exact mixture score the (K, D) differences to its K means."""
    shape = tuple(int(s) for s in data.shape)
    item = torch.empty((), dtype=dtype).element_size()
    per = copies * math.prod(shape) * item
    if model is not None:
        x = torch.zeros((2, *shape), dtype=dtype, device=device)
        t = torch.full((2,), 0.5, dtype=dtype, device=device)
        per += activation_bytes(model, x, t, grad)
    elif data.exact is not None:
        per += 4 * len(data.exact.means) * math.prod(shape) * item
    return per
