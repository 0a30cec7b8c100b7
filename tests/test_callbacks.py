"""The multirun callback collects a real Hydra sweep; the launcher configs extend the plugins'."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sde_gen.cli.callbacks import CollectOnMultirunEnd

CLI = str(Path(sys.executable).with_name("sde-gen-sample"))
CALLBACK = "++hydra.callbacks.collect._target_=sde_gen.cli.callbacks.CollectOnMultirunEnd"


def test_multirun_end_writes_the_summaries_into_the_sweep_dir(tmp_path):
    """Two DDIM jobs (2 and 3 steps, NFE = steps): the sweep dir gets summaries.{csv,md,png}."""
    sweep = tmp_path / "sweep"
    cmd = [CLI, "-m", "data=ring", "solver=ddim", "solver.steps=2,3", "n=8", "plot=false",
           "progress=false", CALLBACK, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(sweep / "summaries.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["run"], int(r["steps"]), int(r["nfe"])) for r in rows} == {("0", 2, 2), ("1", 3, 3)}
    assert (sweep / "summaries.md").is_file() and (sweep / "summaries.png").stat().st_size > 1000
    assert f"sde-gen-collect: {sweep / 'summaries.csv'}" in proc.stdout + proc.stderr


def test_a_failed_collection_warns_and_does_not_raise(tmp_path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with caplog.at_level(logging.WARNING, logger="sde_gen.cli.callbacks"):
        CollectOnMultirunEnd().on_multirun_end(config)
    assert "no summary.json" in caplog.text and str(tmp_path) in caplog.text
    assert not (tmp_path / "summaries.csv").exists()


@pytest.mark.parametrize(
    ("launcher", "plugin", "target", "ours", "plugin_default"),
    [
        ("joblib_local", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher", {"n_jobs": 2},
         {"prefer": "processes", "pre_dispatch": "2*n_jobs"}),
        ("slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher",
         {"timeout_min": 240, "cpus_per_task": 8, "gpus_per_node": 1, "mem_gb": 32},
         {"partition": None, "array_parallelism": 256}),
        ("slurm_ddp", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher",
         {"nodes": 1, "gpus_per_node": 4, "tasks_per_node": 4, "signal_delay_s": 120,
          "max_num_timeout": 3},
         {"partition": None, "array_parallelism": 256}),
    ],
)  # fmt: skip
def test_launcher_configs_extend_the_plugins_without_deprecation(
    launcher, plugin, target, ours, plugin_default
):
    """Our launcher yaml pulls the plugin's registered config (its schema and defaults) and sets
    only our values; Hydra warns nothing (no automatic schema matching)."""
    pytest.importorskip(plugin)
    from hydra import compose, initialize_config_module

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with initialize_config_module("sde_gen.conf", version_base="1.3"):
            overrides = [f"hydra/launcher={launcher}"]
            cfg = compose("sample", overrides=overrides, return_hydra_config=True)
    assert [str(w.message) for w in caught if "deprecated" in str(w.message)] == []
    got = cfg.hydra.launcher
    assert got._target_.endswith(f".{target}")
    assert {k: got[k] for k in ours} == ours
    assert {k: got[k] for k in plugin_default} == plugin_default


def test_slurm_ddp_starts_one_task_per_gpu():
    """``tasks_per_node`` follows ``gpus_per_node``: one rank per GPU whatever the node has."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        over = ["hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=8"]
        cfg = compose("sample", overrides=over, return_hydra_config=True)
    params = instantiate(cfg.hydra.launcher).params
    assert (params["tasks_per_node"], params["gpus_per_node"]) == (8, 8)


def test_submitit_local_sweep_runs_both_jobs(tmp_path):
    """A 2-job sweep through submitit's local executor: two summaries, one per job."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    cmd = [CLI, "-m", "hydra/launcher=submitit_local", "data=ring", "solver=ddim",
           "solver.steps=2,3", "n=8", "plot=false", "progress=false",
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert {k: (s["steps"], s["nfe"], s["world_size"]) for k, s in summaries.items()} == {
        "0": (2, 2, 1),
        "1": (3, 3, 1),
    }
    assert list(sweep.glob(".submitit/*"))  # submitit ran the jobs
