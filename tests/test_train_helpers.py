"""Shared builders for the training tests: a tiny MLP score model on the 8-Gaussian ring."""

from __future__ import annotations

from pathlib import Path

import torch

from sde_gen.data import ring_mixture
from sde_gen.losses import DSMLoss
from sde_gen.models import MLP, ScoreModel, SinusoidalEmbedding
from sde_gen.sde import VPSDE
from sde_gen.training.settings import TrainerSettings
from sde_gen.training.trainer import Trainer


def tiny_model(hidden: int = 32, seed: int = 0) -> ScoreModel:
    torch.manual_seed(seed)
    net = MLP((2,), hidden=hidden, num_layers=2, embedding=SinusoidalEmbedding(16))
    return ScoreModel(net, VPSDE())


def tiny_trainer(out_dir: Path, loss_fn=None, hidden: int = 32, std: float = 0.15, **kw) -> Trainer:
    """A Trainer of the tiny model; keywords are TrainerSettings fields or Trainer options."""
    options = {k: kw.pop(k) for k in ("device", "seed", "config", "solver", "label") if k in kw}
    settings = dict(
        steps=20,
        batch_size=64,
        lr=2e-3,
        warmup_steps=5,
        ema_decay=0.9,
        log_every=5,
        checkpoint_every=10,
        progress=False,
        grad_clip=1.0,  # the tests' conditions since before the default became null (no clipping)
    )
    settings.update(kw)
    return Trainer(
        tiny_model(hidden),
        loss_fn if loss_fn is not None else DSMLoss(),
        ring_mixture(std=std),
        out_dir,
        TrainerSettings(**settings),
        **{"device": "cpu", "seed": 0, "config": "", **options},
    )
