"""A checkpoint of sde_gen becomes a score model: its stored config is checked (``guard``), the
SDE, data and network are rebuilt, and the EMA or raw weights are loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sde_gen.data.base import DataSource
from sde_gen.networks.guard import deferred_trained_data, stored_config, trained_shape
from sde_gen.networks.wrap import network_node, score_model_from_config
from sde_gen.runtime.instantiate import check_parameter_memory, instantiate_group
from sde_gen.training.checkpoint import (
    ema_weights,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
)


def load_score_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    ema: bool = True,
    data: Any = None,
):  # -> tuple[ScoreModel, DictConfig, DataSource]
    """(ScoreModel, config, data) rebuilt from a checkpoint's stored config; EMA or raw weights.

    The SDE, data and network come from the config the run was trained with (``sde``, ``data``,
    ``model`` groups; ``model.param`` and ``model.time`` give the parametrisation and the time
    convention, ε and the SDE's t when absent), checked by ``guard.stored_config`` before
    anything is built: only sde_gen's own classes and functions, no interpolations. ``data``
    (a DataSource, or a data config node such as ``data=npz data.path=<file>``) replaces the
    trained data set and must have its shape. If the trained data set's file is gone and no
    ``data`` is given, sampling still works when the checkpoint records ``data_info`` ({shape,
    num_bins}): the data are then a ``ShapeOnly`` source whose draws name the missing file
    (``guard.trained_data``). A data set that names a ``path`` is read only when drawn from
    (``guard.deferred_trained_data``).
    """

    where = f"checkpoint {str(path)!r}"
    if Path(path).is_dir():
        latest = latest_checkpoint(path)
        hint = f", e.g. {str(latest)!r}" if latest is not None else ""
        raise ValueError(f"{where} is a directory, not a checkpoint file; give a step_*.pt{hint}")
    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = stored_config(state["config"])
        sde = instantiate_group("sde", cfg.sde)
        source = deferred_trained_data(cfg.data, state.get("data_info")) if data is None else None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    if data is not None:
        chosen = data if isinstance(data, DataSource) else instantiate_group("data", data)
        shape = trained_shape(cfg.data, state.get("data_info"))
        if shape is not None and tuple(chosen.shape) != shape:
            raise ValueError(
                f"{where} was trained on data of shape {shape} ({cfg.data.get('_target_')}), "
                f"but data= gives shape {tuple(chosen.shape)} ({type(chosen).__name__}); drop "
                "data= or pick a data set of the trained shape"
            )
        source = chosen
    try:
        shape = tuple(source.shape)
        check_parameter_memory(
            "model", network_node(cfg.model), torch.device("cpu"), 1, shape=shape
        )
        model = score_model_from_config(cfg.model, sde, shape)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    weights = ema_weights(state["ema"]) if ema else state["model"]
    load_weights(model, weights, path, what="EMA model" if ema else "model")
    model.to(device).eval()
    return model, cfg, source


__all__ = ["load_score_model"]
