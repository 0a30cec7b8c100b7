"""The training loop alone: AdamW with linear warm-up, gradient clipping, an EMA of the weights,
its random streams and its state. Reporting (logs, plots, summaries) lives in ``run_report``.

Every random draw of a step comes from the loop's own streams (``data`` on the CPU, or a seed per
step for finite sets fed by a DataLoader; ``noise`` on the device), so a loop restored from
:meth:`TrainingLoop.state_dict` continues bit-identically.

One step draws a global batch of ``accumulate × batch_size`` samples and its noise and times
(``loss.draw``), then evaluates micro-batches of ``batch_size`` rows, each cut across the ranks
of a DDP run (``data.batches``); each part's gradient is scaled by N/(global batch), so that
DDP's average over ranks is the gradient of the global batch's mean loss whatever N and k.
The network runs under ``torch.autocast`` (``precision``), the schedule stays in float64.
Nothing in a step waits for the device: losses and the first non-finite step are kept on it and
read every ``log_every`` steps, before a checkpoint and at the end (:meth:`check_finite`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sde_gen.data.base import DataSource
from sde_gen.data.batches import batches_for
from sde_gen.losses.base import take
from sde_gen.models.score_model import ScoreModel
from sde_gen.runtime.distributed import World, all_reduce_sum, gather_objects, gather_rows
from sde_gen.solvers.base import SampleResult
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.settings import Precision, TrainerSettings

__all__ = [
    "TrainingLoop",
    "StepStats",
    "WindowStats",
    "NonFiniteLossError",
    "warmup_factor",
    "AutocastNet",
]

LossFn = Callable[[ScoreModel, Tensor, torch.Generator], Tensor]
AUTOCAST = {Precision.fp32: None, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; the message names the step."""


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """lr multiplier min(1, k/warmup) for the k-th optimizer step (k = 1, 2, …)."""

    def factor(done: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (done + 1) / warmup_steps)

    return factor


@dataclass
class StepStats:
    """What one optimizer step measured, on the device (read them at log time only): this rank's
    sum of per-sample losses, the pre-clip gradient norm; and the lr used."""

    loss: Tensor
    grad_norm: Tensor
    lr: float


@dataclass
class WindowStats:
    """What a metrics line reports of the steps since the last one: the mean loss per sample and
    the fraction of steps whose gradient was clipped (pre-clip norm > ``grad_clip``)."""

    loss: float
    clipped: float


class AutocastNet(nn.Module):
    """The network as a training step runs it: its forward under ``torch.autocast`` in ``dtype``
    (None: as is), its output back in the input's dtype."""

    def __init__(self, net: nn.Module, dtype: torch.dtype | None, device_type: str):
        super().__init__()
        self.net, self.dtype, self.device_type = net, dtype, device_type

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(x, t)
        return out.to(x.dtype)


class TrainingLoop:
    """Fits ``model`` to ``data`` by minimising ``loss_fn`` (a loss with ``draw``/``evaluate``;
    a plain callable ``loss_fn(model, x0, generator)`` only in one process without accumulation).
    """

    def __init__(
        self,
        model: ScoreModel,
        loss_fn: Any,
        data: DataSource,
        settings: TrainerSettings,
        device: torch.device,
        seed: int = 0,
        world: World | None = None,
    ):
        self.device, self.world = device, world or World(device=device)
        self.model = model.to(device)
        self.loss_fn, self.data, self.settings, self.seed = loss_fn, data, settings, int(seed)
        self.split = hasattr(loss_fn, "draw") and hasattr(loss_fn, "evaluate")
        if not self.split and (self.world.distributed or settings.accumulate > 1):
            raise ValueError(
                f"loss {type(loss_fn).__name__} has no draw/evaluate: it cannot be split across "
                "ranks or micro-batches (trainer.accumulate=1, one process)"
            )
        if settings.batch_size < self.world.size:
            raise ValueError(
                f"trainer.batch_size={settings.batch_size} is smaller than the {self.world.size} "
                "processes: every rank needs a sample of each micro-batch"
            )
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
        fp16 = settings.precision is Precision.fp16
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True
        )
        self.data_generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = torch.Generator(device).manual_seed(self.seed + 1)
        self.batches = batches_for(
            data,
            self.data_generator,
            self.seed,
            settings.batch_size,
            settings.accumulate,
            settings.workers,
            device,
            self.world.rank,
            self.world.size,
        )
        self.train_model, self.ddp = self._train_model(settings)
        inside = {id(p) for p in self.model.eps_net.parameters()}
        self._outside_ddp = [p for p in self.params if id(p) not in inside]
        self.step, self._serving = 0, False
        # Σ loss, samples, clipped steps, steps: read at log time only
        self._window = torch.zeros(4, dtype=torch.float64, device=device)
        self._first_bad = torch.zeros(3, dtype=torch.float64, device=device)  # step, what, value

    def _train_model(self, s: TrainerSettings) -> tuple[ScoreModel, Any]:
        """The model a step runs: the same parameters behind autocast, DDP and torch.compile."""
        net: nn.Module = AutocastNet(self.model.eps_net, AUTOCAST[s.precision], self.device.type)
        ddp = None
        if self.world.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            net = ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if s.compile:
            net = torch.compile(net)
        model = self.model
        return ScoreModel(net, model.sde, model.param, model.time, model.variance), ddp

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"data": self.data_generator, "noise": self.noise_generator}

    def start(self) -> None:
        """Begin serving batches at the current step (after a resume, from there)."""
        self.batches.start(self.step, self.settings.steps)
        self._serving = True

    def stop(self) -> None:
        """Stop serving batches (DataLoader workers end); the next step starts again."""
        self.batches.close()
        self._serving = False

    def train_step(self) -> StepStats:
        """One AdamW step on a fresh global batch."""
        s = self.settings
        if not self._serving:
            self.start()
        parts = self.batches.next()
        self.optimizer.zero_grad(set_to_none=True)
        total = self._split_step(parts) if self.split else self._plain_step(parts[0])
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self._record_finite(total, grad_norm)
        for p in self.params:  # a non-finite step leaves the weights finite (it stops the run)
            if p.grad is not None:
                p.grad.nan_to_num_(0.0, 0.0, 0.0)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._schedule()
        self.ema.update_parameters(self.model)
        self.step += 1
        self._window[0] += total.double()
        self._window[1] += s.batch_size * s.accumulate / self.world.size
        self._window[2] += (grad_norm > self.grad_clip).double()
        self._window[3] += 1.0
        return StepStats(total, grad_norm, lr)

    def _schedule(self) -> None:
        """Advance the learning-rate schedule one training step. When fp16's loss scaler skipped
        the optimizer step (overflowing gradients: expected, the scale then drops), torch would
        warn "lr_scheduler.step() before optimizer.step()" as if the caller erred: not shown."""
        with warnings.catch_warnings():
            if self.scaler.is_enabled():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step")
            self.scheduler.step()

    def _split_step(self, parts: list[Tensor]) -> Tensor:
        s, w = self.settings, self.world
        b, n = s.batch_size, s.batch_size * s.accumulate
        shape = (n, *self.data.shape)
        draws = self.loss_fn.draw(
            self.model, torch.empty(shape, device=self.device), self.noise_generator
        )
        total, feedback = torch.zeros((), device=self.device), []
        mine = w.rows(b)
        for j, x0 in enumerate(parts):
            last = j == len(parts) - 1
            rows_j = slice(j * b + mine.start, j * b + mine.stop)
            with nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                x0 = x0.to(self.device, non_blocking=True)
                out = self.loss_fn.evaluate(self.train_model, x0, take(draws, rows_j))
                part = out.loss.sum()
                self.scaler.scale(part * (w.size / n)).backward()
            total = total + part.detach()
            if self.loss_fn.needs_feedback:
                feedback.append(gather_rows(out.feedback, b))
        if self.loss_fn.needs_feedback:
            self.loss_fn.update(self.model, draws, torch.cat(feedback))
        if self.ddp is not None:  # DDP averages the network's gradients, not a learned SDE's
            for p in self._outside_ddp:
                p.grad = all_reduce_sum(p.grad if p.grad is not None else torch.zeros_like(p))
                p.grad /= w.size
        return total

    def _plain_step(self, x0: Tensor) -> Tensor:
        x0 = x0.to(self.device, non_blocking=True)
        loss = self.loss_fn(self.train_model, x0, self.noise_generator)
        self.scaler.scale(loss).backward()
        return loss.detach() * x0.shape[0]

    # -- finiteness and logged values, read from the device only when asked ---------------------
    def _record_finite(self, total: Tensor, grad_norm: Tensor) -> None:
        """Keep (step, what, value) of the first step whose loss or gradient norm is not finite
        (the gradient norm under fp16 is the GradScaler's business)."""
        bad_loss = ~torch.isfinite(total)
        bad = bad_loss if self.scaler.is_enabled() else bad_loss | ~torch.isfinite(grad_norm)
        record = torch.stack(
            [
                torch.full((), self.step + 1, dtype=torch.float64, device=self.device),
                (~bad_loss).double(),
                torch.where(bad_loss, total, grad_norm).double(),
            ]
        )
        first = bad & (self._first_bad[0] == 0)
        self._first_bad = torch.where(first, record, self._first_bad)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` naming the first step (on any rank) whose loss or
        gradient norm was NaN/inf."""
        found = [r for r in gather_objects(self._first_bad.tolist()) if r[0] > 0]
        if found:
            step, what, value = min(found)
            name = "gradient norm" if what else "loss"
            raise NonFiniteLossError(f"{name} is {value} at step {int(step)}")

    def window(self) -> WindowStats:
        """The mean loss per sample over the steps since the last call, over every rank, and the
        share of those steps whose gradient norm exceeded ``grad_clip`` (and was clipped)."""
        total, count, clipped, steps = all_reduce_sum(self._window).tolist()
        self._window.zero_()
        steps /= self.world.size  # every rank counts the same (global) steps
        return WindowStats(total / max(count, 1.0), clipped / self.world.size / max(steps, 1.0))

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
            "scaler": self.scaler.state_dict(),
            "config": config,
            "rng": ckpt.rng_state(self.generators),
            "loss": self.loss_fn.state_dict() if hasattr(self.loss_fn, "state_dict") else {},
            "data_info": {"shape": list(self.data.shape), "num_bins": self.data.num_bins},
            "world_size": self.world.size,
        }

    def load_state_dict(self, state: dict[str, Any], path: str) -> None:
        """Restore :meth:`state_dict` read from ``path`` (ValueError names path and mismatch)."""
        ckpt.load_weights(self.model, state["model"], path, "model")
        ckpt.load_weights(self.ema, state["ema"], path, "EMA model")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"checkpoint {path!r}: optimizer state does not fit: {e}") from e
        if hasattr(self.loss_fn, "load_state_dict") and state.get("loss"):
            self.loss_fn.load_state_dict(state["loss"])
        ckpt.set_rng_state(state["rng"], self.generators)
        self.step = int(state["step"])
        self.stop()  # the next step serves the batches of the restored step

    # -- samples of the averaged model ------------------------------------------------------------
    @torch.no_grad()
    def draw(self, solver: Any, n: int, seed: int | None = None) -> SampleResult:
        """n samples from the EMA model with ``solver`` and what it spent (``nfe``); its own
        generator leaves the training streams untouched."""
        g = torch.Generator(self.device).manual_seed(self.seed + 2 if seed is None else seed)
        net = self.ema.module
        was_training = net.training
        net.eval()
        try:
            x_T = net.sde.prior_sample((n, *self.data.shape), g, device=self.device)
            return solver(net.sde, net, x_T, generator=g)
        finally:
            net.train(was_training)

    def sample(self, solver: Any, n: int, seed: int | None = None) -> Tensor:
        """n samples from the EMA model with ``solver`` (:meth:`draw`'s ``x0``)."""
        return self.draw(solver, n, seed).x0
