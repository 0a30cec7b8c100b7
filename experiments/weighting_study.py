"""Weighting study: λ(t) = σ_t² ("perceptual", uniform t) vs λ(t) = β(t) (likelihood weighting,
importance-sampled t) for the same small U-Net on scikit-learn's 8×8 digits (VP SDE).

Each arm is trained with the same seed, steps and batch size through ``sde_gen.train.run``; then

* bits/dim on the test split: PF-ODE with Hutchinson's trace (``sde_gen.evaluate``), uniform
  dequantization on the 17 grey levels;
* VLB bits/dim: only defined for the discrete DDPM chain, so n/a for the two continuous-time
  arms; a third arm (DDPM L_simple on the T = 1000 linear chain, same network) has both;
* sample quality: Fréchet distance between Gaussians fitted to the penultimate-layer features of
  a small digits classifier (trained here on the train split and saved) of generated samples
  (Euler–Maruyama) and of the test split; the train split against the test split gives the floor.

    .venv/bin/python experiments/weighting_study.py                      # the real budget
    .venv/bin/python experiments/weighting_study.py --steps 20 --smoke   # a tiny check
    .venv/bin/python experiments/weighting_study.py --dry-run            # compose the arms only

Outputs in ``results/weighting_study/``: one folder per arm (checkpoints, samples.png, eval),
``classifier.pt``, ``results.json`` and ``results.md`` (the table for docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from sde_gen.checkpoint import load_score_model
from sde_gen.data import Digits
from sde_gen.evaluate import likelihood_report, vlb_bits_per_dim
from sde_gen.models.digits_classifier import (
    digits_labels,
    fit_digits_classifier,
    pretrained_digits_classifier,
)
from sde_gen.sample_quality import feature_vectors, frechet_distance
from sde_gen.sde import DiscreteVPSDE
from sde_gen.solvers import EulerMaruyama

ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # name: (overrides, label); the DDPM arm is the only one with a VLB
    "sigma2": (
        ["sde=vp", "loss=dsm", "loss/weighting=sigma2", "loss/time_sampler=uniform"],
        "λ = σ² (uniform t)",
    ),
    "likelihood_is": (
        ["sde=vp", "loss=dsm", "loss/weighting=likelihood", "loss/time_sampler=importance"],
        "λ = β (likelihood, IS)",
    ),
    "ddpm_simple": (
        ["sde=ddpm_linear", "loss=ddpm_simple", "loss.num_bins=17"],
        "DDPM L_simple (discrete, T = 1000)",
    ),
}
EVAL_KEYS = ("steps", "batch_size", "seed", "n_eval", "num_dequant", "n_samples", "sample_steps")
"""A finished arm's evaluation is reused when these arguments match (``<arm>/eval.json``)."""
MODEL = [  # a small U-Net: 16 base channels, 8→4 resolutions, attention at 4×4
    "model=unet_digits",
    "model.base_channels=16",
    "model.channel_mult=[1,2]",
    "model.attn_resolutions=[4]",
    "model.embedding.dim=16",
]


# -- the feature network: sde_gen.models.digits_classifier, metrics: sde_gen.sample_quality ----
def train_classifier(data: Digits, path: Path, epochs: int, seed: int) -> tuple[nn.Module, float]:
    """The digits classifier trained here (cached at ``path``) and its test accuracy."""
    if path.is_file():
        net = pretrained_digits_classifier(str(path))
        _, y_test = digits_labels(data)
        with torch.no_grad():
            acc = float((net(data.test_data).argmax(1) == y_test).float().mean())
        return net, acc
    net, acc = fit_digits_classifier(data, epochs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net, acc


def features(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    return feature_vectors(net, x)


# -- one arm ----------------------------------------------------------------------------------
def arm_config(arm: list[str], args: argparse.Namespace) -> DictConfig:
    """The composed ``train`` config of one arm at this budget."""
    from hydra import compose, initialize_config_module

    overrides = [
        "data=digits", *arm, *MODEL, f"seed={args.seed}", "device=cpu",
        f"trainer.steps={args.steps}", f"trainer.batch_size={args.batch_size}",
        f"trainer.lr={args.lr}", f"trainer.warmup_steps={min(100, args.steps // 10)}",
        f"trainer.ema_decay={args.ema_decay}", f"trainer.log_every={max(1, args.steps // 50)}",
        "trainer.checkpoint_every=null", "trainer.keep_checkpoints=1", "trainer.progress=false",
        "solver=euler_maruyama", f"solver.steps={args.sample_steps}",
    ]  # fmt: skip
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def train_arm(arm: list[str], out_dir: Path, args: argparse.Namespace) -> dict:
    """Train (or reuse a finished run of the same budget) and return its summary."""
    from sde_gen.train import run

    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("steps") == args.steps and done.get("trainer.batch_size") == args.batch_size:
            return done
    cfg = arm_config(arm, args)
    return run(cfg, out_dir, progress=False, choices={"model": "unet_digits"})


def evaluate_arm(ckpt: str, data: Digits, classifier: nn.Module, args) -> dict:
    """bits/dim (PF-ODE, Hutchinson) on the test split and the feature Fréchet distance."""
    model, _, _ = load_score_model(ckpt, "cpu", ema=True)
    model.requires_grad_(False)
    x_test = data.split("test", args.n_eval)
    start = time.perf_counter()
    report = likelihood_report(
        model.sde, model, x_test, num_bins=data.num_bins, batch_size=len(x_test),
        num_dequant=args.num_dequant, generator=torch.Generator().manual_seed(args.seed),
        num_probes=1, rtol=1e-5, atol=1e-5, per_sample=True,
    )  # fmt: skip
    bpd_time = time.perf_counter() - start
    vlb = None  # the DDPM VLB exists only for the discrete chain
    if isinstance(model.sde, DiscreteVPSDE):
        vlb = vlb_bits_per_dim(
            model, x_test, data.num_bins, generator=torch.Generator().manual_seed(args.seed)
        )
    g = torch.Generator().manual_seed(args.seed + 7)
    x_T = model.sde.prior_sample((args.n_samples, *data.shape), g)
    solver = EulerMaruyama(steps=args.sample_steps, t_min=1e-3, denoise_final=True)
    with torch.no_grad():
        x0 = solver(model.sde, model, x_T, generator=g).x0.clamp(-1, 1)
    fd = frechet_distance(features(classifier, x0), features(classifier, data.split("test")))
    return {
        "bpd": report["bpd"],
        "bpd_se": report["bpd_se"],
        "bpd_per_sample": report["bpd_per_sample"],
        "nll_nats": report["nll_nats"],
        "nfe_bpd": report["nfe"],
        "bpd_time_s": bpd_time,
        "vlb_bpd": vlb,
        "fd": fd,
        "samples": x0,
    }


def table(rows: dict, floor: float, acc: float, args, wall: float) -> str:
    lines = [
        f"| weighting | bits/dim (ODE, test, ±s.e.) | VLB bits/dim | Fréchet distance "
        f"(n={args.n_samples} vs test) |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {ARMS[name][1]} | {r['bpd']:.3f} ± {r['bpd_se']:.3f} | "
            + ("n/a (continuous SDE)" if r["vlb_bpd"] is None else f"{r['vlb_bpd']:.3f}")
            + f" | {r['fd']:.2f} |"
        )
    lines.append(f"| train split (floor) | – | – | {floor:.2f} |")
    lines.append(
        f"\n{args.steps} steps × batch {args.batch_size}, seed {args.seed}; classifier test "
        f"accuracy {acc:.3f}; Euler–Maruyama {args.sample_steps} steps; this invocation took "
        f"{wall / 60:.1f} min."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=None, help="test images for bits/dim (all: 180)")
    p.add_argument("--num-dequant", type=int, default=1)
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--classifier-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "weighting_study")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    p.add_argument("--smoke", action="store_true", help="tiny evaluation sizes for a quick check")
    p.add_argument("--dry-run", action="store_true", help="compose each arm's loss, then stop")
    args = p.parse_args()
    if args.dry_run:
        for name in args.arms:
            loss = hydra.utils.instantiate(arm_config(ARMS[name][0], args).loss)
            print(f"{name}: {loss!r}")
        return
    if args.smoke:
        args.n_eval, args.n_samples, args.sample_steps, args.classifier_epochs = 8, 64, 10, 2
        args.out = args.out.with_name(args.out.name + "_smoke")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = Digits()
    classifier, acc = train_classifier(data, args.out / "classifier.pt", args.classifier_epochs, 0)
    test_feats = features(classifier, data.split("test"))
    n_floor = min(args.n_samples, len(data.train_data))
    floor = frechet_distance(features(classifier, data.train_data[:n_floor]), test_feats)
    print(f"classifier test accuracy {acc:.3f}; Fréchet floor (train vs test) {floor:.2f}")
    rows = {}
    for name in args.arms:
        overrides, label = ARMS[name]
        summary = train_arm(overrides, args.out / name, args)
        key = {k: getattr(args, k) for k in EVAL_KEYS}
        cached = args.out / name / "eval.json"
        if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
            r = json.loads(cached.read_text())["result"]
        else:
            r = evaluate_arm(summary["checkpoint"], data, classifier, args)
            from sde_gen.plotting import plot_image_grid

            plot_image_grid(
                r.pop("samples")[:64], args.out / name / "eval_samples.png", title=label
            )
            r["train_wall_s"] = summary.get("wall_s")
            cached.write_text(json.dumps({"key": key, "result": r}, indent=2))
        rows[name] = r
        print(f"{label}: bpd {r['bpd']:.3f} ± {r['bpd_se']:.3f}, FD {r['fd']:.2f}", flush=True)
    wall = time.perf_counter() - start
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "classifier_acc": acc,
              "fd_floor": floor, "arms": rows, "wall_s": wall}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    md = table(rows, floor, acc, args, wall)
    if {"likelihood_is", "sigma2"} <= set(rows):
        lik, sig = rows["likelihood_is"], rows["sigma2"]
        diff = np.array(lik["bpd_per_sample"]) - np.array(sig["bpd_per_sample"])
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        md += (
            f"\nLikelihood − σ² weighting: Δbits/dim = {diff.mean():+.3f} ± {se:.3f} (paired over "
            f"the same test images; published direction: < 0), ΔFréchet = "
            f"{lik['fd'] - sig['fd']:+.2f} (published direction: > 0, σ² gives better samples)."
        )
    (args.out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
