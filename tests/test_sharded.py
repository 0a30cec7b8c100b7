"""Sharded sampling and evaluation: 2 torchrun processes (gloo) write exactly what 1 process
writes; chunk seeds make the samples independent of the chunking across ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from sde_gen.evaluate import run_evaluation
from sde_gen.runtime.distributed import World
from sde_gen.runtime.sharding import chunk_seed, chunk_slices, map_chunks
from sde_gen.sample import build_solver, run_sampling
from sde_gen.sde import VPSDE

BIN = Path(sys.executable).parent
TORCHRUN = BIN / "torchrun"


def _cfg(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=["progress=false", *overrides])


def _torchrun(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "--no-python",
           str(BIN / command), *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_chunks_cover_the_items_once_and_seed_apart():
    assert chunk_slices(12, 5) == [slice(0, 5), slice(5, 10), slice(10, 12)]
    assert (
        chunk_seed(7, 0) == 7 and len({chunk_seed(s, c) for s in (0, 1) for c in range(99)}) == 198
    )
    assert all(0 <= chunk_seed(2**32 - 1, c) < 2**32 for c in range(9))
    ranks = [World(rank=r, size=3).shard(4) for r in range(3)]
    assert sorted(c for shard in ranks for c in shard) == [0, 1, 2, 3]


def test_map_chunks_draws_each_chunk_from_its_own_seed():
    """A chunk's numbers depend on (seed, chunk) only, not on the chunk size of its neighbours."""
    out = map_chunks(lambda s, g: torch.rand(s.stop - s.start, generator=g), 7, 3, 5, World())
    assert [len(o) for o in out] == [3, 3, 1]
    g = torch.Generator().manual_seed(chunk_seed(5, 2))
    assert torch.equal(out[2], torch.rand(1, generator=g))


def test_one_chunk_draws_what_the_seed_alone_drew(tmp_path):
    """batch_size >= n: chunk 0 is seeded by ``seed`` itself, the samples of a single batch."""
    over = ("n=12", "solver=euler_maruyama", "solver.steps=10", "plot=false", "seed=4")
    run_sampling(_cfg("sample", *over, "batch_size=12"), tmp_path / "one")
    run_sampling(_cfg("sample", *over, "batch_size=5"), tmp_path / "three")
    one, three = (np.load(tmp_path / d / "samples.npz")["x0"] for d in ("one", "three"))
    cfg = _cfg("sample", *over)
    g = torch.Generator().manual_seed(4)
    x_T = VPSDE().prior_sample((12, 2), g, dtype=torch.float64)
    score_fn = instantiate(cfg.data).score_fn(VPSDE())
    x0 = build_solver(cfg.solver, False)(VPSDE(), score_fn, x_T, g).x0
    assert np.array_equal(one, x0.numpy())
    over5 = ("n=5", *over[1:])
    run_sampling(_cfg("sample", *over5), tmp_path / "five")  # chunk 0 of batch_size=5, alone
    five = np.load(tmp_path / "five" / "samples.npz")["x0"]
    assert np.array_equal(three[:5], five) and not np.allclose(three[5:10], five)


@pytest.mark.parametrize(
    "solver", [("solver=euler_maruyama", "solver.steps=10"), ("solver=ddim", "solver.steps=4")]
)
def test_two_processes_write_the_samples_of_one(tmp_path, solver):
    over = ["data=ring", *solver, "n=12", "batch_size=5", "plot=false", "progress=false"]
    one = run_sampling(_cfg("sample", *over), tmp_path / "one")
    _torchrun("sde-gen-sample", *over, f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)
    a, b = (np.load(tmp_path / d / "samples.npz") for d in ("one", "two"))
    assert np.array_equal(a["x0"], b["x0"]) and int(a["nfe"]) == int(b["nfe"])
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["nll"] == one["nll"] and two["mmd2"] == one["mmd2"]


def test_two_processes_evaluate_as_one(tmp_path):
    """Hutchinson probes are drawn per chunk: the same NLL and NFE for 1 and 2 processes."""
    over = ["data=ring", "n=10", "batch_size=4", "progress=false"]
    one = run_evaluation(_cfg("eval", *over), tmp_path / "one")
    _torchrun("sde-gen-eval", *over, f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (two["n"], two["nfe"]) == (one["n"], one["nfe"])
    for key in ("nll_nats", "nll_nats_se", "bpd", "nll_exact_nats"):
        assert two[key] == pytest.approx(one[key], rel=1e-12, abs=1e-12)


def test_rank_one_writes_nothing_of_its_own(tmp_path):
    """Rank 1 gets rank 0's run folder; only summary, samples and Hydra's files are there."""
    run = tmp_path / "run"
    over = ["data=ring", "solver=ddim", "solver.steps=2", "n=6", "batch_size=2", "plot=true"]
    _torchrun("sde-gen-sample", *over, "progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    names = {p.name for p in run.iterdir()}
    assert {"samples.npz", "summary.json", "samples.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name not in ("run", "outputs")]
    shutil.rmtree(run)
