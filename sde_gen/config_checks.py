"""Validation of a composed training config before anything is trained or written.

``check_trainer_settings`` checks the loop's numbers; ``build`` validates the top-level keys and
instantiates every group (sde, data, model, loss, solver) early, so a bad value fails at once with a
ValueError naming the key, not after minutes of training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_TRAINER_KEYS_IGNORED = ("_target_", "_partial_")
TRAINER_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "weight_decay",
    "betas",
    "warmup_steps",
    "grad_clip",
    "ema_decay",
    "log_every",
    "sample_every",
    "sample_count",
    "checkpoint_every",
    "keep_checkpoints",
    "checkpoint_dir",
    "resume",
    "progress",
)
"""Keys of the ``trainer`` group: the keyword arguments of ``sde_gen.trainer.Trainer``."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(key: str, value: Any, need: str) -> None:
    raise ValueError(f"{key}={value!r} is invalid: {need}")


def check_trainer_settings(
    *,
    steps: Any,
    batch_size: Any,
    lr: Any,
    weight_decay: Any = 0.0,
    betas: Any = (0.9, 0.999),
    warmup_steps: Any = 0,
    grad_clip: Any = None,
    ema_decay: Any = 0.999,
    log_every: Any = 1,
    sample_every: Any = None,
    sample_count: Any = 1,
    checkpoint_every: Any = None,
    keep_checkpoints: Any = None,
    resume: Any = None,
    seed: Any = 0,
    prefix: str = "trainer.",
) -> None:
    """Reject impossible loop settings; the message names the key and the allowed range."""
    p = prefix
    if not _is_int(steps) or steps < 1:
        _fail(p + "steps", steps, "need an integer >= 1")
    if not _is_int(batch_size) or batch_size < 1:
        _fail(p + "batch_size", batch_size, "need an integer >= 1")
    if not _is_real(lr) or lr <= 0:
        _fail(p + "lr", lr, "need a finite learning rate > 0")
    if not _is_real(weight_decay) or weight_decay < 0:
        _fail(p + "weight_decay", weight_decay, "need a finite value >= 0")
    if len(tuple(betas)) != 2 or not all(_is_real(b) and 0 <= b < 1 for b in betas):
        _fail(p + "betas", list(betas), "need two values in [0, 1)")
    if not _is_int(warmup_steps) or warmup_steps < 0:
        _fail(p + "warmup_steps", warmup_steps, "need an integer >= 0")
    if grad_clip is not None and (not _is_real(grad_clip) or grad_clip <= 0):
        _fail(p + "grad_clip", grad_clip, "need null (no clipping) or a finite value > 0")
    if not _is_real(ema_decay) or not 0 <= ema_decay < 1:
        _fail(p + "ema_decay", ema_decay, "need a value in [0, 1)")
    for key, value in (("log_every", log_every), ("sample_count", sample_count)):
        if not _is_int(value) or value < 1:
            _fail(p + key, value, "need an integer >= 1")
    for key, value in (
        ("sample_every", sample_every),
        ("checkpoint_every", checkpoint_every),
        ("keep_checkpoints", keep_checkpoints),
    ):
        if value is not None and (not _is_int(value) or value < 1):
            _fail(p + key, value, "need null or an integer >= 1")
    if resume is not None and str(resume) != "latest" and not Path(str(resume)).is_file():
        _fail(p + "resume", resume, "need null, 'latest' or the path of an existing checkpoint")
    if not _is_int(seed) or seed < 0:
        _fail("seed", seed, "need a non-negative integer")


@dataclass
class Parts:
    """Everything a training run is built from, instantiated from the config groups."""

    sde: Any
    data: Any
    model: Any  # ScoreModel
    loss_fn: Any
    solver: Any
    device: torch.device


def _instantiate(group: str, node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with Hydra's wrapper removed: a ValueError names the group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        raise ValueError(f"config group '{group}' is invalid: {cause}") from e
    except ValueError as e:
        raise ValueError(f"config group '{group}' is invalid: {e}") from e


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


def trainer_settings(cfg_trainer: Any) -> dict[str, Any]:
    """The trainer node as a plain dict without Hydra's ``_target_``/``_partial_`` keys."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg_trainer, resolve=True)
    return {k: v for k, v in raw.items() if k not in _TRAINER_KEYS_IGNORED}


def build(cfg: Any) -> Parts:
    """Validate ``cfg`` (a composed ``train`` config) and instantiate its groups, in that order.

    Called after seeding, so the network's initial weights follow ``seed``.
    """
    from sde_gen.models.score_model import ScoreModel
    from sde_gen.runtime import pick_device

    for group in ("sde", "data", "model", "loss", "trainer"):
        if cfg.get(group) is None:
            raise ValueError(f"config has no '{group}' group; pick one, e.g. {group}=<name>")
    settings = trainer_settings(cfg.trainer)
    unknown = sorted(set(settings) - set(TRAINER_KEYS))
    if unknown:
        raise ValueError(f"unknown trainer key(s) {unknown}; known: {sorted(TRAINER_KEYS)}")
    check_keys = {
        k: settings[k]
        for k in TRAINER_KEYS
        if k not in ("checkpoint_dir", "progress")
        if k in settings
    }
    for k in ("steps", "batch_size", "lr"):
        if k not in check_keys:
            raise ValueError(f"trainer.{k} is missing from the config")
    check_trainer_settings(**check_keys, seed=cfg.get("seed"))
    device = pick_device(str(cfg.get("device", "auto")))

    sde = _instantiate("sde", cfg.sde)
    data = _instantiate("data", cfg.data)
    eps_net = _instantiate("model", cfg.model, shape=tuple(data.shape))
    model = ScoreModel(eps_net, sde)
    _probe(model, data)
    loss_fn = _instantiate("loss", cfg.loss)
    match_bins(loss_fn, data)
    _probe_loss(loss_fn, model, data)
    solver = _instantiate("solver", cfg.solver) if cfg.get("solver") is not None else None
    return Parts(sde=sde, data=data, model=model, loss_fn=loss_fn, solver=solver, device=device)


@torch.no_grad()
def _probe(model: Any, data: Any) -> None:
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
def _probe_loss(loss_fn: Any, model: Any, data: Any) -> None:
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


__all__ = ["check_trainer_settings", "build", "Parts", "trainer_settings"]
