"""Tiny random diffusers models saved as local folders, for the tests of ``model=diffusers``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def tiny_unet(out_channels: int = 3, fourier: bool = False, seed: int = 0) -> Any:
    """A random UNet2DModel on 3×8×8 samples (block channels 8, 16); its last layer scaled by 0.1
    so that outputs are O(0.1) (a learned-range variance stays inside diffusers' [−1, 1])."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    extra: dict[str, Any] = {}
    if fourier:
        extra = {"time_embedding_type": "fourier", "flip_sin_to_cos": False, "freq_shift": 0}
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        **extra,
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    return unet.eval()


def save_pipeline(folder: Path, unet: Any, scheduler: Any) -> Path:
    """``folder`` as a diffusers pipeline: model_index.json, unet/, scheduler/."""
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "DDPMPipeline",
        "unet": ["diffusers", type(unet).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def save_model_folder(folder: Path, unet: Any, scheduler: Any) -> Path:
    """``folder`` as one model folder: config.json, weights and scheduler_config.json beside."""
    unet.save_pretrained(folder)
    scheduler.save_config(folder)
    return folder


def stand_in_cifar_model(folder: Path) -> None:
    """What the guide's "Use a pretrained model" commands expect in ``folder``: a tiny random DDPM
    pipeline as ``ddpm-cifar10-32`` (3×32×32, a 50-step chain) and fake CIFAR-10 binary batches
    in ``cifar-10-batches-bin`` (4 records a file)."""
    import diffusers
    import numpy as np

    unet = tiny_unet()
    unet = type(unet)(**{**unet.config, "sample_size": 32})
    save_pipeline(folder / "ddpm-cifar10-32", unet, diffusers.DDPMScheduler(50))
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir()
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        rng.integers(0, 256, (4, 1 + 3 * 32 * 32), dtype=np.uint8).tofile(batches / name)


def linspace_ancestral(scheduler: Any, steps: int, variance: str = "learned") -> Any:
    """sde_gen's ``Ancestral`` on the times of a ``DDPMScheduler`` with
    ``timestep_spacing="linspace"`` (k from N − 1 down to 0; diffusers' timestep k is the chain's
    node k + 1 at t = (k + 1)/N): both loops take the same steps, the last one (from k = 0)
    noiseless in both."""
    from sde_gen.solvers import Ancestral
    from sde_gen.solvers.fit_grid import FittedGrid

    scheduler.set_timesteps(steps)
    n = scheduler.config.num_train_timesteps
    knots = ((scheduler.timesteps.to(torch.float64) + 1) / n).tolist()
    return Ancestral(steps, t_min=1 / n, grid=FittedGrid(knots), variance=variance)
