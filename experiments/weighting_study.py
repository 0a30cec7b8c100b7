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
    .venv/bin/python experiments/weighting_study.py --seeds 0 1 2 \
        --arms sigma2_deq likelihood_is_deq                              # Δ across seeds

``--seeds``: the training seeds (initial weights and data order; the evaluation's probes and
dequantization noise too); Δ against λ = σ² is then reported per seed (± over test images) and
across seeds (mean ± s.e. over seeds).

Outputs in ``results/weighting_study/``: one folder per seed and arm (``seed<k>/<arm>``:
checkpoints, samples.png, eval), ``classifier.pt``, ``results.json`` and ``results.md`` (the
tables for docs/results.md). A trained arm and its evaluation are reused only under the same
settings and versions (``caching``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hydra
import numpy as np
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
from omegaconf import DictConfig

from sde_gen.cli.build import match_bins
from sde_gen.data import Digits
from sde_gen.evaluate import likelihood_report, vlb_bits_per_dim, vlb_bpd
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.plotting import plot_image_grid
from sde_gen.sde import VDMSDE, DiscreteVPSDE
from sde_gen.solvers import EulerMaruyama

LIKELIHOOD_IS = ["sde=vp", "loss=dsm", "loss/weighting=likelihood", "loss/time_sampler=importance"]
DEQ = "data.dequantize=true"
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
    # the suspects for λ = β's higher bits/dim, one change at a time
    "likelihood_uniform": (
        ["sde=vp", "loss=dsm", "loss/weighting=likelihood", "loss/time_sampler=uniform"],
        "λ = β (likelihood, uniform t)",
    ),
    "likelihood_is_noclip": (
        [*LIKELIHOOD_IS, "trainer.grad_clip=null"],
        "λ = β (IS), no gradient clipping",
    ),
    "likelihood_is_ema": ([*LIKELIHOOD_IS, "trainer.ema_decay=0.999"], "λ = β (IS), EMA 0.999"),
    "likelihood_is_tmin": ([*LIKELIHOOD_IS, "loss.t_min=1e-3"], "λ = β (IS), t_min = 1e-3"),
    # Song et al. (2021) fit the density of dequantized data: train on x + U(bin)
    "sigma2_deq": (
        ["sde=vp", "loss=dsm", "loss/weighting=sigma2", "loss/time_sampler=uniform", DEQ],
        "λ = σ² (uniform t), dequantized training data",
    ),
    "likelihood_is_deq": ([*LIKELIHOOD_IS, DEQ], "λ = β (IS), dequantized training data"),
    # VDM: the continuous VLB (λ = g² DSM up to ½) with a learned schedule, dequantized inside
    "vdm": (["sde=vdm", "loss=vdm"], "VDM (learned schedule, continuous VLB)"),
}
EVAL_KEYS = ("seed", "n_eval", "num_dequant", "n_samples", "sample_steps")
"""The evaluation arguments an arm's cached evaluation (``<arm>/eval.json``) is keyed by, beside
its training settings and the versions (``digits_study.eval_settings``)."""


def config(arm: list[str], args: argparse.Namespace) -> DictConfig:
    """The composed ``train`` config of one arm at this budget."""
    return arm_config(arm, args, ["solver=euler_maruyama", f"solver.steps={args.sample_steps}"])


def loss_statistics(cfg: DictConfig, summary: dict, out_dir: Path, args) -> dict:
    """Scale and spread of the arm's own training loss at its final raw weights (mean and
    coefficient of variation of the per-sample loss over 4096 draws), and the gradient norms
    logged in the second half of training (median; share above the clip threshold)."""
    model, _, _ = load_score_model(summary["checkpoint"], "cpu", ema=False)
    model.requires_grad_(False)
    data = hydra.utils.instantiate(cfg.data)
    loss_fn = hydra.utils.instantiate(cfg.loss)
    match_bins(loss_fn, data)
    g = torch.Generator().manual_seed(args.seed + 11)
    x0 = data.sample(4096, g)
    with torch.no_grad():
        per = loss_fn.evaluate(model, x0, loss_fn.draw(model, x0, g)).loss.double()
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    norms = np.array([r["grad_norm"] for r in rows if r["step"] > args.steps // 2])
    clip = cfg.trainer.grad_clip
    return {
        "loss_mean": float(per.mean()),
        "loss_cv": float(per.std() / per.mean()),
        "grad_norm_median": float(np.median(norms)),
        "clipped_share": None if clip is None else float((norms > clip).mean()),
    }


def evaluate_arm(ckpt: str, data: Digits, space: FeatureSpace, args) -> dict:
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
    vlb = vlb_analytic = None  # bounds exist for the discrete chain and VDM only
    if isinstance(model.sde, VDMSDE):
        g = torch.Generator().manual_seed(args.seed)
        vlb = float(vlb_bpd(model, x_test, data.num_bins, g).mean())
    if isinstance(model.sde, DiscreteVPSDE):
        vlb_analytic = analytic_vlb(model, data, x_test, args.seed)
        vlb = vlb_bits_per_dim(
            model, x_test, data.num_bins, generator=torch.Generator().manual_seed(args.seed)
        )
    g = torch.Generator().manual_seed(args.seed + 7)
    x_T = model.sde.prior_sample((args.n_samples, *data.shape), g)
    solver = EulerMaruyama(steps=args.sample_steps, t_min=1e-3, denoise_final=True)
    with torch.no_grad():
        x0 = solver(model.sde, model, x_T, generator=g).x0.clamp(-1, 1)
    fd = space.frechet(x0)
    return {
        "bpd": report["bpd"],
        "bpd_se": report["bpd_se"],
        "bpd_per_sample": report["bpd_per_sample"],
        "nll_nats": report["nll_nats"],
        "nfe_bpd": report["nfe"],
        "bpd_time_s": bpd_time,
        "vlb_bpd": vlb,
        "vlb_analytic_bpd": vlb_analytic,
        "fd": fd,
        "samples": x0,
    }


def baseline(name: str) -> str:
    """The arm an arm's Δ is paired against: λ = σ² trained on the same (dequantized or not)
    data."""
    return "sigma2_deq" if name.endswith("_deq") else "sigma2"


def paired_delta(r: dict, base: dict) -> tuple[float, float]:
    """Mean and standard error over test images of the paired bits/dim difference ``r − base``
    (same images, probes and dequantization noise)."""
    diff = np.array(r["bpd_per_sample"]) - np.array(base["bpd_per_sample"])
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def spread(values: list[float]) -> dict[str, float]:
    """Mean, its standard error s/√k, standard deviation s and range of k per-seed values."""
    v = np.array(values, dtype=np.float64)
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": sd / np.sqrt(len(v)), "sd": sd,
            "min": float(v.min()), "max": float(v.max())}  # fmt: skip


def seed_table(per_seed: dict[int, dict], args) -> str:
    """Per seed: each arm's bits/dim against its λ = σ² baseline and the paired Δ (± s.e. over
    test images); then across seeds: Δ's mean ± s.e. over seeds, s.d., range, and the mean
    within-seed s.e."""
    lines = []
    for name in args.arms:
        base = baseline(name)
        seeds = [
            k for k, rows in per_seed.items() if name in rows and base in rows and name != base
        ]
        if not seeds:
            continue
        lines += [
            f"\n**{ARMS[name][1]}** against **{ARMS[base][1]}**\n",
            "| seed | bits/dim λ = σ² | bits/dim this arm | Δ (paired, ± s.e. over test images) "
            "| Fréchet λ = σ² | Fréchet this arm |",
            "|---|---|---|---|---|---|",
        ]
        deltas, within = [], []
        for k in seeds:
            r, b = per_seed[k][name], per_seed[k][base]
            d, se = paired_delta(r, b)
            deltas.append(d)
            within.append(se)
            lines.append(f"| {k} | {b['bpd']:.3f} | {r['bpd']:.3f} | {d:+.3f} ± {se:.3f} | "
                         f"{b['fd']:.2f} | {r['fd']:.2f} |")  # fmt: skip
        s = spread(deltas)
        lines += [
            "\n| seeds | Δ mean ± s.e. over seeds | s.d. over seeds | range "
            "| mean within-seed s.e. |",
            "|---|---|---|---|---|",
            f"| {len(seeds)} | {s['mean']:+.3f} ± {s['se']:.3f} | {s['sd']:.3f} | "
            f"{s['min']:+.3f} to {s['max']:+.3f} | {np.mean(within):.3f} |",
        ]
    return "\n".join(lines)


def table(rows: dict, floor: float, acc: float, args, wall: float) -> str:
    """One row per arm; Δ is paired against λ = σ² on the same training data (``baseline``) over
    the same test images and probes."""
    lines = [
        "| arm | bits/dim (ODE, test, ±s.e.) | Δ vs λ = σ² (paired) | VLB bits/dim | Fréchet "
        f"(n={args.n_samples}) | loss mean | loss CV | median ‖∇‖ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        delta, base = "–", baseline(name)
        if base in rows and name != base:
            delta = "{:+.3f} ± {:.3f}".format(*paired_delta(r, rows[base]))
        vlb = "n/a" if r["vlb_bpd"] is None else f"{r['vlb_bpd']:.3f}"
        if r.get("vlb_analytic_bpd") is not None:
            vlb += f" (Analytic-DPM σ*²: {r['vlb_analytic_bpd']:.3f})"
        lines.append(
            f"| {ARMS[name][1]} | {r['bpd']:.3f} ± {r['bpd_se']:.3f} | {delta} | {vlb} | "
            f"{r['fd']:.2f} | {r['loss_mean']:.4g} | {r['loss_cv']:.2f} | "
            f"{r['grad_norm_median']:.3g} |"
        )
    lines.append(f"| train split (floor) | – | – | – | {floor:.2f} | | | |")
    lines.append(
        f"\n{args.steps} steps × batch {args.batch_size}, seed {args.seed}; classifier test "
        f"accuracy {acc:.3f}; Euler–Maruyama {args.sample_steps} steps; this invocation took "
        f"{wall / 60:.1f} min."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(p, steps=2000)
    p.add_argument("--num-dequant", type=int, default=1)
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "weighting_study")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (weights, data order, evaluation noise)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny evaluation sizes for a quick check")
    p.add_argument("--dry-run", action="store_true", help="compose each arm's loss, then stop")
    args = p.parse_args()
    if args.dry_run:
        for name in args.arms:
            loss = hydra.utils.instantiate(config(ARMS[name][0], args).loss)
            print(f"{name}: {loss!r}")
        return
    if args.smoke:
        args.n_eval, args.n_samples, args.sample_steps, args.classifier_epochs = 8, 64, 10, 2
        args.out = args.out.with_name(args.out.name + "_smoke")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = Digits()
    space = FeatureSpace(data, args.out / "classifier.pt", args.classifier_epochs, args.n_samples)
    acc, floor = space.accuracy, space.floor
    print(f"classifier test accuracy {acc:.3f}; Fréchet floor (train vs test) {floor:.2f}")
    per_seed = {}
    for seed in args.seeds or [args.seed]:
        per_seed[seed] = run_seed(with_seed(args, seed), data, space, args.out / f"seed{seed}")
    wall = time.perf_counter() - start
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "classifier_acc": acc,
              "fd_floor": floor, "seeds": per_seed, "wall_s": wall}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    tables = [f"Seed {seed}:\n\n" + table(rows, floor, acc, with_seed(args, seed), wall)
              for seed, rows in per_seed.items()]  # fmt: skip
    md = "\n\n".join(tables) + "\n" + seed_table(per_seed, args)
    (args.out / "results.md").write_text(md + "\n")
    print(md)


def with_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """``args`` with the training (and evaluation) seed ``seed``."""
    return argparse.Namespace(**{**vars(args), "seed": seed})


def run_seed(args: argparse.Namespace, data: Digits, space: FeatureSpace, out: Path) -> dict:
    """Train (or reuse) and evaluate every arm of ``args.arms`` with training seed ``args.seed``
    in ``out/<arm>``; returns {arm: evaluation}."""
    rows = {}
    for name in args.arms:
        overrides, label = ARMS[name]
        cfg = config(overrides, args)
        summary = train_arm(cfg, out / name)

        def evaluate(summary: dict = summary, label: str = label, name: str = name,
                     cfg: DictConfig = cfg) -> dict:  # fmt: skip
            r = evaluate_arm(summary["checkpoint"], data, space, args)
            r.update(loss_statistics(cfg, summary, out / name, args))
            plot_image_grid(r.pop("samples")[:64], out / name / "eval_samples.png", title=label)
            r["train_wall_s"] = summary.get("wall_s")
            return r

        r = rows[name] = cached_eval(out / name, eval_settings(cfg, args, EVAL_KEYS), evaluate)
        print(f"seed {args.seed}, {label}: bpd {r['bpd']:.3f} ± {r['bpd_se']:.3f}, "
              f"FD {r['fd']:.2f}", flush=True)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
