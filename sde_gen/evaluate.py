"""``sde-gen-eval``: negative log-likelihood (nats) and bits/dim through the PF-ODE (survey §4.3).

    sde-gen-eval checkpoint=outputs/train/.../checkpoints/step_00002000.pt n=512 num_probes=1
    sde-gen-eval data=ring exact_trace=true          # exact mixture score: a sanity check
    sde-gen-eval data=mixture64 n=64                 # 64-D exact mixture, Hutchinson trace

With a checkpoint the SDE, network (EMA weights unless ``ema=false``) and data set are the trained
ones. Without one, ``data=`` must be a Gaussian mixture and its exact score drives the ODE; the
exact log q_{t_min}(x) is then reported beside the ODE estimate. Discrete data (``num_bins``) are
dequantized (``num_dequant`` draws) and reported in bits/dim of the original levels; for a discrete
DDPM model (``sde=ddpm_*``) the VLB in bits/dim is reported too (``vlb=true``).
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

from sde_gen.build import bytes_per_sample, instantiate_group
from sde_gen.cli import run_cli, user_errors
from sde_gen.data.base import TensorData
from sde_gen.likelihood import ScoreFn, bits_per_dim, nats_to_bits_per_dim, ode_log_likelihood
from sde_gen.runtime import (
    check_memory,
    choose_threads,
    pick_device,
    progress_bar,
    write_summary,
)
from sde_gen.score_source import load_score_source
from sde_gen.sde import SDE, DiscreteVPSDE
from sde_gen.settings import EvalConfig, settings_from

log = logging.getLogger(__name__)

__all__ = ["likelihood_report", "vlb_bits_per_dim", "main"]


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
    dim = x[0].numel()
    ode_kwargs.setdefault("progress", progress)  # a bar along t inside each batch's solve
    nll, bpd, nfe = [], [], 0
    for batch in progress_bar(progress, iterable=x.split(batch_size), desc="NLL"):
        if num_bins is None:
            logp, n = ode_log_likelihood(sde, score_fn, batch, generator=generator, **ode_kwargs)
            b = nats_to_bits_per_dim(logp, dim)
        else:
            b, n = bits_per_dim(
                sde, score_fn, batch, num_bins, num_dequant, generator, **ode_kwargs
            )
            logp = -(b * dim * math.log(2.0) + dim * math.log(2.0 / (num_bins - 1)))
        nll.append(-logp.cpu())
        bpd.append(b.cpu())
        nfe += n
    nll_t, bpd_t = torch.cat(nll), torch.cat(bpd)
    count = len(nll_t)
    se = (lambda v: float(v.std() / math.sqrt(count))) if count > 1 else (lambda v: float("nan"))
    extra = {"bpd_per_sample": bpd_t.tolist()} if per_sample else {}
    return {
        **extra,
        "nll_nats": float(nll_t.mean()),
        "nll_nats_se": se(nll_t),
        "bpd": float(bpd_t.mean()),
        "bpd_se": se(bpd_t),
        "nfe": nfe,
        "n": count,
        "dim": dim,
    }


def vlb_bits_per_dim(
    model: torch.nn.Module,
    x: torch.Tensor,
    num_bins: int,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    large_variance: bool = False,
    progress: bool = False,
) -> float:
    """L_vlb/(D ln 2) of a discrete DDPM model (survey §3.1), an upper bound on −log₂ P(x)/D.

    The decoder L_0 integrates over the bins of [−1, 1] itself, so no change of scale is needed.
    ``model.sde`` must be a DiscreteVPSDE; T network calls per batch.
    """
    from sde_gen.losses.discrete import schedule_of, vlb

    if not isinstance(model.sde, DiscreteVPSDE):
        raise ValueError(f"VLB needs a discrete DDPM model, got sde={model.sde!r}")
    schedule, dim, total = schedule_of(model), x[0].numel(), []
    for batch in progress_bar(progress, iterable=x.split(batch_size), desc="VLB"):
        total.append(vlb(model, schedule, batch, num_bins, generator, large_variance).cpu())
    return float(torch.cat(total).mean() / (dim * math.log(2.0)))


def run_evaluation(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Evaluate ``cfg`` and write ``summary.json`` into ``out_dir``."""
    settings: EvalConfig = settings_from(cfg, EvalConfig)
    device = pick_device(settings.device)
    src = load_score_source(cfg, device)
    probe = instantiate_group("probe", cfg.probe)
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
    generator = torch.Generator(device).manual_seed(settings.seed)
    start = time.perf_counter()
    report = likelihood_report(
        src.sde,
        src.score_fn,
        x,
        num_bins=src.data.num_bins,
        batch_size=settings.batch_size,
        num_dequant=settings.num_dequant,
        generator=generator,
        progress=settings.progress,
        exact_trace=settings.exact_trace,
        num_probes=settings.num_probes,
        probe=probe,
        rtol=settings.rtol,
        atol=settings.atol,
        method=settings.method.value,
        t_min=settings.t_min,
    )
    summary: dict[str, Any] = {
        "source": src.origin,
        "sde": repr(src.sde),
        "split": split,
        "num_bins": src.data.num_bins,
        "exact_trace": settings.exact_trace,
        "num_probes": settings.num_probes,
        "probe": type(probe).__name__,
        "t_min": settings.t_min,
        "time_s": time.perf_counter() - start,
        "seed": settings.seed,
        "threads": threads,
        **report,
    }
    if src.origin == "exact":
        t = torch.full((len(x),), settings.t_min, dtype=torch.float64, device=device)
        summary["nll_exact_nats"] = float(-src.data.exact.log_prob(x, t, src.sde).mean())
    summary["vlb_bpd"] = None
    if settings.vlb and isinstance(src.sde, DiscreteVPSDE) and src.model is not None:
        if src.data.num_bins is None:
            raise ValueError("vlb=true needs discrete data (num_bins); set vlb=false")
        summary["vlb_bpd"] = vlb_bits_per_dim(
            src.model,
            x,
            src.data.num_bins,
            settings.batch_size,
            generator,
            progress=settings.progress,
        )
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
    out_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    log.info(summary_line(run_evaluation(cfg, out_dir), out_dir))


def main() -> Any:
    """``sde-gen-eval``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
