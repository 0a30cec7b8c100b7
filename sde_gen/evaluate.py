"""``sde-gen-eval``: negative log-likelihood (nats) and bits/dim of a model (survey §4.3).

    sde-gen-eval checkpoint=outputs/train/.../checkpoints/step_00002000.pt n=512
    sde-gen-eval data=ring likelihood.exact_trace=true   # exact mixture score: a sanity check
    sde-gen-eval data=mixture64 n=64                     # 64-D exact mixture, Hutchinson trace

The likelihood is an entry of the config group ``likelihood``: ``pf_ode`` (the default, the
probability-flow ODE with its coordinates, prior, probe and tolerances as keys and nested groups),
or a variational bound (``ddpm_vlb``, ``vdm_vlb``). With a checkpoint the SDE, network (EMA
weights unless ``ema=false``) and data set are the trained ones. Without one, ``data=`` must be a
Gaussian mixture and its exact score drives the ODE; the exact log q_{t_min}(x) is then reported
beside the estimate. Discrete data (``num_bins``) are dequantized (``num_dequant`` draws) and
reported in bits/dim of the original levels; a model whose SDE names its own variational bound
(``SDE.variational_bound``: the DDPM chain, VDM) reports it too (``vlb=true``).
Writes ``summary.json`` into the run directory and prints one summary line.
"""

from __future__ import annotations

import logging
import math
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sde_gen.cli.build import bytes_per_sample
from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.run import run_in_output_dir
from sde_gen.cli.settings import EvalConfig, settings_from
from sde_gen.data.base import TensorData
from sde_gen.likelihood.base import Likelihood
from sde_gen.likelihood.ode import PFODELikelihood
from sde_gen.losses.bounds import DDPMBound
from sde_gen.networks.source import ScoreSource, load_score_source, names_data
from sde_gen.runtime.distributed import World, gather_objects, init_world
from sde_gen.runtime.files import write_summary
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.runtime.progress import progress_bar
from sde_gen.runtime.resources import check_memory, choose_threads
from sde_gen.runtime.sharding import map_chunks
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable

log = logging.getLogger("sde_gen.evaluate")  # not __main__ under python -m or torchrun -m

__all__ = [
    "likelihood_report",
    "batch_likelihood",
    "own_bound",
    "vlb_bits_per_dim",
    "vlb_bpd",
    "run_evaluation",
    "main",
]


def batch_likelihood(
    likelihood: Likelihood,
    sde: SDE,
    score_fn: ScoreCallable,
    batch: torch.Tensor,
    num_bins: int | None,
    num_dequant: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(NLL in nats, bits/dim, NFE) of one batch (see :func:`likelihood_report`), on the CPU."""
    if num_bins is None:
        result = likelihood(sde, score_fn, batch, generator)
    else:
        result = likelihood.bits_per_dim(sde, score_fn, batch, num_bins, num_dequant, generator)
    return -result.logp.cpu(), result.bpd.cpu(), result.nfe


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
    score_fn: ScoreCallable,
    x: torch.Tensor,
    num_bins: int | None = None,
    batch_size: int = 256,
    num_dequant: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
    per_sample: bool = False,
    likelihood: Likelihood | None = None,
    **ode_kwargs: Any,
) -> dict[str, Any]:
    """NLL (nats, of the [−1, 1]-scaled variable) and bits/dim over x, batch by batch.

    Continuous data (``num_bins=None``): nll = −log p_{t_min}(x), bpd = nll/(D ln 2). Discrete
    data: nll = −E_u log p(x + dequantization noise), bpd in units of the original levels
    (``nats_to_bits_per_dim``). Standard errors are over samples; ``per_sample`` adds the list
    ``bpd_per_sample`` (for paired comparisons of models on the same x). ``likelihood``: any
    ``Likelihood``; None builds ``PFODELikelihood(**ode_kwargs)`` (with a bar along each solve
    under ``progress``).
    """
    if likelihood is None:
        likelihood = PFODELikelihood(**{"progress": progress, **ode_kwargs})
    nll, bpd, nfe = [], [], 0
    for batch in progress_bar(progress, iterable=x.split(batch_size), desc="NLL"):
        a, b, n = batch_likelihood(
            likelihood, sde, score_fn, batch, num_bins, num_dequant, generator
        )
        nll.append(a)
        bpd.append(b)
        nfe += n
    return summarise(torch.cat(nll), torch.cat(bpd), nfe, x[0].numel(), per_sample)


def own_bound(sde: SDE) -> Likelihood | None:
    """The variational bound the SDE names (``SDE.variational_bound``), built from its entry of
    the ``likelihood`` config group; None where the SDE has none."""
    entry = sde.variational_bound()
    if entry is None:
        return None
    node = OmegaConf.load(str(files("sde_gen.conf").joinpath("likelihood", f"{entry}.yaml")))
    return instantiate_group("likelihood", node)


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
    """L_vlb/(D ln 2) of a discrete DDPM model (survey §3.1), an upper bound on −log₂ P(x)/D:
    the mean of ``DDPMBound(large_variance, log_variance)`` over x, batch by batch (its decoder
    L_0 integrates over the bins of [−1, 1]). T network calls per batch."""
    bound = DDPMBound(large_variance, log_variance)
    total = [
        bound.bits_per_dim(model.sde, model, batch, num_bins, 1, generator).bpd
        for batch in progress_bar(progress, iterable=x.split(batch_size), desc="VLB")
    ]
    return float(torch.cat(total).mean())


def vlb_bpd(
    model: torch.nn.Module, batch: torch.Tensor, num_bins: int | None, generator: torch.Generator
) -> torch.Tensor:
    """The model's own variational bound (``own_bound(model.sde)``) in bits/dim per sample (on
    the CPU): L_vlb of a DDPM chain, or VDM's continuous-time bound (discrete data dequantised,
    bits/dim of the levels as ``nats_to_bits_per_dim``)."""
    bound = own_bound(model.sde)
    if bound is None:
        raise ValueError(f"sde={model.sde!r} has no variational bound (vlb); use the PF-ODE")
    return batch_likelihood(bound, model.sde, model, batch, num_bins, 1, generator)[1]


def evaluation_points(settings: EvalConfig, src: ScoreSource, device: torch.device) -> torch.Tensor:
    """The first ``n`` points of the split, on ``device`` in the score's dtype, after checking
    that they and one chunk's ODE state and graph fit in memory."""
    if settings.n is not None and not isinstance(src.data, TensorData):  # drawn, not stored
        per_point = bytes_per_sample(None, src.data, src.dtype, device, copies=4)
        check_memory("n", settings.n, per_point, device)
    x = src.data.split(settings.split.value, settings.n)
    if settings.n is not None:
        x = x[: settings.n]
    x = x.to(device=device, dtype=src.dtype)
    # the ODE state in float64 (a few solver stages) and the network's graph for the divergence
    per = bytes_per_sample(src.model, src.data, src.dtype, device, grad=True, copies=16)
    check_memory("batch_size", min(settings.batch_size, len(x)), per, device)
    return x


def build_likelihoods(
    cfg: DictConfig, settings: EvalConfig, src: ScoreSource, inner_bar: bool
) -> tuple[Likelihood, Likelihood | None]:
    """The chosen likelihood (``cfg.likelihood``; ``inner_bar`` shows a bar along each solve) and,
    with ``vlb=true`` and a trained model, the SDE's own bound; data they cannot measure is a
    ValueError naming the key."""
    node = cfg.likelihood
    extra = {"progress": bool(node.progress) or inner_bar} if "progress" in node else {}
    likelihood = instantiate_group("likelihood", node, **extra)
    if likelihood.bound and src.model is None:
        raise ValueError(f"{likelihood!r} needs a trained model: give checkpoint=<step_*.pt>")
    bound = own_bound(src.sde) if settings.vlb and src.model is not None else None
    if src.data.num_bins is None:
        if likelihood.discrete_only:
            raise ValueError(
                f"{likelihood!r} needs discrete data (num_bins); use likelihood=pf_ode"
            )
        if bound is not None and bound.discrete_only:
            raise ValueError("vlb=true needs discrete data (num_bins); set vlb=false")
    return likelihood, bound


def measure_chunks(
    settings: EvalConfig,
    src: ScoreSource,
    x: torch.Tensor,
    likelihoods: tuple[Likelihood, Likelihood | None],
    world: World,
) -> list[dict[str, Any]] | None:
    """Each chunk's (nll, bpd, nfe, vlb), with its own generator (``map_chunks``); None off
    rank 0."""
    likelihood, bound = likelihoods
    num_bins = src.data.num_bins

    def chunk(items: slice, generator: torch.Generator) -> dict[str, Any]:
        batch = x[items]
        nll, bpd, nfe = batch_likelihood(
            likelihood, src.sde, src.score_fn, batch, num_bins, settings.num_dequant, generator
        )
        vlb = None
        if bound is not None:
            vlb = batch_likelihood(bound, src.sde, src.model, batch, num_bins, 1, generator)[1]
        return {"nll": nll, "bpd": bpd, "nfe": nfe, "vlb": vlb}

    main_bar = settings.progress and world.is_main
    return map_chunks(chunk, len(x), settings.batch_size, settings.seed, world, main_bar, "NLL")


def evaluation_summary(
    parts: list[dict[str, Any]], x: torch.Tensor, src: ScoreSource, likelihood: Likelihood,
    settings: EvalConfig, world: World,
) -> dict[str, Any]:  # fmt: skip
    """The run's summary: what was measured, how, and the means with their standard errors."""
    report = summarise(
        torch.cat([p["nll"] for p in parts]),
        torch.cat([p["bpd"] for p in parts]),
        sum(p["nfe"] for p in parts),
        x[0].numel(),
    )
    summary: dict[str, Any] = {
        "source": src.origin,
        "sde": repr(src.sde),
        "split": settings.split.value,
        "num_bins": src.data.num_bins,
        **likelihood.record(),
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "world_size": world.size,
        **report,
        **src.facts,
    }
    if src.origin == "exact":
        t = torch.full((len(x),), likelihood.t_min, dtype=torch.float64, device=x.device)
        summary["nll_exact_nats"] = float(-src.data.exact.log_prob(x, t, src.sde).mean())
    vlb = [p["vlb"] for p in parts if p["vlb"] is not None]
    summary["vlb_bpd"] = float(torch.cat(vlb).mean()) if vlb else None
    return summary


def run_evaluation(
    cfg: DictConfig, out_dir: Path, data_chosen: bool = False
) -> dict[str, Any] | None:
    """Evaluate ``cfg`` and write ``summary.json`` into ``out_dir``. The test set comes in chunks
    of ``batch_size``, chunk c with its dequantization and probes seeded by (seed, c); under
    torchrun rank r takes the chunks c ≡ r (mod W) and rank 0 reports (the others return None)."""
    settings: EvalConfig = settings_from(cfg, EvalConfig)
    world = init_world(settings.device, settings.dist_timeout)
    out_dir = Path(gather_objects(str(out_dir))[0])  # the run folder is rank 0's
    src = load_score_source(cfg, world.device, data_chosen)
    threads = choose_threads(settings.threads, world.device, src.model)
    x = evaluation_points(settings, src, world.device)
    inner_bar = settings.progress and world.is_main and len(x) <= settings.batch_size
    likelihoods = build_likelihoods(cfg, settings, src, inner_bar)
    start = time.perf_counter()
    parts = measure_chunks(settings, src, x, likelihoods, world)
    if parts is None:
        return None
    summary = evaluation_summary(parts, x, src, likelihoods[0], settings, world)
    summary.update(time_s=time.perf_counter() - start, threads=threads)
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
    def work(hc: Any, out_dir: Path) -> dict[str, Any] | None:
        return run_evaluation(cfg, out_dir, data_chosen=names_data(list(hc.overrides.task)))

    run_in_output_dir(work, summary_line, log)


def main() -> Any:
    """``sde-gen-eval``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
