"""A checkpoint's state built by hand for the tests that load one: the training format's keys
(``training.checkpoint.FORMAT_VERSION``) with a model, its EMA and its stored config."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel


def checkpoint_state(
    model: nn.Module,
    config: DictConfig | dict | Any,
    step: int = 0,
    ema: AveragedModel | None = None,
    rng: dict | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The state ``save_checkpoint`` writes: ``model``'s weights, ``ema``'s (default an average
    of ``model`` as it is now), ``config`` (a dict or DictConfig dumped to YAML; anything else,
    e.g. crafted text, stored as it is), empty optimizer and scheduler, ``rng`` (default {}) and
    any ``extra`` keys."""
    from sde_gen.training.checkpoint import FORMAT_VERSION

    dumped = isinstance(config, dict | DictConfig)
    text = OmegaConf.to_yaml(OmegaConf.create(config)) if dumped else config
    return {
        "format": FORMAT_VERSION,
        "step": step,
        "model": model.state_dict(),
        "ema": (AveragedModel(model) if ema is None else ema).state_dict(),
        "optimizer": {},
        "scheduler": {},
        "config": text,
        "rng": {} if rng is None else rng,
        **extra,
    }
