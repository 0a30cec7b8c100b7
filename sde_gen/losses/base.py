"""The protocol every loss follows, held once: draw the batch's randomness, then evaluate.

``draw(model, x0, generator) -> draws`` (the batch's random times and noise, a dict of tensors
whose first axis is the batch, from x0's shape only) and ``evaluate(model, x0, draws) ->
SampleLosses`` (per-sample values; the loss is their mean), so a trainer can draw one global batch
and evaluate slices of it on several processes or in micro-batches; ``loss(model, x0,
generator)`` is the mean of ``evaluate(draw(...))``, after which a loss that learns from what it
sees (a loss-aware step sampler) gets the feedback in ``update``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from sde_gen.models.score_model import ScoreModel

__all__ = ["Loss", "SampleLosses", "Draws", "take", "randn_like", "model_batch"]

Draws = dict[str, Tensor]
"""A batch's random draws (times, noise …), each tensor with the batch on its first axis."""


class SampleLosses(NamedTuple):
    """Per-sample losses (the batch loss is their mean) and, for a loss that adapts to what it
    sees (a loss-aware step sampler), the per-sample values it learns from (``update``)."""

    loss: Tensor
    feedback: Tensor | None = None


def take(draws: Draws, rows: slice) -> Draws:
    """The draws of the samples ``rows`` of the batch."""
    return {key: value[rows] for key, value in draws.items()}


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, I) noise like x, drawn on the generator's device (reproducible across devices)."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


def model_batch(model: torch.nn.Module, x0: Tensor) -> Tensor:
    """x0 in the dtype of the model's parameters (float64/float16 data are cast); a ValueError
    naming the problem for an empty batch or integer data (scale levels to [−1, 1] first)."""
    if not isinstance(x0, Tensor):
        raise ValueError(f"x0 must be a torch.Tensor of shape (B, ...), got {type(x0).__name__}")
    if x0.ndim < 2 or x0.shape[0] == 0:
        size = x0.shape[0] if x0.ndim else "none"
        raise ValueError(
            f"the loss needs a non-empty batch of shape (B, ...), got batch size {size} "
            f"(shape {tuple(x0.shape)})"
        )
    if not x0.is_floating_point():
        raise ValueError(
            f"x0 has dtype {x0.dtype}; the loss needs floating data scaled to [-1, 1] "
            "(integer levels: sde_gen.data.images.scale_to_unit)"
        )
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return x0 if param is None else x0.to(param.dtype)


class Loss(ABC):
    """A loss writes ``draw`` and ``evaluate``; the call, the per-sample view and the (empty)
    learning state are here. ``needs_feedback``: the trainer must pass ``evaluate``'s feedback
    to ``update`` (a loss-aware step sampler)."""

    needs_feedback: bool = False

    @abstractmethod
    def draw(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Draws:
        """The batch's random draws for a batch like ``x0`` (only its shape, dtype, device)."""

    @abstractmethod
    def evaluate(self, model: ScoreModel, x0: Tensor, draws: Draws) -> SampleLosses:
        """The per-sample losses of ``x0`` on ``draws``."""

    def update(self, model: ScoreModel, draws: Draws, feedback: Tensor | None) -> None:
        """Learn from the per-sample ``feedback`` of the batch ``draws``; nothing by default."""
        return None

    def per_sample(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Draws, Tensor]:
        """(draws, per-sample losses) of one batch; the loss is the mean of the second."""
        draws = self.draw(model, x0, generator)
        return draws, self.evaluate(model, x0, draws).loss

    def __call__(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """mean ``evaluate(draw(...))``, then ``update`` with its feedback."""
        draws = self.draw(model, x0, generator)
        out = self.evaluate(model, x0, draws)
        self.update(model, draws, out.feedback)
        return out.loss.mean()

    def state_dict(self) -> dict:
        """What the loss has learnt (for checkpoints); empty by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict``; nothing by default."""
        return None
