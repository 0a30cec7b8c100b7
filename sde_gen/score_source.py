"""Where the CLIs get a score: a trained checkpoint or the exact score of a Gaussian mixture."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sde_gen.data.base import DataSource
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


def load_score_source(
    cfg: DictConfig, device: torch.device, data_chosen: bool = False
) -> ScoreSource:
    """A trained ScoreModel (``cfg.checkpoint``, EMA weights unless ``cfg.ema`` is false), or the
    exact score of the Gaussian-mixture ``cfg.data`` diffused by ``cfg.sde``.

    With a checkpoint, ``cfg.data`` is used only when ``data_chosen`` (given on the command line),
    and must then have the trained shape.
    """
    if cfg.checkpoint:
        from sde_gen.checkpoint import load_score_model

        model, train_cfg, data = load_score_model(cfg.checkpoint, device, ema=bool(cfg.ema))
        model.requires_grad_(False)
        if data_chosen:
            chosen = instantiate(cfg.data)
            if data_shape(chosen) != data_shape(data):
                raise ValueError(
                    f"checkpoint {cfg.checkpoint!r} was trained on data of shape "
                    f"{data_shape(data)} ({train_cfg.data.get('_target_')}), but data= gives "
                    f"shape {data_shape(chosen)} ({cfg.data.get('_target_')}); drop data= or pick "
                    "a data set of the trained shape"
                )
            data = chosen
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
