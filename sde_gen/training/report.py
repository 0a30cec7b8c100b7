"""What a training run reports, apart from the loop: the metrics log (``metrics.jsonl``, plus
TensorBoard event files when ``tensorboard`` is installed, else ``metrics.csv``), the progress bar,
the loss curve, sample plots and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sde_gen.runtime.files import atomic_write, disk_full_error, write_summary
from sde_gen.runtime.progress import progress_bar
from sde_gen.training.loop import WindowStats

__all__ = [
    "RunReport",
    "MetricsFile",
    "METRICS_FILE",
    "CSV_FILE",
    "TENSORBOARD_DIR",
    "plot_loss_curve",
    "mixture_sample_metrics",
    "clipped_share",
    "headline",
]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
CSV_COLUMNS = ("step", "loss", "loss_per_dim", "lr", "grad_norm", "clipped", "steps_per_s")
SCALARS = CSV_COLUMNS[1:]


class MetricsFile:
    """JSON-lines metrics; on resume the lines past the checkpoint's step are dropped, and a torn
    last line (a write cut short by a kill) is dropped with a warning."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        self.kept = [r for r in self.read(path) if r["step"] <= keep_until] if keep_until else []
        text = "".join(json.dumps(r) + "\n" for r in self.kept)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        self.handle = path.open("a")

    def append(self, record: dict[str, Any]) -> None:
        try:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        except OSError as e:
            raise disk_full_error(self.path, e) from e

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as e:  # a full disk: the lines past the last checkpoint are redone anyway
            log.warning("%s: last lines not written: %s", self.path, e)

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The records of ``path``; a torn last line is dropped (logged), any other bad line is a
        ValueError naming the file and line."""
        if not path.is_file():
            return []
        text = path.read_text(errors="replace").splitlines()
        lines = [(i, line) for i, line in enumerate(text, 1) if line.strip()]
        records = []
        for k, (i, line) in enumerate(lines):
            try:
                record = json.loads(line)
                problem = "" if _is_record(record) else "not a metrics record"
            except json.JSONDecodeError as e:
                problem = f"not JSON ({e})"
            if not problem:
                records.append(record)
            elif k == len(lines) - 1:
                log.warning("%s: dropped its torn last line %d (%s)", path, i, problem)
            else:
                raise ValueError(f"{str(path)!r} line {i} is {problem}: {line[:80]!r}")
        return records


def _is_record(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("step"), int)


class _CSVLog:
    """``metrics.csv``, the same rows as ``metrics.jsonl`` (used without TensorBoard)."""

    def __init__(self, path: Path, kept: list[dict[str, Any]]):
        self.handle = path.open("w", newline="")
        self.writer = csv.DictWriter(self.handle, CSV_COLUMNS, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(kept)

    def scalars(self, record: dict[str, Any]) -> None:
        self.writer.writerow(record)
        self.handle.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        pass

    def close(self) -> None:
        self.handle.close()


class _TensorBoardLog:
    """Scalars and sample figures as TensorBoard events (``torch.utils.tensorboard``)."""

    def __init__(self, directory: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events at steps >= it: those a killed run wrote past the checkpoint
        # it resumes from, keeping the checkpoint's own step
        self.writer = SummaryWriter(
            str(directory), purge_step=resume_step + 1 if resume_step else None
        )

    def scalars(self, record: dict[str, Any]) -> None:
        for key in SCALARS:
            if key in record:  # lines kept from a run before loss_per_dim and clipped
                self.writer.add_scalar(f"train/{key}", record[key], record["step"])
        self.writer.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        import matplotlib.image

        pixels = torch.from_numpy(matplotlib.image.imread(str(path))[..., :3].copy())
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _scalar_log(out_dir: Path, resume_step: int, kept: list[dict[str, Any]]):
    try:
        return _TensorBoardLog(out_dir / TENSORBOARD_DIR, resume_step)
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        log.info("tensorboard is not installed: metrics go to %s", out_dir / CSV_FILE)
        return _CSVLog(out_dir / CSV_FILE, kept)


class RunReport:
    """Logs, progress and pictures of one training run in ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        log_every: int,
        progress: bool = True,
        label: str = "",
        loss_dims: int = 1,
    ):
        self.out_dir, self.total_steps, self.log_every = out_dir, total_steps, log_every
        self.progress, self.label, self.loss_dims = progress, label, loss_dims

    def open(self, step: int) -> None:
        """Start (or, at ``step`` > 0, continue) the logs and the progress bar."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsFile(self.out_dir / METRICS_FILE, keep_until=step)
        self.scalar_log = _scalar_log(self.out_dir, step, self.metrics.kept)
        self.bar = progress_bar(
            self.progress, total=self.total_steps, initial=step, unit="step", dynamic_ncols=True
        )
        self.window_steps = 0
        self.t_window = time.perf_counter()

    def step(self) -> None:
        """One more step done (the progress bar)."""
        self.window_steps += 1
        self.bar.update(1)

    def due(self, step: int) -> bool:
        """Whether ``step`` writes a metrics line: every ``log_every`` steps and the last."""
        return step % self.log_every == 0 or step == self.total_steps

    def log(self, step: int, window: WindowStats, grad_norm: float, lr: float) -> None:
        """A metrics line: the mean loss since the last line (a sample's, and per dimension:
        / ``loss_dims``), the share of those steps that were clipped, this step's norm and lr."""
        now = time.perf_counter()
        rate = self.window_steps / max(now - self.t_window, 1e-12)
        loss = window.loss
        record = {
            "step": step,
            "loss": loss,
            "loss_per_dim": loss / self.loss_dims,
            "lr": lr,
            "grad_norm": grad_norm,
            "clipped": window.clipped,
            "steps_per_s": rate,
        }
        self.metrics.append(record)
        self.scalar_log.scalars(record)
        self.bar.set_postfix(
            loss=f"{loss:.4f}",
            clipped=f"{window.clipped:.0%}",
            steps_s=f"{rate:.1f}",
            refresh=False,
        )
        self.window_steps, self.t_window = 0, time.perf_counter()

    def image(self, tag: str, path: Path | None, step: int) -> None:
        """Log a written figure (sample plot) under ``tag``."""
        if path is not None and path.is_file():
            self.scalar_log.image(tag, path, step)

    def close(self) -> None:
        """Close what :meth:`open` opened (safe to call twice, or after a failed open)."""
        for name in ("bar", "metrics", "scalar_log"):
            part = self.__dict__.pop(name, None)
            if part is not None:
                part.close()

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Loss curve and ``summary.json`` (``final_loss`` from the metrics log)."""
        history = MetricsFile.read(self.out_dir / METRICS_FILE)
        title = "training loss" + (f" — {self.label}" if self.label else "")
        plot_loss_curve(history, self.out_dir / "loss.png", title)
        last = history[-1] if history else {}
        summary = {
            "final_loss": last.get("loss", float("nan")),
            "final_loss_per_dim": last.get("loss_per_dim", float("nan")),
            "clipped_share": clipped_share(history),
            **summary,
        }
        write_summary(self.out_dir, summary)
        return summary


def clipped_share(history: list[dict[str, Any]]) -> float:
    """The share of all logged steps whose gradient was clipped: each line's ``clipped`` weighted
    by the steps it covers (NaN without such lines)."""
    done, total, previous = 0, 0.0, 0
    for record in history:
        if "clipped" in record:
            steps = record["step"] - previous
            done, total = done + steps, total + record["clipped"] * steps
        previous = record["step"]
    return total / done if done else float("nan")


HEADLINE_KEYS = (
    ("mode_fraction", "mode fraction {:.3f}"),
    ("nll_gap", "NLL gap {:.4f}"),
    ("fd", "FD {:.3g}"),
    ("kid", "KID {:.3g}"),
)


def headline(summary: dict[str, Any]) -> str:
    """The run's last console line: steps, final loss (and per dimension), the share of clipped
    steps, and the sample metrics the run computed (mode fraction, NLL gap, FD, KID)."""
    parts = [
        f"step {summary.get('steps')}",
        f"loss {summary.get('final_loss', float('nan')):.5f}"
        f" ({summary.get('final_loss_per_dim', float('nan')):.5f}/dim)",
        f"clipped {100 * summary.get('clipped_share', float('nan')):.0f}% of steps",
    ]
    parts += [text.format(summary[k]) for k, text in HEADLINE_KEYS if summary.get(k) is not None]
    return ", ".join(parts)


def mixture_sample_metrics(mixture, x: Tensor, reference: Tensor) -> dict[str, float]:
    """How well samples cover an exact mixture: the NLL gap E_gen[−log p] − E_data[−log p] and the
    fraction of samples within 3 standard deviations (per axis) of some component mean."""
    from sde_gen.metrics.mixtures import nll_gap

    x64 = x.to(torch.float64)
    z = (x64[:, None, :] - mixture.means[None]) / mixture.stds[None].clamp_min(1e-12)
    within = (z.abs().amax(-1) <= 3.0).any(-1)
    return {
        "nll_gap": nll_gap(mixture, x64, reference),
        "mode_fraction": float(within.to(torch.float64).mean()),
    }


def plot_loss_curve(history: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
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
    ax.set(xlabel="step", ylabel="loss (interval mean)", title=title or "training loss")
    ax.grid(alpha=0.3)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
    return path
