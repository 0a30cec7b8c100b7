"""Where the CLIs get a score: a trained checkpoint or the exact score of a Gaussian mixture."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from sde_gen.data.base import DataSource
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.sde import SDE


@dataclass
class ScoreSource:
    """An SDE, its score function, the data it stands for, the dtype the score runs in, where it
    came from (``checkpoint:<path>`` or ``exact``) and the trained model, if any."""

    sde: SDE
    score_fn: object
    data: DataSource
    dtype: torch.dtype
    origin: str
    model: torch.nn.Module | None = None


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

    With a checkpoint, ``cfg.data`` is used only when ``data_chosen`` (given on the command line,
    e.g. ``data=npz data.path=<file>`` for a moved or missing training file), and must then have
    the trained shape; otherwise the trained data set is rebuilt from the checkpoint
    (``checkpoint.load_score_model``: only sde_gen's own classes, and a missing data file is an
    error naming it, or a shape-only source when the checkpoint records the shape).
    """
    if cfg.checkpoint:
        from sde_gen.networks.checkpoint import load_score_model

        chosen = cfg.data if data_chosen else None
        model, _, data = load_score_model(cfg.checkpoint, device, ema=bool(cfg.ema), data=chosen)
        model.requires_grad_(False)
        origin = f"checkpoint:{cfg.checkpoint}"
        return ScoreSource(model.sde, model, data, torch.float32, origin, model)
    data = instantiate_group("data", cfg.data)
    if data.exact is None:
        raise ValueError(
            f"data={cfg.data.get('_target_')} has no exact score: give checkpoint=<path> of a "
            "trained model, or a Gaussian-mixture data config (ring, mixture2d, mixture64)"
        )
    sde = instantiate_group("sde", cfg.sde)
    return ScoreSource(sde, data.exact.score_fn(sde), data, torch.float64, "exact")
