"""The training loop: AdamW with linear warm-up, gradient clipping, an EMA of the weights,
metrics, sample plots and resumable checkpoints. Plain Python; ``sde_gen.train`` wraps it in Hydra.

Resuming restores weights, EMA, optimizer, scheduler and every random stream (the data draws
included), so an interrupted and an uninterrupted run end with bit-identical weights on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from sde_gen import checkpoint as ckpt
from sde_gen.config_checks import check_trainer_settings
from sde_gen.data.base import DataSource
from sde_gen.models.score_model import ScoreModel
from sde_gen.runtime import pick_device, write_summary

log = logging.getLogger(__name__)

LossFn = Callable[[ScoreModel, Tensor, torch.Generator], Tensor]
METRICS_FILE = "metrics.jsonl"


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; the message names the step and checkpoint."""


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """lr multiplier min(1, k/warmup) for the k-th optimizer step (k = 1, 2, …)."""

    def factor(done: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (done + 1) / warmup_steps)

    return factor


class Trainer:
    """Fits ``model`` (a ``ScoreModel``) to ``data`` minimising ``loss_fn(model, x0, generator)``.

    Writes into ``out_dir``: ``metrics.jsonl`` (step, loss, lr, grad_norm, steps_per_s),
    ``loss.png``, ``samples/step_*.png`` every ``sample_every`` steps and ``samples.png`` at the
    end (EMA model, ``solver``), checkpoints (``checkpoint_dir``, default ``out_dir/checkpoints``)
    and ``summary.json``.
    ``resume`` is None, a checkpoint path, or ``"latest"`` (newest in ``checkpoint_dir``).
    """

    def __init__(
        self,
        model: ScoreModel,
        loss_fn: LossFn,
        data: DataSource,
        out_dir: str | os.PathLike,
        *,
        steps: int = 1000,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.999,
        log_every: int = 50,
        sample_every: int | None = None,
        sample_count: int = 1000,
        checkpoint_every: int | None = None,
        keep_checkpoints: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None,
        solver: Any = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        config: str = "",
        summary_extra: dict[str, Any] | None = None,
        progress: bool = True,
    ):
        check_trainer_settings(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            betas=betas,
            warmup_steps=warmup_steps,
            grad_clip=grad_clip,
            ema_decay=ema_decay,
            log_every=log_every,
            sample_every=sample_every,
            sample_count=sample_count,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            resume=resume,
            seed=seed,
        )
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.model = model.to(self.device)
        self.loss_fn, self.data, self.solver = loss_fn, data, solver
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.grad_clip = math.inf if grad_clip is None else float(grad_clip)
        self.log_every, self.sample_every = int(log_every), sample_every
        self.sample_count = int(sample_count)
        self.checkpoint_every, self.keep_checkpoints = checkpoint_every, keep_checkpoints
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = (
            Path(checkpoint_dir) if checkpoint_dir else self.out_dir / "checkpoints"
        )
        self.resume, self.seed, self.config = resume, int(seed), config
        self.summary_extra = dict(summary_extra or {})
        self.progress = progress

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=lr, betas=tuple(betas), weight_decay=weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_factor(int(warmup_steps))
        )
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(float(ema_decay)), use_buffers=True
        )
        self.data_generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(self.seed + 1)
        self.step = 0
        self.last_checkpoint: Path | None = None

    # -- state ----------------------------------------------------------------------------------
    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"data": self.data_generator, "noise": self.noise_generator}

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs, as tensors and plain containers."""
        return {
            "format": ckpt.FORMAT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.config,
            "rng": ckpt.rng_state(self.generators),
            "loss": self.loss_fn.state_dict() if hasattr(self.loss_fn, "state_dict") else {},
        }

    def save(self) -> Path:
        """Write ``step_<step>.pt`` atomically; prune to ``keep_checkpoints`` newest."""
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.step), self.state_dict()
        )
        self.last_checkpoint = path
        if self.keep_checkpoints:
            for old in ckpt.list_checkpoints(self.checkpoint_dir)[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save` (ValueError names path and mismatch)."""
        state = ckpt.load_checkpoint(path)
        ckpt.load_weights(self.model, state["model"], path, "model")
        ckpt.load_weights(self.ema, state["ema"], path, "EMA model")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"checkpoint {str(path)!r}: optimizer state does not fit: {e}") from e
        if hasattr(self.loss_fn, "load_state_dict") and state.get("loss"):
            self.loss_fn.load_state_dict(state["loss"])
        ckpt.set_rng_state(state["rng"], self.generators)
        self.step = int(state["step"])
        if self.step > self.steps:
            raise ValueError(
                f"checkpoint {str(path)!r} is at step {self.step} > trainer.steps={self.steps}"
            )
        self.last_checkpoint = Path(path)

    def _resolve_resume(self) -> Path | None:
        if self.resume is None:
            return None
        if str(self.resume) == "latest":
            found = ckpt.latest_checkpoint(self.checkpoint_dir)
            if found is None:
                raise ValueError(
                    f"trainer.resume='latest' but no checkpoint in {str(self.checkpoint_dir)!r}; "
                    "point trainer.checkpoint_dir (or hydra.run.dir) at the earlier run"
                )
            return found
        return Path(self.resume)

    # -- the loop -------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float]:
        """One AdamW step on a fresh batch; returns (loss, pre-clip gradient norm, lr used)."""
        x0 = self.data.sample(self.batch_size, self.data_generator).to(self.device)
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
        return loss_value, grad_norm, lr

    def _non_finite(self, what: str, value: float) -> None:
        kept = str(self.last_checkpoint) if self.last_checkpoint else "none written"
        raise NonFiniteLossError(
            f"{what} is {value} at step {self.step + 1}; training stopped, "
            f"last good checkpoint: {kept}"
        )

    def begin(self) -> None:
        """Open a session: resume if asked, open the metrics file and the progress bar."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        resume_path = self._resolve_resume()
        if resume_path is not None:
            self.load(resume_path)
            log.info("resumed from %s at step %d", resume_path, self.step)
        self._metrics = _MetricsFile(self.out_dir / METRICS_FILE, keep_until=self.step)
        self._bar = tqdm(
            total=self.steps,
            initial=self.step,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        self._window: list[float] = []
        self._t_window = time.perf_counter()
        self.model.train()

    def advance(self, n: int) -> None:
        """Up to ``n`` more steps (never past ``steps``) with logging, sample plots, checkpoints."""
        until = min(self.step + n, self.steps)
        while self.step < until:
            loss, grad_norm, lr = self.train_step()
            self._window.append(loss)
            self._bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.steps:
                now = time.perf_counter()
                rate = len(self._window) / max(now - self._t_window, 1e-12)
                record = {
                    "step": self.step,
                    "loss": sum(self._window) / len(self._window),
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "steps_per_s": rate,
                }
                self._metrics.append(record)
                self._bar.set_postfix(loss=f"{record['loss']:.4f}", steps_s=f"{rate:.1f}")
                self._window, self._t_window = [], time.perf_counter()
            if self.sample_every and self.step % self.sample_every == 0:
                self.plot_samples(self.out_dir / "samples" / f"step_{self.step:08d}.png")
            if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                self.save()

    def end(self) -> None:
        """Close the progress bar and the metrics file."""
        self._bar.close()
        self._metrics.close()

    def fit(self) -> dict[str, Any]:
        """Train to ``steps`` (resuming if asked); return and write the run's summary."""
        self.begin()
        start_step, t_start = self.step, time.perf_counter()
        try:
            self.advance(self.steps - self.step)
        finally:
            self.end()
        wall = time.perf_counter() - t_start
        if (
            self.last_checkpoint is None
            or ckpt.checkpoint_path(self.checkpoint_dir, self.step) != self.last_checkpoint
        ):
            self.save()
        history = _MetricsFile.read(self.out_dir / METRICS_FILE)
        plot_loss_curve(history, self.out_dir / "loss.png")
        summary = {
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "steps_per_s": (self.step - start_step) / max(wall, 1e-12),
            "wall_s": wall,
            "seed": self.seed,
            "device": str(self.device),
            "checkpoint": str(self.last_checkpoint),
            "out_dir": str(self.out_dir),
        }
        summary.update(self.plot_samples(self.out_dir / "samples.png", evaluate=True))
        summary.update(self.summary_extra)
        write_summary(self.out_dir, summary)
        return summary

    # -- samples --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n samples from the EMA model with the configured solver (own generator: the training
        streams are untouched)."""
        if self.solver is None:
            raise ValueError("no solver configured: pass solver= to sample")
        g = torch.Generator(self.device).manual_seed(self.seed + 2 if seed is None else seed)
        net = self.ema.module
        was_training = net.training
        net.eval()
        try:
            x_T = net.sde.prior_sample((n, *self.data.shape), g, device=self.device)
            return self.solver(net.sde, net, x_T, generator=g).x0
        finally:
            net.train(was_training)

    def plot_samples(self, path: Path, evaluate: bool = False) -> dict[str, Any]:
        """Scatter (2-D) or image grid of EMA samples; with ``evaluate``, sample metrics too."""
        if self.solver is None:
            return {}
        images = len(self.data.shape) == 3
        n = min(self.sample_count, 64) if images else self.sample_count
        x = self.sample(n).cpu()
        out: dict[str, Any] = {"samples_finite": bool(torch.isfinite(x).all())}
        if not out["samples_finite"]:
            log.warning("step %d: samples contain NaN/inf; no plot written to %s", self.step, path)
            return out
        from sde_gen.plotting import plot_image_grid, plot_scatter

        title = f"EMA samples, step {self.step}"
        if images:
            plot_image_grid(x, path, title=title)
        elif self.data.shape == (2,):
            ref = self.data.split("test", n)
            plot_scatter(x, path, reference=ref, title=title)
        if evaluate and self.data.exact is not None:
            out.update(mixture_sample_metrics(self.data.exact, x, self.data.split("test", n)))
        return out


def mixture_sample_metrics(mixture, x: Tensor, reference: Tensor) -> dict[str, float]:
    """How well samples cover an exact mixture: the NLL gap E_gen[−log p] − E_data[−log p] and the
    fraction of samples within 3 standard deviations (per axis) of some component mean."""
    from sde_gen.metrics import nll_gap

    x64 = x.to(torch.float64)
    z = (x64[:, None, :] - mixture.means[None]) / mixture.stds[None].clamp_min(1e-12)
    within = (z.abs().amax(-1) <= 3.0).any(-1)
    return {
        "nll_gap": nll_gap(mixture, x64, reference),
        "mode_fraction": float(within.to(torch.float64).mean()),
    }


def plot_loss_curve(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss against step (log scale when positive), written to ``path``."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, losses, lw=1.2)
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss (interval mean)", title="training loss")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


class _MetricsFile:
    """JSON-lines metrics; on resume the lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until: int):
        kept = [r for r in self.read(path) if r["step"] <= keep_until] if keep_until else []
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.handle = path.open("a")

    def append(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "Trainer",
    "NonFiniteLossError",
    "warmup_factor",
    "mixture_sample_metrics",
    "plot_loss_curve",
    "count_parameters",
    "METRICS_FILE",
]
