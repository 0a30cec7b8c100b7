"""The typed settings of a training run (the ``trainer`` group), checked in ``__post_init__``."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def _need(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is invalid: need {what}")


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _positive(key: str, value: int | None) -> None:
    _need(value is None or value >= 1, key, value, "an integer >= 1")


class Precision(Enum):
    """Arithmetic of the network's forward pass in training (``torch.autocast``); the schedule
    (γ, σ, λ, weights) stays in float64 and the weights in float32 whatever the choice."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # with a GradScaler


@dataclass
class TrainerSettings:
    """The training loop: AdamW with linear warm-up, clipping, EMA, logging and checkpoints."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    grad_clip: float | None = None  # None: no clipping (the norm, share clipped are logged)
    ema_decay: float = 0.995
    log_every: int = 50
    sample_every: int | None = None
    sample_count: int = 1000
    checkpoint_every: int | None = 500
    keep_checkpoints: int | None = 3
    checkpoint_dir: str | None = None  # None: <run dir>/checkpoints
    resume: str | None = None  # None | a checkpoint path | "latest" | "auto" (latest, or fresh)
    progress: bool = True
    precision: Precision = Precision.fp32
    compile: bool = False  # torch.compile the network
    accumulate: int = 1  # micro-batches of batch_size per optimizer step (batch: accumulate × it)
    workers: int = 0  # DataLoader worker processes for finite data sets (0: the main process)

    def __post_init__(self) -> None:
        p = "trainer."
        try:
            self.precision = Precision(getattr(self.precision, "value", self.precision))
        except ValueError:
            allowed = "|".join(m.value for m in Precision)
            raise ValueError(
                f"trainer.precision={self.precision!r} is invalid: need {allowed}"
            ) from None
        _need(self.workers >= 0, p + "workers", self.workers, "an integer >= 0")
        for key in ("steps", "batch_size", "log_every", "sample_count", "accumulate"):
            _positive(p + key, getattr(self, key))
        for key in ("sample_every", "checkpoint_every", "keep_checkpoints"):
            _positive(p + key, getattr(self, key))
        _need(self.lr > 0 and _finite(self.lr), p + "lr", self.lr, "a finite learning rate > 0")
        _need(
            self.weight_decay >= 0 and _finite(self.weight_decay),
            p + "weight_decay",
            self.weight_decay,
            "a finite value >= 0",
        )
        betas = list(self.betas)
        _need(
            len(betas) == 2 and all(0 <= b < 1 for b in betas),
            p + "betas",
            betas,
            "two values in [0, 1)",
        )
        _need(self.warmup_steps >= 0, p + "warmup_steps", self.warmup_steps, "an integer >= 0")
        clip = self.grad_clip
        _need(
            clip is None or (clip > 0 and _finite(clip)),
            p + "grad_clip",
            clip,
            "null (no clipping) or a finite value > 0",
        )
        _need(0 <= self.ema_decay < 1, p + "ema_decay", self.ema_decay, "a value in [0, 1)")
