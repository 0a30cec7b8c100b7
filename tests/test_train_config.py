"""``sde-gen-train`` through Hydra: composition, experiments, config validation before any file
is written, summaries per run, and resume by key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from sde_gen.networks.checkpoint import load_score_model
from sde_gen.train import run
from sde_gen.training import checkpoint as ckpt

TINY = [
    "model.hidden=16",
    "model.num_layers=1",
    "model.embedding.dim=8",
    "trainer.steps=6",
    "trainer.batch_size=16",
    "trainer.log_every=2",
    "trainer.checkpoint_every=3",
    "trainer.sample_count=50",
    "trainer.progress=false",
    "solver.steps=5",
]


def _cfg(*overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_defaults_compose_and_experiments_select_without_plus():
    cfg = _cfg()
    assert cfg.sde._target_ == "sde_gen.sde.VPSDE"
    assert cfg.loss._target_ == "sde_gen.losses.DSMLoss"
    assert cfg.model._target_ == "sde_gen.models.MLP" and cfg.seed == 0 and cfg.device == "auto"
    toy = _cfg("experiment=toy2d")
    assert toy.trainer.steps == 3000 and toy.data._target_ == "sde_gen.data.ring_mixture"
    digits = _cfg("experiment=digits")
    assert digits.model._target_ == "sde_gen.models.UNet"
    assert digits.data._target_ == "sde_gen.data.Digits"


def test_tiny_run_writes_outputs_and_summary(tmp_path):
    choices = {"loss/weighting": "likelihood", "hydra/launcher": "basic"}
    cfg = _cfg(*TINY, "loss/weighting=likelihood")
    summary = run(cfg, tmp_path, progress=False, choices=choices)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["steps"] == 6 and on_disk["choice.loss/weighting"] == "likelihood"
    assert "choice.hydra/launcher" not in on_disk
    assert on_disk["loss.weighting._target_"] == "sde_gen.losses.LikelihoodWeighting"
    assert on_disk["final_loss"] == pytest.approx(summary["final_loss"])
    assert {"metrics.jsonl", "loss.png", "samples.png"} <= {p.name for p in tmp_path.iterdir()}
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [
        "step_00000003.pt",
        "step_00000006.pt",
    ]
    # the stored config rebuilds the same network (used by sde-gen-sample / sde-gen-eval)
    model, cfg, _ = load_score_model(tmp_path / "checkpoints" / "step_00000006.pt")
    assert cfg.model.hidden == 16
    assert cfg.loss.weighting._target_ == "sde_gen.losses.LikelihoodWeighting"


def test_resume_by_config_key_matches_uninterrupted_run(tmp_path):
    run(_cfg(*TINY), tmp_path / "full", progress=False)
    run(_cfg(*TINY, "trainer.steps=3"), tmp_path / "half", progress=False)
    half = tmp_path / "half" / "checkpoints" / "step_00000003.pt"
    run(_cfg(*TINY, f"trainer.resume={half}"), tmp_path / "rest", progress=False)
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "step_00000006.pt")
    b = ckpt.load_checkpoint(tmp_path / "rest" / "checkpoints" / "step_00000006.pt")
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.lr=0", "trainer.lr=0"),
        ("trainer.lr=-1e-3", "trainer.lr=-0.001"),
        ("trainer.steps=0", "trainer.steps=0"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay=1.0"),
        ("trainer.ema_decay=-0.1", "trainer.ema_decay=-0.1"),
        ("trainer.grad_clip=0", "trainer.grad_clip=0"),
        ("trainer.warmup_steps=-1", "trainer.warmup_steps=-1"),
        ("trainer.betas=[0.9,1.5]", "trainer.betas=[0.9, 1.5]"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0"),
        ("trainer.resume=/no/such/ckpt.pt", "/no/such/ckpt.pt"),
        ("+trainer.bogus=1", "trainer.bogus"),
        ("seed=-1", "seed=-1"),
        ("threads=0", "threads=0"),
        ("+loss.bogus=1", "bogus"),
        ("sde.beta_max=-1", "sde"),
        ("device=cuda:7" if not torch.cuda.is_available() else "device=nonsense", "device="),
        ("loss=ddpm_simple", "ddpm"),  # a DDPM loss on the continuous VP SDE
    ],
)
def test_bad_config_rejected_before_any_file(tmp_path, override, named):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        run(_cfg(*TINY, override), out, progress=False)
    assert named.lower() in str(err.value).lower()
    assert not out.exists()


def test_unet_depth_must_divide_image_size(tmp_path):
    cfg = _cfg("experiment=digits", "model.channel_mult=[1,2,2,2,2]", "trainer.progress=false")
    with pytest.raises(ValueError, match="model") as err:
        run(cfg, tmp_path / "run", progress=False)
    assert "16" in str(err.value) or "divisible" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_cli_multirun_writes_one_summary_per_weighting(tmp_path):
    """``sde-gen-train -m loss/weighting=sigma2,likelihood`` → two runs, two summaries, and the
    sweep collected into one table at the end (Hydra callback)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "sde_gen.train",
        "-m",
        "loss/weighting=sigma2,likelihood",
        *TINY,
        f"hydra.sweep.dir={tmp_path}",
        "hydra.job.chdir=false",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in sorted(Path(tmp_path).glob("*/summary.json"))]
    assert sorted(s["choice.loss/weighting"] for s in summaries) == ["likelihood", "sigma2"]
    assert all(s["steps"] == 6 for s in summaries)
    assert (Path(tmp_path) / "summaries.csv").is_file()


DDPM_DIGITS = [
    "data=digits",
    "sde=ddpm_linear",
    "model=unet_digits",
    "model.base_channels=16",
    "model.learn_variance=true",
]


def test_decoder_bins_come_from_the_data():
    """loss.num_bins=null takes the data's levels (17 for digits); an explicit value that
    disagrees with the data is rejected, naming both."""
    from sde_gen.cli.build import build_training

    parts = build_training(_cfg(*DDPM_DIGITS, "loss=ddpm_hybrid"))
    assert parts.loss_fn.num_bins == 17 == parts.data.num_bins
    with pytest.raises(ValueError, match=r"loss.num_bins=256 but the data have 17 levels"):
        build_training(_cfg(*DDPM_DIGITS, "loss=ddpm_hybrid", "loss.num_bins=256"))
