"""Where the CLIs get a score: a trained checkpoint, a model node that builds a whole score model
(``model=diffusers model.path=<folder>``) or the exact score of a Gaussian mixture."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sde_gen.data.base import DataSource, ShapeOnly
from sde_gen.models.score_model import ScoreModel
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.sde import SDE

log = logging.getLogger(__name__)


@dataclass
class ScoreSource:
    """An SDE, its score function, the data it stands for, the dtype the score runs in, where it
    came from (``checkpoint:<path>``, ``model:<target>`` or ``exact``), the trained model, if
    any, and ``facts`` for the run's summary (a loaded model's path and x̂0 clipping)."""

    sde: SDE
    score_fn: object
    data: DataSource
    dtype: torch.dtype
    origin: str
    model: torch.nn.Module | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def data_shape(data: DataSource) -> tuple[int, ...]:
    return tuple(int(s) for s in data.shape)


def names_data(overrides: list[str]) -> bool:
    """Whether command-line ``overrides`` name the ``data`` group or one of its keys."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return any(k == "data" or k.startswith("data.") for k in keys)


def load_score_source(
    cfg: DictConfig, device: torch.device, data_chosen: bool = False
) -> ScoreSource:
    """A trained ScoreModel (``cfg.checkpoint``, EMA weights unless ``cfg.ema`` is false), or the
    exact score of the Gaussian-mixture ``cfg.data`` diffused by ``cfg.sde``.

    A ``cfg.model`` node (``model=diffusers model.path=<folder>``) builds the score model with
    its own SDE (``load_model_node``). With a checkpoint, ``cfg.data`` is used only when
    ``data_chosen`` (given on the command line, e.g. ``data=npz data.path=<file>`` for a moved or
    missing training file), and must then have the trained shape; otherwise the trained data set
    is rebuilt from the checkpoint (``checkpoint.load_score_model``: only sde_gen's own classes,
    and a missing data file is an error naming it, or a shape-only source when the checkpoint
    records the shape).
    """
    if cfg.get("model") is not None:
        return load_model_node(cfg, device, data_chosen)
    if cfg.checkpoint:
        from sde_gen.networks.checkpoint import load_score_model

        chosen = cfg.data if data_chosen else None
        model, _, data = load_score_model(cfg.checkpoint, device, ema=bool(cfg.ema), data=chosen)
        model.requires_grad_(False)
        origin = f"checkpoint:{cfg.checkpoint}"
        return ScoreSource(model.sde, model, data, torch.float32, origin, model)
    data = instantiate(cfg.data)
    if data.exact is None:
        raise ValueError(
            f"data={cfg.data.get('_target_')} has no exact score: give checkpoint=<path> of a "
            "trained model, or a Gaussian-mixture data config (ring, mixture2d, mixture64)"
        )
    sde = instantiate(cfg.sde)
    return ScoreSource(sde, data.exact.score_fn(sde), data, torch.float64, "exact")


def load_model_node(cfg: DictConfig, device: torch.device, data_chosen: bool) -> ScoreSource:
    """The score model a ``cfg.model`` node with a ``path`` builds (with its SDE; ``cfg.sde`` is
    ignored).

    ``cfg.data`` is used only when ``data_chosen`` and must have the model's sample shape (the
    node gets it as ``shape=``); otherwise the data are shape-only (sampling needs no more)."""
    if cfg.get("checkpoint"):
        raise ValueError("give checkpoint=<path> or model=<name>, not both")
    target = cfg.model.get("_target_")
    if "path" not in cfg.model:
        raise ValueError(
            f"model={target} is a network to train, not a saved model: the sampling and "
            "evaluation commands take model=diffusers model.path=<folder> (or "
            "checkpoint=<step_*.pt> of a trained network)"
        )
    data = instantiate_group("data", cfg.data) if data_chosen else None
    shape = None if data is None else data_shape(data)
    model = instantiate_group("model", cfg.model, shape=shape)
    if not isinstance(model, ScoreModel):
        raise ValueError(
            f"model={target} builds a {type(model).__name__}, not a score model: the sampling "
            "and evaluation commands take model=diffusers model.path=<folder>"
        )
    if data is None:
        why = (
            f"model={target} has no data set of its own: give one of its shape "
            f"{model.eps_net.sample_shape} with data=cifar10 or data=npz data.path=<file>"
        )
        data = ShapeOnly(model.eps_net.sample_shape, 256, why)
    clip = cfg.model.get("clip_x0")
    facts = {
        "model_path": str(cfg.model.get("path")),
        "clip_x0": None if clip is None else [float(c) for c in clip],
    }
    log.info(
        "model %s: %r, %r, time %r, clip_x0=%s (diffusers' clip_sample clamps x̂0 to [-1, 1]; "
        "model.clip_x0=[-1,1] does the same)",
        facts["model_path"],
        model.sde,
        model.param,
        model.time,
        facts["clip_x0"],
    )
    model.to(device).eval().requires_grad_(False)
    origin = f"model:{facts['model_path']}"
    return ScoreSource(model.sde, model, data, torch.float32, origin, model, facts)
