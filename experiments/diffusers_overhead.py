"""The cost of ``model=diffusers``'s adapter against calling the UNet2DModel directly (issue 22).

A random UNet2DModel of google/ddpm-cifar10-32's configuration (35.7 M parameters, 3×32×32) is
saved to a temporary folder and loaded by ``load_diffusers``. Three samplers run DDIM (η = 0,
trailing grid, ``--steps`` evaluations) from the same x_T, interleaved ``--repeats`` times:

* ``adapter``: sde_gen's DDIM on the loaded ``ScoreModel`` (DiffusersNet, DiscreteIndex, Eps);
* ``direct``:  sde_gen's DDIM on a bare score function s(x, t) = −unet(x, N t − 1)/σ_t;
* ``diffusers``: diffusers' own DDIMScheduler loop on the same UNet.

It prints the median seconds of each, the ratios adapter/direct and adapter/diffusers, the
seconds per evaluation of one sample, and the FLOPs of one evaluation (torch's FlopCounterMode),
from which docs/guide.md estimates GPU costs. On a busy CPU the side-by-side times vary by more
than the adapter costs, so the adapter's own time is also measured apart: the same two score
functions around a stub UNet that returns its input (``--calls`` evaluations each, interleaved),
whose difference per evaluation, divided by the UNet's seconds per evaluation, is the overhead.

    python experiments/diffusers_overhead.py --steps 5 --batch 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

CIFAR10_DDPM = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
    "attention_head_dim": None,
}
"""The architecture of google/ddpm-cifar10-32's UNet2DModel (Ho et al.'s CIFAR-10 network)."""


def _save(folder: Path) -> torch.nn.Module:
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**CIFAR10_DDPM).eval()
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(timestep_spacing="trailing", clip_sample=False).save_pretrained(
        folder / "scheduler"
    )
    index = {"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"]}
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return unet


def _flops(unet: torch.nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500.0]))
    return int(counter.get_total_flops())


class StubUNet(torch.nn.Module):
    """A UNet2DModel's call signature at no cost: returns its input."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_dict: bool = False):
        return (x,)


def adapter_seconds(model: torch.nn.Module, calls: int, batch: int) -> dict[str, float]:
    """Seconds per evaluation of the loaded ScoreModel and of the bare score function, both
    around ``StubUNet`` (so only the adapter's own work is timed): medians of 5 interleaved
    blocks of ``calls`` evaluations."""
    from sde_gen.models.score_model import ScoreModel
    from sde_gen.networks.diffusers_folder import DiffusersNet

    sde = model.sde
    stub = StubUNet()
    wrapped = ScoreModel(DiffusersNet(stub, (3, 32, 32)), sde, model.param, model.time)

    def bare(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = sde.sigma(t.to(torch.float64)).to(x.dtype).view(-1, 1, 1, 1)
        return -stub(x, sde.N * t - 1)[0] / sigma

    x = torch.randn(batch, 3, 32, 32)
    t = torch.full((batch,), 0.5)
    blocks: dict[str, list[float]] = {"adapter": [], "direct": []}
    with torch.no_grad():
        for _ in range(5):
            for name, fn in (("adapter", wrapped), ("direct", bare)):
                start = time.perf_counter()
                for _ in range(calls):
                    fn(x, t)
                blocks[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(v) for name, v in blocks.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calls", type=int, default=2000, help="stub evaluations per block")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import DDIMScheduler

    from sde_gen.networks.diffusers_folder import load_diffusers
    from sde_gen.solvers import DDIM
    from sde_gen.solvers.grids import TrailingGrid

    folder = Path(tempfile.mkdtemp(prefix="diffusers_overhead_"))
    unet = _save(folder)
    model = load_diffusers(str(folder)).requires_grad_(False)
    sde = model.sde
    raw = model.eps_net.unet

    def bare_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = sde.sigma(t.to(torch.float64)).to(x.dtype).view(-1, 1, 1, 1)
        return -raw(x, sde.N * t - 1, return_dict=False)[0] / sigma

    solver = DDIM(args.steps, grid=TrailingGrid(), eta=0.0, final_step="zero")
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    x_T = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run_diffusers() -> torch.Tensor:
        scheduler.set_timesteps(args.steps)
        x = x_T
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k).sample, k, x, eta=0.0).prev_sample
        return x

    runs = {
        "adapter": lambda: solver(sde, model, x_T).x0,
        "direct": lambda: solver(sde, bare_score, x_T).x0,
        "diffusers": run_diffusers,
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    with torch.no_grad():
        for name, run in runs.items():  # warm-up
            outputs[name] = run()
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    ratios = [a / d for a, d in zip(seconds["adapter"], seconds["direct"], strict=True)]
    figures = {
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "median_s": med,
        "adapter_over_direct_median_of_pairs": statistics.median(ratios),
        "adapter_over_direct_pairs": ratios,
        "adapter_over_diffusers": med["adapter"] / med["diffusers"],
        "s_per_sample_eval": med["direct"] / (args.steps * args.batch),
        "flops_per_sample_eval": _flops(raw),
        "params": sum(p.numel() for p in raw.parameters()),
        "max_abs_diff_adapter_vs_diffusers": float(
            (outputs["adapter"] - outputs["diffusers"]).abs().max()
        ),
    }
    stub = adapter_seconds(model, args.calls, args.batch)
    per_eval = med["direct"] / args.steps
    figures["stub_s_per_eval"] = stub
    figures["adapter_s_per_eval"] = stub["adapter"] - stub["direct"]
    figures["adapter_fraction_of_eval"] = (stub["adapter"] - stub["direct"]) / per_eval
    print("| sampler | median s | ratio to direct |")
    print("|---|---|---|")
    for name in runs:
        print(f"| {name} | {med[name]:.3f} | {med[name] / med['direct']:.4f} |")
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
