"""docs/guide.md "Use a pretrained model": its commands run as written on a locally saved model.

A tiny random DDPM pipeline is saved as ``ddpm-cifar10-32`` (3×32×32, a 50-step chain) beside
fake CIFAR-10 binary batches in ``cifar-10-batches-bin``; each ``sde-gen-*`` line of the section
runs from that folder with its sample counts, steps and tolerances shortened."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
MODULES = {
    "sde-gen-sample": "sde_gen.sample",
    "sde-gen-fit-grid": "sde_gen.fit_grid",
    "sde-gen-eval": "sde_gen.evaluate",
    "sde-gen-train": "sde_gen.train",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)
SHORT = {
    "sde-gen-sample": {"n": "2", "batch_size": "2", "solver.steps": "2", "progress": "false"},
    "sde-gen-fit-grid": {"n": "8", "maxiter": "2", "solver.steps": "2", "teacher_tol": "1e-3"},
    "sde-gen-eval": {
        "n": "2",
        "batch_size": "2",
        "likelihood.rtol": "1e-2",
        "likelihood.atol": "1e-2",
    },
    "sde-gen-train": {
        "trainer.steps": "2",
        "trainer.batch_size": "2",
        "trainer.progress": "false",
        "solver.steps": "2",
    },
}


def section_commands() -> list[str]:
    text = GUIDE.read_text().split("## Use a pretrained model", 1)[1].split("\n## ", 1)[0]
    return [line for line in text.splitlines() if line.startswith(".venv/bin/sde-gen-")]


def shortened(line: str) -> list[str]:
    """The command (as ``python -m``, the entry point's module) with the SHORT values in place of
    its own (multirun lists too)."""
    words = shlex.split(line)
    name = Path(words[0]).name
    short = dict(SHORT[name])
    if "-m" in words:
        short["solver.steps"] = "2,3"
    args = []
    for word in words[1:]:
        key = word.split("=", 1)[0]
        args.append(f"{key}={short.pop(key)}" if key in short else word)
    extra = [f"{k}={v}" for k, v in short.items()]
    return [sys.executable, "-m", MODULES[name], *args, *extra]


def test_guide_section_runs_as_written(tmp_path):
    from diffusers_folders import stand_in_cifar_model

    commands = section_commands()
    assert len(commands) == 7
    stand_in_cifar_model(tmp_path)
    for line in commands:
        proc = subprocess.run(
            shortened(line), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
    runs = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("summary.json")]
    clipped = [r for r in runs if r.get("solver") == "ancestral"]
    assert len(clipped) == 1 and clipped[0]["clip_x0"] == [-1.0, 1.0]
    assert any(r.get("grid_file") for r in runs)
    evals = [r for r in runs if "bpd" in r]
    assert len(evals) == 1 and np.isfinite(evals[0]["bpd"]) and np.isfinite(evals[0]["vlb_bpd"])
    swept = list((tmp_path / "multirun").rglob("summary.json"))
    assert len(swept) == 6
    assert len(list((tmp_path / "outputs" / "train").rglob("step_*.pt"))) == 1
