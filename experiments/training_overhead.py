"""Training-loop overhead: steps/s of the real ``Trainer`` vs a bare forward+backward+AdamW loop.

Both train the same network (from the composed ``train`` config, default ``experiment=toy2d``)
on the same batch size, data source and loss, in one process, interleaved in blocks (ABBA order)
so that load on a shared machine hits both alike. The trainer's extra work per step: the finite-
loss check, gradient-norm clipping, the warm-up scheduler, the EMA update, metrics and tqdm.

    .venv/bin/python experiments/training_overhead.py                       # toy2d MLP
    .venv/bin/python experiments/training_overhead.py experiment=digits --block-steps 10
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sde_gen.cli.build import build_training
from sde_gen.cli.settings import TrainConfig, settings_from
from sde_gen.runtime.resources import pick_device, seed_everything
from sde_gen.training.trainer import Trainer


class BareLoop:
    """x0 ~ data, loss, backward, AdamW step: nothing else."""

    def __init__(self, model, loss_fn, data, batch_size: int, lr: float, device, seed: int):
        self.model, self.loss_fn, self.data = model.to(device), loss_fn, data
        self.batch_size, self.device = batch_size, device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.data_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device).manual_seed(seed + 1)

    def advance(self, n: int) -> None:
        for _ in range(n):
            x0 = self.data.sample(self.batch_size, self.data_generator).to(self.device)
            loss = self.loss_fn(self.model, x0, self.noise_generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["experiment=toy2d"])
    parser.add_argument("--blocks", type=int, default=8, help="ABBA pairs of timed blocks")
    parser.add_argument("--block-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    settings = settings_from(cfg, TrainConfig)
    device = pick_device(settings.device)
    seed_everything(cfg.seed)
    parts = build_training(cfg)
    bare_model = copy.deepcopy(parts.model)
    tc = settings.trainer
    k = args.block_steps
    tc.steps = (2 * args.blocks + 1) * k
    tc.checkpoint_every, tc.sample_every, tc.progress = None, None, True
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            parts.model, parts.loss_fn, parts.data, out, tc, device=device, seed=cfg.seed
        )
        bare = BareLoop(
            bare_model, parts.loss_fn, parts.data, tc.batch_size, tc.lr, device, cfg.seed
        )
        trainer.begin()
        try:
            trainer.advance(k // 2)  # warm-up of both (not timed)
            bare.advance(k // 2)
            pairs = []
            for i in range(args.blocks):
                order = (
                    (trainer.advance, bare.advance)
                    if i % 2 == 0
                    else (bare.advance, trainer.advance)
                )
                rates = {fn: timed(fn, k) for fn in order}
                pairs.append((rates[trainer.advance], rates[bare.advance]))
        finally:
            trainer.end()
    ratios = [t / b for t, b in pairs]
    result = {
        "overrides": args.overrides,
        "params": sum(p.numel() for p in parts.model.parameters()),
        "batch_size": tc.batch_size,
        "threads": args.threads,
        "block_steps": k,
        "blocks": args.blocks,
        "trainer_steps_per_s": statistics.median(t for t, _ in pairs),
        "bare_steps_per_s": statistics.median(b for _, b in pairs),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print()
    print("| setting | trainer steps/s | bare steps/s | ratio (median, min–max) |")
    print("|---|---|---|---|")
    print(
        f"| {' '.join(args.overrides)}, {result['params']} params, batch {tc.batch_size}, "
        f"{args.threads} thread(s) | {result['trainer_steps_per_s']:.1f} | "
        f"{result['bare_steps_per_s']:.1f} | {result['ratio_median']:.3f} "
        f"({result['ratio_min']:.3f}–{result['ratio_max']:.3f}) |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
