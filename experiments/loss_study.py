"""iDDPM's loss comparison (Nichol & Dhariwal 2021, §3) on scikit-learn's 8×8 digits with the
cosine chain (T = 1000): L_simple (fixed variance) vs L_hybrid and L_vlb (learned variance Σ_θ).

Every arm trains the same small U-Net (``digits_study.MODEL``; 2C output channels where Σ_θ is
learned) with the same seed, steps and batch; then on the 180 test images

* VLB bits/dim: L_vlb/(D ln 2) with all T terms and the discretized decoder L_0 (an upper bound
  on −log₂ P(x)/D of the 17 levels), Σ_θ where learned, else β̃ (``vlb_bits_per_dim``);
* Fréchet distance of ancestral samples (the full chain, and 100 steps) in the digits
  classifier's feature space, sampled with the arm's own variance: Σ_θ (``variance=learned``)
  where learned, else σ² = β (Ho et al.'s choice for L_simple).

Published direction (their Table 1 and Fig. 7, CIFAR-10/ImageNet 64): L_hybrid and L_vlb give a
lower NLL than L_simple; L_vlb costs sample quality (FID) against L_hybrid.

    .venv/bin/python experiments/loss_study.py --steps 4000          # the budget in results.md
    .venv/bin/python experiments/loss_study.py --steps 20 --smoke    # a tiny check
    .venv/bin/python experiments/loss_study.py --dry-run             # compose the arms only

Outputs in ``results/loss_study/``: one folder per arm, ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hydra
import torch
from digits_study import (
    ROOT,
    FeatureSpace,
    add_training_arguments,
    analytic_vlb,
    arm_config,
    cached_eval,
    eval_settings,
    train_arm,
)

from sde_gen.data import Digits
from sde_gen.evaluate import vlb_bits_per_dim
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.plotting import plot_image_grid
from sde_gen.solvers import Ancestral

CHAIN = ["sde=ddpm_cosine", "loss.schedule=null"]  # each loss takes the chain from the model
ARMS = {  # name: (overrides, label, learned variance)
    "simple": (["loss=ddpm_simple", *CHAIN], "L_simple (fixed σ²)", False),
    "hybrid": (
        ["loss=ddpm_hybrid_cosine", *CHAIN, "model.learn_variance=true"],
        "L_hybrid (λ = 0.001, learned Σ)",
        True,
    ),
    "vlb": (
        ["loss=ddpm_vlb_resample", *CHAIN, "model.learn_variance=true"],
        "L_vlb (resampled t, learned Σ)",
        True,
    ),
    "vlb_uniform": (
        ["loss=ddpm_vlb", *CHAIN, "model.learn_variance=true"],
        "L_vlb (uniform t, learned Σ)",
        True,
    ),
}
EVAL_KEYS = ("steps", "batch_size", "seed", "n_eval", "n_samples", "sample_steps", "clip_x0")
"""The evaluation arguments an arm's cached evaluation (``<arm>/eval.json``) is keyed by, beside
its training settings and the versions (``digits_study.eval_settings``)."""


def fd_of_samples(model, learned: bool, steps: int, space: FeatureSpace, args) -> tuple:
    """Fréchet distance of ``n_samples`` ancestral samples with ``steps`` score evaluations, x̂0
    clamped to the data range [−1, 1] at every step as improved-diffusion samples
    (``clip_denoised``; without it the first step of a 100-step cosine chain, from γ_T ≈ 5e-5,
    throws every sample out of range)."""
    variance = "learned" if learned else "beta"
    solver = Ancestral(
        steps=steps, t_min=1.0 / model.sde.N, variance=variance, clip_x0=args.clip_x0
    )
    g = torch.Generator().manual_seed(args.seed + 7)
    x_T = model.sde.prior_sample((args.n_samples, 1, 8, 8), g)
    with torch.no_grad():
        x0 = solver(model.sde, model, x_T, generator=g).x0.clamp(-1, 1)
    return space.frechet(x0), x0


def evaluate_arm(ckpt: str, learned: bool, data: Digits, space: FeatureSpace, args) -> dict:
    """VLB bits/dim on the test split and the Fréchet distance of the full and short chains."""
    model, _, _ = load_score_model(ckpt, "cpu", ema=True)
    model.requires_grad_(False)
    x_test = data.split("test", args.n_eval)
    start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    vlb = vlb_bits_per_dim(model, x_test, data.num_bins, generator=g)
    vlb_time = time.perf_counter() - start
    vlb_analytic = None if learned else analytic_vlb(model, data, x_test, args.seed)
    fd_full, x0 = fd_of_samples(model, learned, model.sde.N, space, args)
    fd_short, _ = fd_of_samples(model, learned, args.sample_steps, space, args)
    return {"vlb_bpd": vlb, "vlb_analytic_bpd": vlb_analytic, "vlb_time_s": vlb_time,
            "fd": fd_full, "fd_short": fd_short, "samples": x0}  # fmt: skip


def table(rows: dict, space: FeatureSpace, args, wall: float) -> str:
    lines = [
        f"| loss | VLB bits/dim (test) | Fréchet, {args.n_full} steps | Fréchet, "
        f"{args.sample_steps} steps |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        vlb = f"{r['vlb_bpd']:.3f}"
        if r.get("vlb_analytic_bpd") is not None:
            vlb += f" (Analytic-DPM σ*²: {r['vlb_analytic_bpd']:.3f})"
        lines.append(f"| {ARMS[name][1]} | {vlb} | {r['fd']:.2f} | {r['fd_short']:.2f} |")
    lines.append(f"| train split (floor) | – | {space.floor:.2f} | {space.floor:.2f} |")
    lines.append(
        f"\n{args.steps} steps × batch {args.batch_size}, seed {args.seed}, cosine chain T = 1000; "
        f"classifier test accuracy {space.accuracy:.3f}; {args.n_samples} samples; this "
        f"invocation took {wall / 60:.1f} min."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(p, steps=4000)
    p.add_argument("--sample-steps", type=int, default=100, help="the short chain's steps")
    p.add_argument(
        "--no-clip",
        dest="clip_x0",
        action="store_const",
        const=None,
        default=(-1.0, 1.0),
        help="sample without clamping x̂0 to [−1, 1] (improved-diffusion clamps it)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "loss_study")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["simple", "hybrid", "vlb"])
    p.add_argument("--smoke", action="store_true", help="tiny evaluation sizes for a quick check")
    p.add_argument("--dry-run", action="store_true", help="compose each arm's loss, then stop")
    args = p.parse_args()
    solver = ["solver=ancestral", "solver.steps=1000"]
    if args.dry_run:
        for name in args.arms:
            print(
                f"{name}: {hydra.utils.instantiate(arm_config(ARMS[name][0], args, solver).loss)!r}"
            )
        return
    if args.smoke:
        args.n_eval, args.n_samples, args.sample_steps, args.classifier_epochs = 8, 64, 10, 2
        args.out = args.out.with_name(args.out.name + "_smoke")
    args.n_full = 1000
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = Digits()
    space = FeatureSpace(data, args.out / "classifier.pt", args.classifier_epochs, args.n_samples)
    print(f"classifier test accuracy {space.accuracy:.3f}; Fréchet floor {space.floor:.2f}")
    configs = {name: arm_config(ARMS[name][0], args, solver) for name in args.arms}
    summaries = {name: train_arm(cfg, args.out / name) for name, cfg in configs.items()}
    rows = {}
    for name, summary in summaries.items():
        _, label, learned = ARMS[name]
        key = eval_settings(configs[name], args, EVAL_KEYS)

        def evaluate(summary: dict = summary, label: str = label, learned: bool = learned,
                     name: str = name) -> dict:  # fmt: skip
            r = evaluate_arm(summary["checkpoint"], learned, data, space, args)
            grid_path = args.out / name / "eval_samples.png"
            plot_image_grid(r.pop("samples")[:64], grid_path, title=label)
            r["train_wall_s"] = summary.get("wall_s")
            return r

        r = rows[name] = cached_eval(args.out / name, key, evaluate)
        print(f"{label}: VLB {r['vlb_bpd']:.3f} bits/dim, FD {r['fd']:.2f}", flush=True)
    wall = time.perf_counter() - start
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "floor": space.floor,
              "classifier_acc": space.accuracy, "arms": rows, "wall_s": wall}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    md = table(rows, space, args, wall)
    (args.out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
