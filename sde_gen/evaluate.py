"""``sde-gen-eval``: negative log-likelihood (nats) and bits/dim through the PF-ODE (survey §4.3).

    sde-gen-eval checkpoint=outputs/train/.../checkpoints/step_00002000.pt n=512 num_probes=1
    sde-gen-eval data=ring exact_trace=true          # exact mixture score: a sanity check
    sde-gen-eval data=mixture64 n=64                 # 64-D exact mixture, Hutchinson trace

With a checkpoint the SDE, network (EMA weights unless ``ema=false``) and data set are the trained
ones. Without one, ``data=`` must be a Gaussian mixture and its exact score drives the ODE; the
exact log q_{t_min}(x) is then reported beside the ODE estimate. Discrete data (``num_bins``) are
dequantized (``num_dequant`` draws) and reported in bits/dim of the original levels; for a discrete
DDPM model (``sde=ddpm_*``) or a VDM model (``sde=vdm``) the variational bound in bits/dim is
reported too (``vlb=true``).
Writes ``summary.json`` into the run directory and prints one summary line.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sde_gen.cli.build import bytes_per_sample
from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.settings import EvalConfig, settings_from
from sde_gen.data.base import TensorData
from sde_gen.likelihood.ode import ScoreFn, bits_per_dim, nats_to_bits_per_dim, ode_log_likelihood
from sde_gen.losses.vdm import vdm_vlb
from sde_gen.networks.source import load_score_source, names_data
from sde_gen.runtime.distributed import close_world, gather_objects, init_world
from sde_gen.runtime.files import write_summary
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.runtime.progress import progress_bar
from sde_gen.runtime.resources import check_memory, choose_threads
from sde_gen.runtime.sharding import map_chunks
from sde_gen.sde import SDE, VDMSDE, DiscreteVPSDE

log = logging.getLogger(__name__)

__all__ = [
    "likelihood_report",
    "batch_likelihood",
    "vlb_bits_per_dim",
    "vlb_bpd",
    "run_evaluation",
    "main",
]


def batch_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    batch: torch.Tensor,
    num_bins: int | None,
    num_dequant: int,
    generator: torch.Generator | None,
    **ode_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(NLL in nats, bits/dim, NFE) of one batch (see :func:`likelihood_report`)."""
    dim = batch[0].numel()
    if num_bins is None:
        logp, nfe = ode_log_likelihood(sde, score_fn, batch, generator=generator, **ode_kwargs)
        bpd = nats_to_bits_per_dim(logp, dim)
    else:
        bpd, nfe = bits_per_dim(
            sde, score_fn, batch, num_bins, num_dequant, generator, **ode_kwargs
        )
        logp = -(bpd * dim * math.log(2.0) + dim * math.log(2.0 / (num_bins - 1)))
    return -logp.cpu(), bpd.cpu(), nfe


def summarise(
    nll: torch.Tensor, bpd: torch.Tensor, nfe: int, dim: int, per_sample: bool = False
) -> dict[str, Any]:
    """Means of per-sample NLL and bits/dim, with standard errors over samples."""
    count = len(nll)
    se = (lambda v: float(v.std() / math.sqrt(count))) if count > 1 else (lambda v: float("nan"))
    extra = {"bpd_per_sample": bpd.tolist()} if per_sample else {}
    return {
        **extra,
        "nll_nats": float(nll.mean()),
        "nll_nats_se": se(nll),
        "bpd": float(bpd.mean()),
        "bpd_se": se(bpd),
        "nfe": nfe,
        "n": count,
        "dim": dim,
    }


def likelihood_report(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    num_bins: int | None = None,
    batch_size: int = 256,
    num_dequant: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
    per_sample: bool = False,
    **ode_kwargs: Any,
) -> dict[str, Any]:
    """NLL (nats, of the [−1, 1]-scaled variable) and bits/dim over x, batch by batch.

    Continuous data (``num_bins=None``): nll = −log p_{t_min}(x), bpd = nll/(D ln 2). Discrete
    data: nll = −E_u log p(x + dequantization noise), bpd in units of the original levels
    (``nats_to_bits_per_dim``). Standard errors are over samples; ``per_sample`` adds the list
    ``bpd_per_sample`` (for paired comparisons of models on the same x).
    """
    ode_kwargs.setdefault("progress", progress)  # a bar along t inside each batch's solve
    nll, bpd, nfe = [], [], 0
    for batch in progress_bar(progress, iterable=x.split(batch_size), desc="NLL"):
        a, b, n = batch_likelihood(
            sde, score_fn, batch, num_bins, num_dequant, generator, **ode_kwargs
        )
        nll.append(a)
        bpd.append(b)
        nfe += n
    return summarise(torch.cat(nll), torch.cat(bpd), nfe, x[0].numel(), per_sample)


def vlb_bits_per_dim(
    model: torch.nn.Module,
    x: torch.Tensor,
    num_bins: int,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    large_variance: bool = False,
    progress: bool = False,
    log_variance: torch.Tensor | None = None,
) -> float:
    """L_vlb/(D ln 2) of a discrete DDPM model (survey §3.1), an upper bound on −log₂ P(x)/D.

    The decoder L_0 integrates over the bins of [−1, 1] itself, so no change of scale is needed.
    ``model.sde`` must be a DiscreteVPSDE; T network calls per batch.
    """
    check_discrete(model)
    total = [
        vlb_nats(model, batch, num_bins, generator, large_variance, log_variance)
        for batch in progress_bar(progress, iterable=x.split(batch_size), desc="VLB")
    ]
    return float(torch.cat(total).mean() / (x[0].numel() * math.log(2.0)))


def check_discrete(model: torch.nn.Module) -> None:
    if not isinstance(model.sde, DiscreteVPSDE):
        raise ValueError(f"VLB needs a discrete DDPM model, got sde={model.sde!r}")


def vlb_nats(
    model: torch.nn.Module,
    batch: torch.Tensor,
    num_bins: int,
    generator: torch.Generator | None,
    large_variance: bool = False,
    log_variance: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_vlb in nats of each sample of ``batch`` (a DiscreteVPSDE model; ``log_variance``: log Σ_t
    for t = 1..T replacing the model's, e.g. ``analytic_chain_log_variance``)."""
    from sde_gen.losses.discrete import schedule_of, vlb

    schedule = schedule_of(model)
    out = vlb(model, schedule, batch, num_bins, generator, large_variance, log_variance)
    return out.cpu()


def vlb_bpd(
    model: torch.nn.Module, batch: torch.Tensor, num_bins: int | None, generator: torch.Generator
) -> torch.Tensor:
    """The model's variational bound in bits/dim per sample (on the CPU): L_vlb of a DDPM chain
    (its decoder integrates over the bins), or VDM's continuous-time bound (``vdm_vlb``; discrete
    data dequantised, bits/dim of the levels as ``nats_to_bits_per_dim``)."""
    dim = batch[0].numel()
    if isinstance(model.sde, VDMSDE):
        return nats_to_bits_per_dim(
            -vdm_vlb(model, batch, num_bins, generator).cpu(), dim, num_bins
        )
    return vlb_nats(model, batch, num_bins, generator) / (dim * math.log(2.0))


def run_evaluation(
    cfg: DictConfig, out_dir: Path, data_chosen: bool = False
) -> dict[str, Any] | None:
    """Evaluate ``cfg`` and write ``summary.json`` into ``out_dir``. The test set comes in chunks
    of ``batch_size``, chunk c with its dequantization and probes seeded by (seed, c); under
    torchrun rank r takes the chunks c ≡ r (mod W) and rank 0 reports (the others return None)."""
    settings: EvalConfig = settings_from(cfg, EvalConfig)
    world = init_world(settings.device)
    device = world.device
    out_dir = Path(gather_objects(str(out_dir))[0])  # the run folder is rank 0's
    src = load_score_source(cfg, device, data_chosen)
    probe = instantiate_group("probe", cfg.probe)
    prior = instantiate_group("prior", cfg.prior)
    threads = choose_threads(settings.threads, device, src.model)
    split = settings.split.value
    if settings.n is not None and not isinstance(src.data, TensorData):  # drawn, not stored
        check_memory(
            "n", settings.n, bytes_per_sample(None, src.data, src.dtype, device, copies=4), device
        )
    x = src.data.split(split, settings.n)
    if settings.n is not None:
        x = x[: settings.n]
    x = x.to(device=device, dtype=src.dtype)
    # the ODE state in float64 (a few solver stages) and the network's graph for the divergence
    per = bytes_per_sample(src.model, src.data, src.dtype, device, grad=True, copies=16)
    check_memory("batch_size", min(settings.batch_size, len(x)), per, device)
    vlb_on = settings.vlb and isinstance(src.sde, (DiscreteVPSDE, VDMSDE)) and src.model is not None
    if vlb_on and isinstance(src.sde, DiscreteVPSDE) and src.data.num_bins is None:
        raise ValueError("vlb=true needs discrete data (num_bins); set vlb=false")
    main_bar = settings.progress and world.is_main
    ode_kwargs = {
        "exact_trace": settings.exact_trace,
        "num_probes": settings.num_probes,
        "probe": probe,
        "prior": prior,
        "rtol": settings.rtol,
        "atol": settings.atol,
        "logp_atol": settings.logp_atol,
        "method": settings.method.value,
        "t_min": settings.t_min,
        "progress": main_bar and len(x) <= settings.batch_size,
    }

    def chunk(items: slice, generator: torch.Generator) -> dict[str, Any]:
        batch = x[items]
        nll, bpd, nfe = batch_likelihood(
            src.sde, src.score_fn, batch, src.data.num_bins, settings.num_dequant, generator,
            **ode_kwargs,
        )  # fmt: skip
        vlb = vlb_bpd(src.model, batch, src.data.num_bins, generator) if vlb_on else None
        return {"nll": nll, "bpd": bpd, "nfe": nfe, "vlb": vlb}

    start = time.perf_counter()
    parts = map_chunks(chunk, len(x), settings.batch_size, settings.seed, world, main_bar, "NLL")
    if parts is None:
        return None
    report = summarise(
        torch.cat([p["nll"] for p in parts]),
        torch.cat([p["bpd"] for p in parts]),
        sum(p["nfe"] for p in parts),
        x[0].numel(),
    )
    summary: dict[str, Any] = {
        "source": src.origin,
        "sde": repr(src.sde),
        "split": split,
        "num_bins": src.data.num_bins,
        "exact_trace": settings.exact_trace,
        "num_probes": settings.num_probes,
        "probe": type(probe).__name__,
        "prior": repr(prior),
        "t_min": settings.t_min,
        "time_s": time.perf_counter() - start,
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "world_size": world.size,
        "threads": threads,
        **report,
        **src.facts,
    }
    if src.origin == "exact":
        t = torch.full((len(x),), settings.t_min, dtype=torch.float64, device=device)
        summary["nll_exact_nats"] = float(-src.data.exact.log_prob(x, t, src.sde).mean())
    summary["vlb_bpd"] = None
    if vlb_on:
        summary["vlb_bpd"] = float(torch.cat([p["vlb"] for p in parts]).mean())
    write_summary(out_dir, summary)
    return summary


def summary_line(summary: dict[str, Any], out_dir: Path) -> str:
    """One printed line: NLL, bits/dim, NFE, time (and the exact NLL / VLB when known)."""
    parts = [
        f"nll={summary['nll_nats']:.4f}±{summary['nll_nats_se']:.4f} nats",
        f"bpd={summary['bpd']:.4f}",
        f"nfe={summary['nfe']}",
        f"n={summary['n']}",
        f"time={summary['time_s']:.1f}s",
    ]
    if "nll_exact_nats" in summary:
        parts.append(f"nll_exact={summary['nll_exact_nats']:.4f}")
    if summary.get("vlb_bpd") is not None:
        parts.append(f"vlb_bpd={summary['vlb_bpd']:.4f}")
    return " ".join(parts) + f" -> {out_dir}"


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@user_errors
def _main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir).resolve()
    try:
        summary = run_evaluation(cfg, out_dir, data_chosen=names_data(list(hc.overrides.task)))
    finally:
        close_world()
    if summary is not None:
        log.info(summary_line(summary, out_dir))


def main() -> Any:
    """``sde-gen-eval``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
