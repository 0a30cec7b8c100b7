"""A training run: the loop (``training_loop``), its checkpoints, and its report (``run_report``).
Plain Python; ``sde_gen.train`` builds it from the Hydra config.

Resuming restores weights, EMA, optimizer, scheduler and every random stream (the data draws
included), so an interrupted and an uninterrupted run end with bit-identical weights on CPU.

A run folder has one owner (``run_folder``: its lock, the fresh-run guard, the resume check), and
pruning deletes only checkpoints this run wrote. SIGTERM or SIGUSR1 (SLURM's warning before
preemption) stop the run after the step in progress with a checkpoint at that step
(:class:`TrainingInterrupted`; ``sde-gen-train`` exits with status 128 + the signal's number).

Under torchrun (``world`` of N > 1 ranks) every rank trains its part of each global batch; rank 0
alone owns the folder, logs, plots and writes checkpoints and the summary. The ranks agree each
step on whether a stop signal reached any of them, and a failure on rank 0 (a folder in use, a
full disk) is raised on every rank.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sde_gen.data.base import DataSource
from sde_gen.models.score_model import ScoreModel
from sde_gen.runtime import distributed
from sde_gen.runtime.distributed import World, barrier, run_on_main
from sde_gen.runtime.files import DiskFullError
from sde_gen.runtime.resources import StopSignals, activation_bytes, check_memory, pick_device
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.loop import LossFn, NonFiniteLossError, TrainingLoop, warmup_factor
from sde_gen.training.report import METRICS_FILE, RunReport, mixture_sample_metrics, plot_loss_curve
from sde_gen.training.run_folder import RUN_FILES, RunFolder, RunFolderError, check_run_folder
from sde_gen.training.settings import TrainerSettings

log = logging.getLogger(__name__)

__all__ = [
    "Trainer",
    "NonFiniteLossError",
    "RunFolderError",
    "TrainingInterrupted",
    "warmup_factor",
    "mixture_sample_metrics",
    "plot_loss_curve",
    "METRICS_FILE",
    "RUN_FILES",
    "check_run_folder",
]


class TrainingInterrupted(Exception):
    """SIGTERM/SIGUSR1 stopped the run after a step; a checkpoint of that step was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: checkpoint {str(checkpoint)!r} "
            "written; continue with trainer.resume=latest in the same folder"
        )

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, the shell's code for a process ended by that signal."""
        return 128 + self.signum


class Trainer:
    """Fits ``model`` (a ``ScoreModel``) to ``data`` with ``settings`` (a ``TrainerSettings``).

    Writes into ``out_dir``: ``metrics.jsonl``, TensorBoard events (or ``metrics.csv``),
    ``loss.png``, ``samples/step_*.png`` every ``sample_every`` steps and ``samples.png`` at the
    end (EMA model, ``solver``), checkpoints (``settings.checkpoint_dir``, default
    ``out_dir/checkpoints``) and ``summary.json``. ``label`` names the run in plot titles.
    ``world`` is this process's place in a torchrun job (default: the initialised process group,
    else a single process).
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
        world: World | None = None,
    ):
        self.settings = TrainerSettings() if settings is None else settings
        device = device if isinstance(device, torch.device) else pick_device(device)
        self.world = distributed.world(device) if world is None else world
        self.loop = TrainingLoop(model, loss_fn, data, self.settings, device, seed, self.world)
        self.data, self.solver, self.config, self.label = data, solver, config, label
        self.out_dir = Path(out_dir)
        s = self.settings
        self.checkpoint_dir = (
            Path(s.checkpoint_dir) if s.checkpoint_dir else self.out_dir / "checkpoints"
        )
        self.summary_extra = dict(summary_extra or {})
        progress = s.progress and self.world.is_main
        self.report = RunReport(
            self.out_dir, s.steps, s.log_every, progress, label, loss_dims(loss_fn, data)
        )
        key = "trainer.checkpoint_dir" if s.checkpoint_dir else ""
        self.folder = RunFolder(self.out_dir, self.checkpoint_dir, key)
        self.last_checkpoint: Path | None = None
        self.written: list[Path] = []  # this run's checkpoints and those of the runs it resumes
        self._stop: StopSignals | None = None

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
        """Write ``step_<step>.pt`` atomically (rank 0, the ranks waiting before and after); prune
        the checkpoints of this run and of the earlier runs it resumes in place (never another
        file) to ``keep_checkpoints``. A non-finite step since the last check stops the
        run first, so no checkpoint holds its weights."""
        self._check_finite()
        path = ckpt.checkpoint_path(self.checkpoint_dir, self.step)
        barrier()
        run_on_main(lambda: self._write(path))
        self.last_checkpoint = path
        return path

    def _write(self, path: Path) -> None:
        try:
            ckpt.save_checkpoint(path, self.loop.state_dict(self.config))
        except DiskFullError as e:
            kept = str(self.last_checkpoint) if self.last_checkpoint else "none written"
            raise DiskFullError(f"{e}; training stopped, last good checkpoint: {kept}") from e
        self.written = [p for p in self.written if p != path] + [path]
        keep = self.settings.keep_checkpoints
        if keep:
            for old in self.written[:-keep]:
                old.unlink(missing_ok=True)
            self.written = self.written[-keep:]

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
        """The checkpoint ``settings.resume`` names: ``latest``, the newest in checkpoint_dir (an
        error when there is none); ``auto``, the same or a fresh start when there is none."""
        resume = self.settings.resume
        if resume is None:
            return None
        if str(resume) in ("latest", "auto"):
            found = ckpt.latest_checkpoint(self.checkpoint_dir)
            if found is None and str(resume) == "auto":
                return None  # a job's first start (e.g. before a requeue): train from scratch
            if found is None:
                raise ValueError(
                    f"trainer.resume='latest' but no checkpoint in {str(self.checkpoint_dir)!r}; "
                    "run inside the earlier run's folder: hydra.run.dir=<run dir>"
                )
            return found
        path = Path(resume)
        if path.is_dir():
            raise ValueError(f"trainer.resume={resume!r} is a folder: give a step_*.pt file")
        if not path.is_file():
            raise ValueError(
                f"trainer.resume={resume!r} is invalid: need null, 'latest' or the path of an "
                "existing checkpoint"
            )
        return path

    # -- the run folder -------------------------------------------------------------------------
    def _check_memory(self) -> None:
        """Refuse a batch (or sample plot) that cannot fit the device, before any allocation."""
        s, g = self.settings, torch.Generator().manual_seed(0)
        x = self.data.sample(2, g).to(self.device)
        t = torch.full((2,), 0.5, device=self.device, dtype=x.dtype)
        data_bytes = 8 * x[0].numel() * x.element_size()
        train = data_bytes + activation_bytes(self.model, x, t, grad=True)
        check_memory("trainer.batch_size", s.batch_size, train, self.device)
        if self.solver is not None:
            count = min(s.sample_count, 64) if len(self.data.shape) == 3 else s.sample_count
            plot = data_bytes + activation_bytes(self.model, x, t, grad=False)
            check_memory("trainer.sample_count", count, plot, self.device)

    # -- the run --------------------------------------------------------------------------------
    def begin(self) -> None:
        """Lock the folder, check sizes and folders (rank 0), resume if asked, open the report."""
        try:
            path = run_on_main(self._prepare)
            if path is not None:
                self.load(path)
                log.info("resumed from %s at step %d", path, self.step)
            self.loop.start()
            if self.world.is_main:
                self.report.open(self.step)
        except BaseException:
            self.end()
            raise
        self.model.train()

    def _prepare(self) -> Path | None:
        self.folder.lock()  # a folder in use: say so before anything else
        path = self.resume_path()
        self._check_memory()
        self.folder.claim(path)
        self.written = self.folder.earlier_checkpoints(path)
        return path

    def advance(self, n: int) -> None:
        """Up to ``n`` more steps (never past ``steps``) with logging, sample plots, checkpoints;
        after a stop signal, a checkpoint of the step just done and :class:`TrainingInterrupted`."""
        s, main = self.settings, self.world.is_main
        until = min(self.step + n, s.steps)
        while self.step < until:
            stats = self.loop.train_step()
            if main:
                self.report.step()
            if self.report.due(self.step):
                self._check_finite()
                window = self.loop.window()
                if main:
                    self.report.log(self.step, window, float(stats.grad_norm), stats.lr)
            if main and s.sample_every and self.step % s.sample_every == 0:
                path = self.out_dir / "samples" / f"step_{self.step:08d}.png"
                self.plot_samples(path)
                self.report.image("samples", path, self.step)
            if s.checkpoint_every and self.step % s.checkpoint_every == 0:
                self.save()
            self._stop_if_signalled()
        self._check_finite()

    def _check_finite(self) -> None:
        try:
            self.loop.check_finite()
        except NonFiniteLossError as e:
            kept = str(self.last_checkpoint) if self.last_checkpoint else "none written"
            raise NonFiniteLossError(
                f"{e}; training stopped, last good checkpoint: {kept}"
            ) from None

    def _stop_if_signalled(self) -> None:
        """After a stop signal on any rank: a checkpoint of this step, then TrainingInterrupted."""
        signum = self._stop.received if self._stop is not None else None
        if self.world.distributed:
            flag = torch.tensor(signum or 0, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag) or None
        if signum is None:
            return
        if self.last_checkpoint != ckpt.checkpoint_path(self.checkpoint_dir, self.step):
            self.save()
        raise TrainingInterrupted(signum, self.step, self.last_checkpoint)

    def end(self) -> None:
        """Close the report and give the folder's lock back."""
        self.report.close()
        self.loop.stop()
        self.folder.release()

    def fit(self) -> dict[str, Any]:
        """Train to ``steps`` (resuming if asked); return and write the run's summary."""
        self.begin()
        start_step, t_start = self.step, time.perf_counter()
        try:
            with StopSignals() as self._stop:
                self.advance(self.settings.steps - self.step)
                wall = time.perf_counter() - t_start
                if self.last_checkpoint != ckpt.checkpoint_path(self.checkpoint_dir, self.step):
                    self.save()
                self._stop_if_signalled()
            self.report.close()
            summary = {
                "steps": self.step,
                "steps_this_run": self.step - start_step,
                "steps_per_s": (self.step - start_step) / max(wall, 1e-12),
                "wall_s": wall,
                "seed": self.loop.seed,
                "device": str(self.device),
                "world_size": self.world.size,
                "checkpoint": str(self.last_checkpoint),
                "out_dir": str(self.out_dir),
                **self.summary_extra,
            }
            return run_on_main(lambda: self._finish(summary))
        finally:
            self._stop = None
            self.end()

    def _finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        samples = self.plot_samples(self.out_dir / "samples.png", evaluate=True)
        return self.report.finish({**summary, **samples})

    # -- samples --------------------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n samples from the EMA model with the configured solver."""
        if self.solver is None:
            raise ValueError("no solver configured: pass solver= to sample")
        return self.loop.sample(self.solver, n, seed)

    def plot_samples(self, path: Path, evaluate: bool = False) -> dict[str, Any]:
        """Scatter (2-D) or image grid of EMA samples; with ``evaluate`` (the run's end), sample
        metrics too, and each part logged with its duration (``final_sample_s``, ``final_nfe``,
        ``final_eval_s`` in the summary)."""
        if self.solver is None:
            return {}
        images = len(self.data.shape) == 3
        count = self.settings.sample_count
        n = min(count, 64) if images else count
        if evaluate:
            log.info("final samples: %d from the EMA model with %r", n, self.solver)
        t0 = time.perf_counter()
        result = self.loop.draw(self.solver, n)
        x = result.x0.cpu()
        out: dict[str, Any] = {"samples_finite": bool(torch.isfinite(x).all())}
        if evaluate:
            out.update(final_sample_s=time.perf_counter() - t0, final_nfe=result.nfe)
            log.info("sampled in %.1f s (%d evaluations)", out["final_sample_s"], result.nfe)
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
            t0 = time.perf_counter()
            out.update(mixture_sample_metrics(self.data.exact, x, self.data.split("test", n)))
            out["final_eval_s"] = time.perf_counter() - t0
            log.info("evaluated against the exact density in %.1f s", out["final_eval_s"])
        return out


def loss_dims(loss_fn: Any, data: DataSource) -> int:
    """What divides the logged loss into ``loss_per_dim``: the data's dimension D for a loss summed
    over dimensions (DSM, nats a sample), 1 for one that declares ``per_dimension`` (the DDPM
    losses in nats/dim, VDM's bound in bits/dim)."""
    return 1 if getattr(loss_fn, "per_dimension", False) else math.prod(data.shape)
