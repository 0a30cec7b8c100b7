"""Training throughput (images/s) of the 32×32 U-Net (``model=unet32``): the real ``Trainer``
against a bare loop, fp32 against bf16, eager against ``torch.compile``, on whatever device it
finds.

The bare loop is what any training needs and nothing else: x0 from the data, the DSM loss,
backward, AdamW. The trainer adds the DataLoader feed of a finite set, gradient clipping, the
non-finite guard, the warm-up scheduler, the EMA and its metrics. Both run the same network
(same width, precision, compile) on the same batch, interleaved in ABBA blocks so that load on a
shared machine hits both alike; compile time and the first steps are excluded (warm-up block).

    .venv/bin/python experiments/train_throughput.py                          # GPU: batch 128
    .venv/bin/python experiments/train_throughput.py --width 32 --batch 8     # a CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sde_gen.data.base import TensorData
from sde_gen.losses import DSMLoss
from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.wrap import score_model_from_config
from sde_gen.runtime.resources import pick_device
from sde_gen.sde import VPSDE
from sde_gen.training.loop import AUTOCAST, AutocastNet
from sde_gen.training.settings import Precision, TrainerSettings
from sde_gen.training.trainer import Trainer

SHAPE = (3, 32, 32)


def unet32(width: int) -> torch.nn.Module:
    """``model=unet32`` from the configs, with ``base_channels=width`` (128 as published)."""
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("train", overrides=["model=unet32", f"model.base_channels={width}"])
    return score_model_from_config(cfg.model, VPSDE(), SHAPE).eps_net


class BareLoop:
    """x0 ~ data, loss, backward, AdamW: nothing else (same precision and compile)."""

    def __init__(
        self,
        model: ScoreModel,
        data,
        batch: int,
        precision: Precision,
        compiled: bool,
        device: torch.device,
    ):
        self.model, self.data, self.batch, self.device = model.to(device), data, batch, device
        net: torch.nn.Module = AutocastNet(model.eps_net, AUTOCAST[precision], device.type)
        self.view = ScoreModel(torch.compile(net) if compiled else net, model.sde)
        self.loss = DSMLoss()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.data_generator = torch.Generator().manual_seed(0)
        self.noise_generator = torch.Generator(device).manual_seed(1)

    def advance(self, n: int) -> None:
        for _ in range(n):
            x0 = self.data.sample(self.batch, self.data_generator).to(self.device)
            loss = self.loss(self.view, x0, self.noise_generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, n: int, device: torch.device) -> float:
    """Seconds for ``run(n)``, the device drained before and after."""
    _sync(device)
    t0 = time.perf_counter()
    run(n)
    _sync(device)
    return time.perf_counter() - t0


def measure(args, precision: Precision, compiled: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = ScoreModel(unet32(args.width), VPSDE())
    data = TensorData(
        torch.rand(args.images, *SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    bare = BareLoop(copy.deepcopy(model), data, args.batch, precision, compiled, device)
    settings = TrainerSettings(
        steps=(2 * args.blocks + 1) * args.block_steps + 1,
        batch_size=args.batch,
        lr=1e-4,
        warmup_steps=10,
        log_every=args.block_steps,
        checkpoint_every=None,
        progress=False,
        precision=precision,
        compile=compiled,
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, DSMLoss(), data, out, settings, device=device)
        trainer.begin()
        try:
            timed(trainer.advance, args.block_steps, device)  # warm-up (and compile)
            timed(bare.advance, args.block_steps, device)
            seconds = {"trainer": 0.0, "bare": 0.0}
            for k in range(args.blocks):  # ABBA
                order = ("trainer", "bare") if k % 2 == 0 else ("bare", "trainer")
                for name in order:
                    run = trainer.advance if name == "trainer" else bare.advance
                    seconds[name] += timed(run, args.block_steps, device)
        finally:
            trainer.end()
    images = args.blocks * args.block_steps * args.batch
    rate = {name: images / s for name, s in seconds.items()}
    return {
        "precision": precision.value,
        "compile": compiled,
        "trainer_images_per_s": rate["trainer"],
        "bare_images_per_s": rate["bare"],
        "ratio": rate["trainer"] / rate["bare"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="default 128 on CUDA, 8 on a CPU")
    parser.add_argument("--width", type=int, default=None, help="base_channels (128; CPU: 32)")
    parser.add_argument("--images", type=int, default=512, help="size of the in-memory data set")
    parser.add_argument("--blocks", type=int, default=4, help="ABBA pairs of timed blocks")
    parser.add_argument("--block-steps", type=int, default=10)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--compile", default="false,true", help="eager (false), compiled (true)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (128 if cuda else 8)
    args.width = args.width or (128 if cuda else 32)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.precisions.split(","):
        for compiled in (c.strip() == "true" for c in args.compile.split(",")):
            try:
                rows.append(measure(args, Precision(name), compiled, device))
            except Exception as e:  # e.g. no C++ compiler for torch.compile on this machine
                rows.append({"precision": name, "compile": compiled, "error": str(e)[:120]})
            print(json.dumps(rows[-1]), flush=True)
    where = (
        torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"\nU-Net 32×32, base_channels={args.width}, batch {args.batch}, {where}, "
        f"torch {torch.__version__}\n"
    )
    print("| precision | compile | trainer img/s | bare img/s | trainer/bare |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['precision']} | {r['compile']} | — | — | failed: {r['error']} |")
        else:
            print(
                f"| {r['precision']} | {r['compile']} | {r['trainer_images_per_s']:.1f} | "
                f"{r['bare_images_per_s']:.1f} | {r['ratio']:.3f} |"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "device": where, "rows": rows},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
