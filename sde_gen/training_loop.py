"""The training loop alone: AdamW with linear warm-up, gradient clipping, an EMA of the weights,
its random streams and its state. Reporting (logs, plots, summaries) lives in ``run_report``.

Every random draw of a step comes from the loop's own generators (``data`` on the CPU, ``noise``
on the device), so a loop restored from :meth:`TrainingLoop.state_dict` continues bit-identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sde_gen import checkpoint as ckpt
from sde_gen.data.base import DataSource
from sde_gen.models.score_model import ScoreModel
from sde_gen.settings import TrainerSettings

__all__ = ["TrainingLoop", "StepStats", "NonFiniteLossError", "warmup_factor"]

LossFn = Callable[[ScoreModel, Tensor, torch.Generator], Tensor]


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; the message names the step."""


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """lr multiplier min(1, k/warmup) for the k-th optimizer step (k = 1, 2, …)."""

    def factor(done: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (done + 1) / warmup_steps)

    return factor


@dataclass
class StepStats:
    """What one optimizer step measured: the loss, the pre-clip gradient norm, the lr used."""

    loss: float
    grad_norm: float
    lr: float


class TrainingLoop:
    """Fits ``model`` to ``data`` by minimising ``loss_fn(model, x0, generator)``."""

    def __init__(
        self,
        model: ScoreModel,
        loss_fn: LossFn,
        data: DataSource,
        settings: TrainerSettings,
        device: torch.device,
        seed: int = 0,
    ):
        self.device = device
        self.model = model.to(device)
        self.loss_fn, self.data, self.settings, self.seed = loss_fn, data, settings, int(seed)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.grad_clip = math.inf if settings.grad_clip is None else float(settings.grad_clip)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=settings.lr,
            betas=tuple(settings.betas),
            weight_decay=settings.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_factor(settings.warmup_steps)
        )
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True
        )
        self.data_generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = torch.Generator(device).manual_seed(self.seed + 1)
        self.step = 0

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"data": self.data_generator, "noise": self.noise_generator}

    def train_step(self) -> StepStats:
        """One AdamW step on a fresh batch."""
        x0 = self.data.sample(self.settings.batch_size, self.data_generator).to(self.device)
        loss = self.loss_fn(self.model, x0, self.noise_generator)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            self._non_finite("loss", loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        if not math.isfinite(grad_norm):
            self._non_finite("gradient norm", grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        return StepStats(loss_value, grad_norm, lr)

    def _non_finite(self, what: str, value: float) -> None:
        raise NonFiniteLossError(f"{what} is {value} at step {self.step + 1}")

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self, config: str = "") -> dict[str, Any]:
        """Everything a bit-identical resume needs, as tensors and plain containers."""
        return {
            "format": ckpt.FORMAT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": config,
            "rng": ckpt.rng_state(self.generators),
            "loss": self.loss_fn.state_dict() if hasattr(self.loss_fn, "state_dict") else {},
        }

    def load_state_dict(self, state: dict[str, Any], path: str) -> None:
        """Restore :meth:`state_dict` read from ``path`` (ValueError names path and mismatch)."""
        ckpt.load_weights(self.model, state["model"], path, "model")
        ckpt.load_weights(self.ema, state["ema"], path, "EMA model")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"checkpoint {path!r}: optimizer state does not fit: {e}") from e
        if hasattr(self.loss_fn, "load_state_dict") and state.get("loss"):
            self.loss_fn.load_state_dict(state["loss"])
        ckpt.set_rng_state(state["rng"], self.generators)
        self.step = int(state["step"])

    # -- samples of the averaged model ------------------------------------------------------------
    @torch.no_grad()
    def sample(self, solver: Any, n: int, seed: int | None = None) -> Tensor:
        """n samples from the EMA model with ``solver`` (own generator: the training streams are
        untouched)."""
        g = torch.Generator(self.device).manual_seed(self.seed + 2 if seed is None else seed)
        net = self.ema.module
        was_training = net.training
        net.eval()
        try:
            x_T = net.sde.prior_sample((n, *self.data.shape), g, device=self.device)
            return solver(net.sde, net, x_T, generator=g).x0
        finally:
            net.train(was_training)
