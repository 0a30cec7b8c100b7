"""A training run's report: TensorBoard events (or a CSV log without tensorboard), and resume
inside the original run folder through the ``latest`` link, as README and the guide say."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_helpers import tiny_trainer

from sde_gen.solvers import EulerMaruyama
from sde_gen.training import report as run_report


def _jsonl(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_hold_loss_lr_grad_norm_and_sample_figures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = tiny_trainer(
        tmp_path,
        steps=10,
        log_every=5,
        sample_every=5,
        sample_count=64,
        checkpoint_every=None,
        solver=EulerMaruyama(steps=5),
    )
    trainer.fit()
    events = EventAccumulator(str(tmp_path / run_report.TENSORBOARD_DIR))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(tags["scalars"])
    assert "samples" in tags["images"] and len(events.Images("samples")) == 2
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    on_disk = [(r["step"], r["loss"]) for r in _jsonl(tmp_path)]
    assert [s for s, _ in logged] == [s for s, _ in on_disk] == [5, 10]
    assert all(abs(a - b) <= 1e-6 * abs(b) for (_, a), (_, b) in zip(logged, on_disk))


def test_without_tensorboard_a_csv_log_holds_the_same_rows(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("no tensorboard")

    monkeypatch.setattr(run_report, "_TensorBoardLog", missing)
    tiny_trainer(tmp_path, steps=10, log_every=2, checkpoint_every=None).fit()
    with (tmp_path / run_report.CSV_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    expected = _jsonl(tmp_path)
    assert [int(r["step"]) for r in rows] == [r["step"] for r in expected] == [2, 4, 6, 8, 10]
    assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in expected])
    assert not (tmp_path / run_report.TENSORBOARD_DIR).exists()


def test_cli_resume_continues_inside_the_original_run_folder(tmp_path):
    tiny = [
        "experiment=toy2d",
        "model.hidden=16",
        "model.num_layers=1",
        "trainer.batch_size=16",
        "trainer.log_every=2",
        "trainer.checkpoint_every=2",
        "trainer.sample_count=20",
        "trainer.progress=false",
        "solver.steps=3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    train = str(Path(sys.executable).with_name("sde-gen-train"))

    def call(*extra: str, status: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [train, *tiny, *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == status, proc.stderr[-2000:]
        return proc

    call("trainer.steps=4")
    call("trainer.steps=8", "hydra.run.dir=outputs/train/latest", "trainer.resume=latest")
    runs = [p for p in (tmp_path / "outputs" / "train").glob("2*/*") if p.is_dir()]
    assert len(runs) == 1  # no second folder: the resume wrote into the first one
    run = runs[0]
    assert (tmp_path / "outputs" / "train" / "latest").resolve() == run.resolve()
    assert [r["step"] for r in _jsonl(run)] == [2, 4, 6, 8]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["steps_this_run"] == 4
    assert Path(summary["out_dir"]) == run.resolve()
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step_00000008.pt"
    # a fresh run into the finished folder is refused before Hydra rewrites .hydra/ (the guard)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}
    guard = "++hydra.callbacks.guard._target_=sde_gen.cli.callbacks.GuardRunFolder"
    proc = call("trainer.steps=8", "hydra.run.dir=outputs/train/latest", guard, status=2)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "trainer.resume=latest" in proc.stderr and "outputs/train/latest" in proc.stderr
    assert {p: p.read_bytes() for p in files} == files
