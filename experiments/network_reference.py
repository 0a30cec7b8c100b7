"""The solver comparison on a trained network: its own probability-flow ODE as the reference.

A checkpoint's ``ScoreModel`` is the score; the reference end points from held-out x_T are the
network's PF-ODE (Song et al. 2021, eq. 13) in the scaled coordinates y = x/γ, u = log σ̃
(``ScaledCoordinates``, smooth on a discrete chain) by ``solve_ivp`` at a tight tolerance. One
solve gives both end points a solver can be compared at: t_min (dense output) and the time where
σ̃ = ``ZERO_SIGMA_TILDE``, standing in for t = 0. A second solve at a looser tolerance bounds the
reference's own error: RMS(reference − check) ≈ the check's error ≥ the reference's. A large set
is solved in chunks (``reference_chunks``): each chunk is one solve, cached on its own, so its
step control and accuracy are those of a chunk-sized set, and the first chunk of n x_T drawn with a
seed is the whole set of ``chunk`` x_T drawn with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from caching import file_digest, is_current, stamp
from omegaconf import OmegaConf
from torch import Tensor

from sde_gen.metrics.mixtures import endpoint_error
from sde_gen.models import ScoreModel
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.runtime.files import atomic_write
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers import ScaledCoordinates, ScipyODE

#: the two end points of every reference solve
ENDS = ("t_min", "zero")


class NetworkScore:
    """s_θ(x, t) = −ε_θ(x, t)/σ_t for a float64 state: the network sees x in its weights' dtype,
    σ_t and the result stay in the state's dtype (schedules in float64, cast at the network)."""

    def __init__(self, model: ScoreModel):
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            eps = self.model.eps(x.to(self.dtype), t).to(x.dtype)
        return self.model.sde.score_from_eps(x, t, eps)


@dataclass
class Network:
    """A trained score: its SDE, score function, per-sample shape, a name for the tables and
    what it was loaded from (``identity``: its files' digest and options; part of every cache
    key of its references)."""

    sde: SDE
    score_fn: NetworkScore
    shape: tuple[int, ...]
    name: str
    identity: dict[str, Any] = field(default_factory=dict)


def load_network(path: str, ema: bool = True) -> Network:
    """The checkpoint's ScoreModel (EMA weights unless ``ema`` is false) on the CPU, named
    ``<data>@<checkpoint stem>``."""
    model, cfg, data = load_score_model(path, torch.device("cpu"), ema=ema)
    model.requires_grad_(False)
    shape = tuple(int(s) for s in data.shape)
    name = f"{str(cfg.data._target_).rsplit('.', 1)[-1].lower()}@{Path(path).stem}"
    identity = {"checkpoint": file_digest([Path(path)]), "ema": ema}
    return Network(model.sde, NetworkScore(model), shape, name, identity)


def load_model_network(node: Any) -> Network:
    """The score model a ``model`` node builds (``model=diffusers model.path=<folder>``) on the
    CPU, named ``<folder name>@diffusers``."""
    from sde_gen.runtime.instantiate import instantiate_group

    model = instantiate_group("model", node)
    if not isinstance(model, ScoreModel):
        raise ValueError(f"model={node.get('_target_')} does not build a score model")
    model.requires_grad_(False).eval()
    folder = Path(str(node.get("path")))
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".json"))
    identity = {"files": file_digest(files), "model": OmegaConf.to_container(node, resolve=True)}
    name = f"{folder.name}@diffusers"
    return Network(model.sde, NetworkScore(model), model.eps_net.sample_shape, name, identity)


def pf_ode_ends(
    sde: SDE, score_fn: NetworkScore, x_T: Tensor, t_min: float, t_zero: float, **ode: Any
) -> tuple[dict[str, Tensor], int]:
    """The PF-ODE end points from x_T at t_min (dense output) and t_zero < t_min, one solve of
    ``ScipyODE(**ode)`` in the scaled coordinates; returns ({end: x}, score evaluations)."""
    backend = ScipyODE(coordinates=ScaledCoordinates(), **ode)
    score = ScoreFn(score_fn, sde)
    t_eval = torch.tensor([sde.T, t_min, t_zero], dtype=torch.float64)
    x_zero, path = backend(sde, score, x_T, t_zero, t_eval)
    return {"t_min": path[1], "zero": x_zero}, score.nfe


def reference_set(
    cache: Path,
    net: Network,
    x_T: Tensor,
    t_min: float,
    t_zero: float,
    method: str,
    rtol: float,
    atol: float,
    check_rtol: float | None = None,
) -> dict[str, Any]:
    """x_T and the reference end points at rtol = ``rtol`` (cached in ``cache``, keyed by the
    network's identity, the solve's settings and the versions); with ``check_rtol``, a second
    solve there and the RMS difference per end (``reference_error``)."""
    settings = {"network": net.identity, "t_min": t_min, "t_zero": t_zero, "method": method,
                "rtol": rtol, "atol": atol, "check_rtol": check_rtol}  # fmt: skip
    if cache.exists():
        shared = torch.load(cache, weights_only=False)
        if not torch.equal(shared["x_T"], x_T):
            raise ValueError(f"{cache}: cached for other x_T; delete it to recompute")
        if is_current(shared, settings, cache):
            return shared
    t0 = time.perf_counter()
    ends, nfe = pf_ode_ends(
        net.sde, net.score_fn, x_T, t_min, t_zero, method=method, rtol=rtol, atol=atol
    )
    shared: dict[str, Any] = {
        "x_T": x_T,
        "ends": ends,
        "reference_nfe": nfe,
        "reference_seconds": time.perf_counter() - t0,
        "reference_tol": rtol,
        "stamp": stamp(settings),
    }
    if check_rtol is not None:
        scale = check_rtol / rtol
        check, check_nfe = pf_ode_ends(
            net.sde,
            net.score_fn,
            x_T,
            t_min,
            t_zero,
            method=method,
            rtol=check_rtol,
            atol=atol * scale,
        )
        shared["reference_error"] = {e: endpoint_error(check[e], ends[e]) for e in ENDS}
        shared.update(check_tol=check_rtol, check_nfe=check_nfe)
    atomic_write(cache, lambda tmp: torch.save(shared, tmp))
    return shared


def reference_chunks(
    cache: Callable[[int, int], Path], net: Network, x_T: Tensor, chunk: int, **ref: Any
) -> dict[str, Any]:
    """``reference_set`` on x_T[start : start + chunk] for each chunk, cached at
    ``cache(start, size)``, joined: end points concatenated, evaluations and seconds summed, and
    the check's RMS distance pooled over all x_T (only when every chunk has one)."""
    parts = [  # each chunk a copy: a saved view would carry the whole batch's storage
        reference_set(cache(start, len(x)), net, x.clone(), **ref)
        for start, x in zip(range(0, len(x_T), chunk), x_T.split(chunk), strict=True)
    ]
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, Any] = {
        "x_T": x_T,
        "ends": {e: torch.cat([p["ends"][e] for p in parts]) for e in ENDS},
        "reference_nfe": sum(p["reference_nfe"] for p in parts),
        "reference_seconds": sum(p["reference_seconds"] for p in parts),
        "reference_tol": parts[0]["reference_tol"],
        "chunks": len(parts),
    }
    if all("reference_error" in p for p in parts):
        sizes = [len(p["x_T"]) for p in parts]
        joined["reference_error"] = {
            e: (sum(n * p["reference_error"][e] ** 2 for n, p in zip(sizes, parts)) / len(x_T))
            ** 0.5
            for e in ENDS
        }
        joined.update(check_tol=parts[0]["check_tol"], check_nfe=sum(p["check_nfe"] for p in parts))
    return joined
