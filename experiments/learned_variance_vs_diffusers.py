"""Learned variances of diffusers models: sde_gen's ancestral sampler against DDPMScheduler.

For each ``variance_type`` (fixed_small, learned_range, learned) a random UNet2DModel on 3×8×8
samples (its output layer scaled by 0.1; for ``learned`` the variance channels raised by 0.3 so
that Σ > 0) is saved with a DDPMScheduler (linear β, 1000 steps, ``timestep_spacing="linspace"``,
no clipping), loaded with ``model=diffusers`` and sampled in float64 by
``solver=ancestral solver.variance=learned`` (``beta_tilde`` for fixed_small) on the scheduler's
own times, with the same x_T and the same noise as diffusers' loop. Printed: the largest
|ours − theirs| / max |theirs| over all states, per step count, and the time of both loops.

    OMP_NUM_THREADS=1 python experiments/learned_variance_vs_diffusers.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from sde_gen.networks.diffusers_folder import load_diffusers
from sde_gen.solvers import Ancestral
from sde_gen.solvers.fit_grid import FittedGrid

F64 = torch.float64
STEPS = (10, 50, 1000)


def random_unet(variance_type: str):
    """A tiny random UNet2DModel (2C outputs for a learned variance), outputs O(0.1)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    learned = variance_type.startswith("learned")
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=6 if learned else 3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
        if variance_type == "learned":
            unet.conv_out.bias[3:] += 0.3
    return unet.eval()


def their_states(scheduler, unet, x_T, steps: int) -> list[torch.Tensor]:
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(1)
    x, states = x_T.clone(), [x_T]
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k).sample, k, x, generator=generator).prev_sample
            states.append(x)
    return states


def our_states(scheduler, model, x_T, steps: int, variance: str) -> list[torch.Tensor]:
    scheduler.set_timesteps(steps)
    n = scheduler.config.num_train_timesteps
    grid = FittedGrid(((scheduler.timesteps.to(F64) + 1) / n).tolist())
    solver = Ancestral(steps, t_min=1 / n, grid=grid, variance=variance)
    with torch.no_grad():
        result = solver(model.sde, model, x_T, torch.Generator().manual_seed(1), record=True)
    return list(result.trajectory)


def main() -> None:
    from diffusers import DDPMPipeline, DDPMScheduler

    print("| variance_type | steps | max relative state error | seconds (both loops) |")
    print("|---|---|---|---|")
    for variance_type in ("fixed_small", "learned_range", "learned"):
        scheduler = DDPMScheduler(
            variance_type=variance_type, clip_sample=False, timestep_spacing="linspace"
        )
        unet = random_unet(variance_type)
        with tempfile.TemporaryDirectory() as tmp:
            DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(Path(tmp) / "p")
            model = load_diffusers(str(Path(tmp) / "p")).double()
        unet = unet.double()
        variance = "beta_tilde" if variance_type == "fixed_small" else "learned"
        x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
        for steps in STEPS:
            start = time.perf_counter()
            theirs = their_states(scheduler, unet, x_T, steps)
            ours = our_states(scheduler, model, x_T, steps, variance)
            err = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, theirs))
            took = time.perf_counter() - start
            print(f"| {variance_type} | {steps} | {err:.1e} | {took:.1f} |")


if __name__ == "__main__":
    main()
