"""torch.distributed set-up as torchrun or SLURM (srun/submitit) start the processes."""

from __future__ import annotations

import os

import pytest

from sde_gen.runtime.distributed import World, _first_host, export_slurm_env, launched


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node[01-04,07]", "node01"), ("a,b", "a"), ("gpu-a[3,5]", "gpu-a3"), ("single", "single")],
)
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert _first_host(nodelist) == host


@pytest.fixture
def env(monkeypatch):
    """A private copy of the environment: what export_slurm_env writes never leaks into other
    tests (a leaked WORLD_SIZE would make every later run wait for 7 absent ranks)."""
    keys = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    private = {k: v for k, v in os.environ.items() if k not in keys and not k.startswith("SLURM")}
    monkeypatch.setattr(os, "environ", private)
    return private


def test_slurm_tasks_become_env_variables(env):
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_ID": "0",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[12-13]",
        "SLURM_JOB_ID": "123456",
    }
    env.update(slurm)
    assert launched()
    assert (env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"]) == ("8", "5", "1")
    assert env["MASTER_ADDR"] == "gpu12"
    assert env["MASTER_PORT"] == str(20000 + 123456 % 40000)


def test_torchrun_variables_win_and_a_bare_batch_script_is_one_process(env):
    env.update({"WORLD_SIZE": "2", "SLURM_PROCID": "7", "SLURM_STEP_ID": "0"})
    export_slurm_env()
    assert env.get("RANK") != "7"
    del env["WORLD_SIZE"], env["SLURM_STEP_ID"]  # the sbatch script itself, not an srun step
    env["SLURM_NTASKS"] = "4"
    assert not launched() and "WORLD_SIZE" not in env


def test_world_shards_cover_every_index_once():
    parts = [list(World(rank=r, size=3).shard(10)) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert parts[1] == [1, 4, 7]
