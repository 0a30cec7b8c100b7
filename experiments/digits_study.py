"""Shared parts of the digits studies (``weighting_study.py``, ``loss_study.py``): the small U-Net
every arm trains, the composed ``train`` config of an arm, training with reuse of a finished arm,
the feature classifier and the Fréchet distance of samples.

Both studies train on scikit-learn's 8×8 digits (17 grey levels in [−1, 1], 1617 train / 180 test
images) with the same network, optimiser and seed per arm, so the arms differ only in what the
study varies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from caching import cached_json, folder_is_current, stale_reason, stamp
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sde_gen.data import Digits
from sde_gen.evaluate import vlb_bits_per_dim
from sde_gen.metrics.images import feature_vectors, frechet_distance
from sde_gen.models.digits_classifier import (
    digits_labels,
    fit_digits_classifier,
    pretrained_digits_classifier,
)
from sde_gen.runtime.files import atomic_write
from sde_gen.sde.reverse_variance import analytic_chain_log_variance
from sde_gen.solvers.calibration import CalibrationKey, estimate_ms_eps

ROOT = Path(__file__).resolve().parents[1]
MODEL = [  # a small U-Net: 16 base channels, 8→4 resolutions, attention at 4×4 (177k parameters)
    "model=unet_digits",
    "model.base_channels=16",
    "model.channel_mult=[1,2]",
    "model.attn_resolutions=[4]",
    "model.embedding.dim=16",
]


def add_training_arguments(p: argparse.ArgumentParser, steps: int) -> None:
    """The options every digits study shares (budget, optimiser, seed, evaluation sizes)."""
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=None, help="test images to evaluate (all: 180)")
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--classifier-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)


def arm_config(arm: list[str], args: argparse.Namespace, solver: list[str]) -> DictConfig:
    """The composed ``train`` config of one arm (its overrides on top of the shared ones)."""
    from hydra import compose, initialize_config_module

    overrides = [
        "data=digits", *MODEL, f"seed={args.seed}", "device=cpu",
        f"trainer.steps={args.steps}", f"trainer.batch_size={args.batch_size}",
        f"trainer.lr={args.lr}", f"trainer.warmup_steps={min(100, args.steps // 10)}",
        f"trainer.ema_decay={args.ema_decay}", f"trainer.log_every={max(1, args.steps // 50)}",
        "trainer.checkpoint_every=null", "trainer.keep_checkpoints=1", "trainer.progress=false",
        "trainer.resume=auto",  # an arm stopped by a signal continues from its checkpoint
        "trainer.grad_clip=1.0",  # the studies' documented set-up (the trainer's default: none)
        *solver, *arm,
    ]  # fmt: skip
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def training_settings(cfg: DictConfig) -> dict:
    """Every setting a trained arm depends on: its composed config less the sampler run after
    training (whose samples no study reads)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("solver", None)
    return settings


def train_arm(cfg: DictConfig, out_dir: Path) -> dict:
    """Train ``cfg`` into ``out_dir`` (continuing a stopped run there), or reuse a finished run
    made under the same key (``training_settings`` and the versions); a run made under another
    key is moved aside and trained afresh."""
    from sde_gen.train import run

    summary_path = out_dir / "summary.json"
    if folder_is_current(out_dir, training_settings(cfg)) and summary_path.is_file():
        return json.loads(summary_path.read_text())
    return run(cfg, out_dir, progress=False, choices={"model": "unet_digits"})


def eval_settings(cfg: DictConfig, args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    """What an arm's evaluation depends on: the trained arm's settings, the classifier's
    training and the evaluation arguments ``keys``."""
    return {
        "training": training_settings(cfg),
        "classifier_epochs": args.classifier_epochs,
        "evaluation": {k: getattr(args, k) for k in keys},
    }


def cached_eval(out_dir: Path, settings: dict, evaluate) -> dict:
    """``evaluate()`` unless ``<out_dir>/eval.json`` holds a result computed under the same key
    (``settings`` and the versions, ``caching.cache_key``)."""
    return cached_json(out_dir / "eval.json", settings, evaluate)


class FeatureSpace:
    """The digits classifier's penultimate features (trained here and cached at ``path``), the
    test split's features, and the Fréchet floor: train images against test images."""

    def __init__(self, data: Digits, path: Path, epochs: int, n_floor: int):
        settings = {"epochs": epochs, "seed": 0, "data": "digits"}
        key_path = path.with_suffix(".key.json")
        stored = json.loads(key_path.read_text()) if key_path.is_file() else None
        reason = stale_reason(stored, settings) if path.is_file() else "not trained yet"
        if path.is_file() and reason is not None:
            print(f"recomputing {path}: {reason}", flush=True)
        if reason is None:
            self.net: nn.Module = pretrained_digits_classifier(str(path))
            _, y_test = digits_labels(data)
            with torch.no_grad():
                self.accuracy = float((self.net(data.test_data).argmax(1) == y_test).float().mean())
        else:
            self.net, self.accuracy = fit_digits_classifier(data, epochs, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: torch.save(self.net.state_dict(), tmp))
            atomic_write(key_path, lambda tmp: Path(tmp).write_text(json.dumps(stamp(settings))))
        self.test = feature_vectors(self.net, data.split("test"))
        self.floor = self.frechet(data.train_data[: min(n_floor, len(data.train_data))])

    def features(self, x: torch.Tensor) -> np.ndarray:
        return feature_vectors(self.net, x)

    def frechet(self, x: torch.Tensor) -> float:
        """Fréchet distance of Gaussians fitted to the features of ``x`` and of the test split."""
        return frechet_distance(self.features(x), self.test)


def analytic_vlb(
    model: nn.Module, data: Digits, x_test: torch.Tensor, seed: int, estimator: str = "eps_norm"
) -> float:
    """VLB bits/dim of a DDPM model with Analytic-DPM's variances σ*²_n (Bao et al. 2022) in
    place of its own: Γ_n at every step from 500 training images (``estimator``: the paper's
    E‖ε_θ(x_n, n)‖²/d, or ``residual``), clipped to Theorem 2's range for data in [−1, 1]."""
    sde = model.sde
    times = torch.arange(1, sde.N + 1, dtype=torch.float64) / sde.N
    key = CalibrationKey.of(sde, times, None, 500, seed, torch.float32, estimator)
    calibration = estimate_ms_eps(sde, model, data.split("train"), key, 500, torch.float32)
    ms_eps = torch.tensor(calibration.ms_eps, dtype=torch.float64)
    log_var = analytic_chain_log_variance(sde.betas, ms_eps, half_width=1.0)
    g = torch.Generator().manual_seed(seed)
    return vlb_bits_per_dim(model, x_test, data.num_bins, generator=g, log_variance=log_var)
