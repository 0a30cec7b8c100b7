"""A training run: the loop (``training_loop``), its checkpoints, and its report (``run_report``).
Plain Python; ``sde_gen.train`` builds it from the Hydra config.

Resuming restores weights, EMA, optimizer, scheduler and every random stream (the data draws
included), so an interrupted and an uninterrupted run end with bit-identical weights on CPU.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sde_gen import checkpoint as ckpt
from sde_gen.data.base import DataSource
from sde_gen.models.score_model import ScoreModel
from sde_gen.run_report import METRICS_FILE, RunReport, mixture_sample_metrics, plot_loss_curve
from sde_gen.runtime import pick_device
from sde_gen.settings import TrainerSettings
from sde_gen.training_loop import LossFn, NonFiniteLossError, TrainingLoop, warmup_factor

log = logging.getLogger(__name__)

__all__ = [
    "Trainer",
    "NonFiniteLossError",
    "warmup_factor",
    "mixture_sample_metrics",
    "plot_loss_curve",
    "count_parameters",
    "METRICS_FILE",
]


class Trainer:
    """Fits ``model`` (a ``ScoreModel``) to ``data`` with ``settings`` (a ``TrainerSettings``).

    Writes into ``out_dir``: ``metrics.jsonl``, TensorBoard events (or ``metrics.csv``),
    ``loss.png``, ``samples/step_*.png`` every ``sample_every`` steps and ``samples.png`` at the
    end (EMA model, ``solver``), checkpoints (``settings.checkpoint_dir``, default
    ``out_dir/checkpoints``) and ``summary.json``. ``label`` names the run in plot titles.
    """

    def __init__(
        self,
        model: ScoreModel,
        loss_fn: LossFn,
        data: DataSource,
        out_dir: str | os.PathLike,
        settings: TrainerSettings | None = None,
        *,
        solver: Any = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        config: str = "",
        summary_extra: dict[str, Any] | None = None,
        label: str = "",
    ):
        self.settings = TrainerSettings() if settings is None else settings
        device = device if isinstance(device, torch.device) else pick_device(device)
        self.loop = TrainingLoop(model, loss_fn, data, self.settings, device, seed)
        self.data, self.solver, self.config, self.label = data, solver, config, label
        self.out_dir = Path(out_dir)
        s = self.settings
        self.checkpoint_dir = (
            Path(s.checkpoint_dir) if s.checkpoint_dir else self.out_dir / "checkpoints"
        )
        self.summary_extra = dict(summary_extra or {})
        self.report = RunReport(self.out_dir, s.steps, s.log_every, s.progress, label)
        self.last_checkpoint: Path | None = None

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def device(self) -> torch.device:
        return self.loop.device

    @property
    def model(self) -> ScoreModel:
        return self.loop.model

    @property
    def ema(self) -> nn.Module:
        return self.loop.ema

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self) -> Path:
        """Write ``step_<step>.pt`` atomically; prune to ``keep_checkpoints`` newest."""
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.step), self.loop.state_dict(self.config)
        )
        self.last_checkpoint = path
        keep = self.settings.keep_checkpoints
        if keep:
            for old in ckpt.list_checkpoints(self.checkpoint_dir)[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save` (ValueError names path and mismatch)."""
        self.loop.load_state_dict(ckpt.load_checkpoint(path), str(path))
        if self.step > self.settings.steps:
            raise ValueError(
                f"checkpoint {str(path)!r} is at step {self.step} > "
                f"trainer.steps={self.settings.steps}"
            )
        self.last_checkpoint = Path(path)

    def resume_path(self) -> Path | None:
        """The checkpoint ``settings.resume`` names (``latest``: the newest in checkpoint_dir)."""
        resume = self.settings.resume
        if resume is None:
            return None
        if str(resume) == "latest":
            found = ckpt.latest_checkpoint(self.checkpoint_dir)
            if found is None:
                raise ValueError(
                    f"trainer.resume='latest' but no checkpoint in {str(self.checkpoint_dir)!r}; "
                    "run inside the earlier run's folder: hydra.run.dir=<run dir>"
                )
            return found
        path = Path(resume)
        if not path.is_file():
            raise ValueError(
                f"trainer.resume={resume!r} is invalid: need null, 'latest' or the path of an "
                "existing checkpoint"
            )
        return path

    # -- the run --------------------------------------------------------------------------------
    def begin(self) -> None:
        """Resume if asked, open the report."""
        path = self.resume_path()
        if path is not None:
            self.load(path)
            log.info("resumed from %s at step %d", path, self.step)
        self.report.open(self.step)
        self.model.train()

    def advance(self, n: int) -> None:
        """Up to ``n`` more steps (never past ``steps``) with logging, sample plots, checkpoints."""
        s = self.settings
        until = min(self.step + n, s.steps)
        while self.step < until:
            try:
                stats = self.loop.train_step()
            except NonFiniteLossError as e:
                kept = str(self.last_checkpoint) if self.last_checkpoint else "none written"
                raise NonFiniteLossError(
                    f"{e}; training stopped, last good checkpoint: {kept}"
                ) from None
            self.report.step(self.step, stats)
            if s.sample_every and self.step % s.sample_every == 0:
                path = self.out_dir / "samples" / f"step_{self.step:08d}.png"
                self.plot_samples(path)
                self.report.image("samples", path, self.step)
            if s.checkpoint_every and self.step % s.checkpoint_every == 0:
                self.save()

    def end(self) -> None:
        self.report.close()

    def fit(self) -> dict[str, Any]:
        """Train to ``steps`` (resuming if asked); return and write the run's summary."""
        self.begin()
        start_step, t_start = self.step, time.perf_counter()
        try:
            self.advance(self.settings.steps - self.step)
        finally:
            self.end()
        wall = time.perf_counter() - t_start
        final = ckpt.checkpoint_path(self.checkpoint_dir, self.step)
        if self.last_checkpoint != final:
            self.save()
        summary = {
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "steps_per_s": (self.step - start_step) / max(wall, 1e-12),
            "wall_s": wall,
            "seed": self.loop.seed,
            "device": str(self.device),
            "checkpoint": str(self.last_checkpoint),
            "out_dir": str(self.out_dir),
            **self.plot_samples(self.out_dir / "samples.png", evaluate=True),
            **self.summary_extra,
        }
        return self.report.finish(summary)

    # -- samples --------------------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n samples from the EMA model with the configured solver."""
        if self.solver is None:
            raise ValueError("no solver configured: pass solver= to sample")
        return self.loop.sample(self.solver, n, seed)

    def plot_samples(self, path: Path, evaluate: bool = False) -> dict[str, Any]:
        """Scatter (2-D) or image grid of EMA samples; with ``evaluate``, sample metrics too."""
        if self.solver is None:
            return {}
        images = len(self.data.shape) == 3
        count = self.settings.sample_count
        n = min(count, 64) if images else count
        x = self.sample(n).cpu()
        out: dict[str, Any] = {"samples_finite": bool(torch.isfinite(x).all())}
        if not out["samples_finite"]:
            log.warning("step %d: samples contain NaN/inf; no plot written to %s", self.step, path)
            return out
        from sde_gen.plotting import plot_image_grid, plot_scatter

        title = f"EMA samples, step {self.step}" + (f" — {self.label}" if self.label else "")
        if images:
            plot_image_grid(x, path, title=title)
        elif self.data.shape == (2,):
            ref = self.data.split("test", n)
            plot_scatter(x, path, reference=ref, title=title)
        if evaluate and self.data.exact is not None:
            out.update(mixture_sample_metrics(self.data.exact, x, self.data.split("test", n)))
        return out


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
