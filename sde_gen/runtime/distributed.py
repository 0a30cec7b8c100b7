"""torch.distributed for the command lines, as torchrun launches them: one process per device,
NCCL on CUDA and gloo on CPU, the rendezvous from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so multi-node runs need nothing beyond torchrun's flags.

Without torchrun (no WORLD_SIZE in the environment) everything here is the single-process case:
rank 0 of 1, barriers and gathers are no-ops.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "RendezvousError",
    "DIST_TIMEOUT_S",
    "world",
    "init_world",
    "close_world",
    "barrier",
    "gather_objects",
    "launched",
    "rows",
    "all_reduce_sum",
    "gather_rows",
    "run_on_main",
]

log = logging.getLogger(__name__)

#: how long ``init_world`` waits for every rank to join (the ``dist_timeout`` setting, seconds)
DIST_TIMEOUT_S = 300.0


class RendezvousError(ValueError):
    """A rank of the process group never came within ``dist_timeout``; the message names
    MASTER_ADDR/MASTER_PORT and the missing ranks."""


#: how long ``close_world`` waits for the other ranks at its barrier (gloo)
CLOSE_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its
    node, and the device it owns."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, plots and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rows(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows (sizes differ by at most one)."""
        return rows(n, self.size, self.rank)

    def shard(self, n: int) -> range:
        """The indices of ``range(n)`` this rank handles: every ``size``-th from ``rank``."""
        return range(self.rank, n, self.size)


def rows(n: int, parts: int, k: int) -> slice:
    """Part ``k`` of ``range(n)`` cut into ``parts`` contiguous pieces of near-equal size."""
    return slice(n * k // parts, n * (k + 1) // parts)


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def launched() -> bool:
    """True when torchrun, or srun/submitit (one task per GPU), started this process as one of
    several."""
    export_slurm_env()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[01-04,07]`` → ``node01``, ``a,b`` → ``a``."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    return prefix + rest.split("]")[0].split(",")[0].split("-")[0]


def export_slurm_env() -> None:
    """Inside an srun step of several tasks (submitit's multi-GPU jobs start no torchrun), set
    torch.distributed's env:// variables from SLURM's: WORLD_SIZE, RANK, LOCAL_RANK, and
    MASTER_ADDR/MASTER_PORT from the job's first host and id. Leaves torchrun's own alone."""
    env = os.environ
    if "WORLD_SIZE" in env or "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env:
        return
    size = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
    if int(size) <= 1:
        return
    env["WORLD_SIZE"], env["RANK"] = size, env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", _first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 40000))


def world(device: torch.device) -> World:
    """The current World (``init_world`` must have run for a distributed one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _rendezvous(timeout_s: float) -> dist.Store:
    """The env:// store (rank 0's, or torchrun's agent store), once every rank has joined it;
    a rank that has not come within ``timeout_s`` is a :class:`RendezvousError` naming it."""
    env = os.environ
    addr, port = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "29500"))
    rank, size = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
    where = f"MASTER_ADDR={addr} MASTER_PORT={port}"
    timeout = timedelta(seconds=timeout_s)
    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts the store
    try:
        store = dist.TCPStore(
            addr, port, size, is_master=rank == 0 and not agent, timeout=timeout,
            wait_for_workers=False,
        )  # fmt: skip
    except RuntimeError as e:
        raise RendezvousError(
            f"rank {rank} of {size} found no rendezvous at {where} within dist_timeout="
            f"{timeout_s:g} s (missing: rank 0, which hosts it; {str(e).splitlines()[0]})"
        ) from None
    prefix = f"sde_gen/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/joined/"
    store.set(f"{prefix}{rank}", "1")
    deadline = time.monotonic() + timeout_s
    missing = list(range(size))
    while True:
        missing = [r for r in missing if not store.check([f"{prefix}{r}"])]
        if not missing:
            return store
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"rank {rank} of {size}: rank(s) {missing} did not join the rendezvous at "
                f"{where} within dist_timeout={timeout_s:g} s (check that every rank was "
                "started and can reach that address and port)"
            )
        time.sleep(0.05)


def init_world(device_name: str = "auto", timeout_s: float = DIST_TIMEOUT_S) -> World:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU) and pick this rank's
    device: ``cuda:<LOCAL_RANK>`` when CUDA is used, else the CPU. Single process: no group.
    A rank missing after ``timeout_s`` seconds is a :class:`RendezvousError` naming it."""
    from sde_gen.runtime.resources import pick_device

    device = pick_device(device_name)
    if not launched():
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        # SLURM may bind one GPU per task: then it is cuda:0 whatever the local rank
        index = local_rank if torch.cuda.device_count() > 1 else 0
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        store = _rendezvous(timeout_s)
        rank, size = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
    return world(device)


def close_world() -> None:
    """Leave the process group (a no-op without one). On gloo the ranks first meet at a barrier
    bounded by ``CLOSE_TIMEOUT`` (``monitored_barrier``: it raises rather than hangs when a rank
    never comes, e.g. after an error on one rank): a rank that tears gloo down while another is
    still in its last collective can abort at exit ("terminate called without an active
    exception", SIGABRT) although its work is done."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=CLOSE_TIMEOUT)
        except RuntimeError as e:  # a rank that did not come: leave anyway
            log.warning("closing the process group without every rank: %s", e)
    dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over every rank (``x`` itself in a single process); ``x`` is unchanged."""
    if not _initialised():
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out


def gather_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of every rank, in rank order, on every rank: rank r holds ``rows(n, size, r)`` of
    an (n, ...) tensor (``x`` itself in a single process)."""
    if not _initialised():
        return x
    size = dist.get_world_size()
    longest = max(rows(n, size, r).stop - rows(n, size, r).start for r in range(size))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    sizes = [rows(n, size, r).stop - rows(n, size, r).start for r in range(size)]
    return torch.cat([part[:k] for part, k in zip(parts, sizes)])


def run_on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 alone, its result on every rank; if it raised, every rank raises it (the
    others a copy), so no rank waits forever for a rank that failed."""
    if not _initialised():
        return fn()
    outcome: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [("ok", fn())]
        except Exception as e:  # sent to the other ranks, raised here below
            outcome = [("error", e)]
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value
