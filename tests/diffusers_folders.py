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
