"""The conventions every command shares: typed settings, one-line errors with exit status 2,
--help per command, threads, outputs/<cmd>/<date>/<time> with a ``latest`` link, umask, logging."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from sde_gen.cli.errors import group_options, one_line
from sde_gen.cli.settings import EvalConfig, SampleConfig, TrainConfig, settings_from
from sde_gen.runtime.files import atomic_write
from sde_gen.runtime.progress import progress_bar
from sde_gen.runtime.resources import choose_threads

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
ENV.pop("HYDRA_FULL_ERROR", None)
COMMANDS = {
    "train": "sde-gen-train",
    "sample": "sde-gen-sample",
    "eval": "sde-gen-eval",
    "demo": "sde-gen-demo",
}
GROUPS = {
    "train": {"sde", "loss", "model", "data", "trainer", "solver", "experiment"},
    "sample": {"model", "data", "sde", "solver", "features"},
    "eval": {"model", "data", "sde", "probe", "prior"},
}


def _cfg(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _cli(cmd: str, *args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cmd), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


# -- typed settings ---------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["no", "false", "off"])
def test_words_for_false_are_real_booleans(word):
    sample = settings_from(_cfg("sample", f"ema={word}", f"plot={word}"), SampleConfig)
    assert sample.ema is False and sample.plot is False
    train = settings_from(_cfg("train", f"trainer.progress={word}"), TrainConfig)
    assert train.trainer.progress is False


@pytest.mark.parametrize(
    ("name", "override", "key"),
    [
        ("sample", "n=2.7", "n"),
        ("sample", "n=abc", "n"),
        ("sample", "ema=maybe", "ema"),
        ("eval", "split=valid", "split"),
        ("eval", "method=FOO", "method"),
        ("train", "trainer.steps=1e9x", "trainer.steps"),
        ("train", "trainer.bogus=1", "trainer.bogus"),
    ],
)
def test_wrong_type_or_unknown_key_fails_at_composition_naming_the_key(name, override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        _cfg(name, override)
    assert key in one_line(err.value)
    assert "\n" not in one_line(err.value)


@pytest.mark.parametrize(
    ("name", "schema", "override", "named"),
    [
        ("sample", SampleConfig, "n=1", "n=1"),
        ("sample", SampleConfig, "threads=0", "threads=0"),
        ("eval", EvalConfig, "rtol=0", "rtol=0"),
        ("eval", EvalConfig, "logp_atol=0", "logp_atol=0"),
        ("eval", EvalConfig, "num_probes=0", "num_probes=0"),
        ("eval", EvalConfig, "n=0", "n=0"),
        ("train", TrainConfig, "seed=-2", "seed=-2"),
        ("train", TrainConfig, "+trainer.extra=3", "trainer.extra"),
    ],
)
def test_ranges_are_checked_once_by_the_schema(name, schema, override, named):
    with pytest.raises(ValueError, match="invalid|unknown") as err:
        settings_from(_cfg(name, override), schema)
    assert named in str(err.value)


def test_typed_settings_carry_enums_and_defaults():
    ev = settings_from(_cfg("eval", "split=train", "method=DOP853"), EvalConfig)
    assert ev.split.value == "train" and ev.method.value == "DOP853" and ev.n == 512
    tr = settings_from(_cfg("train", "experiment=toy2d"), TrainConfig)
    assert tr.trainer.steps == 3000 and tr.trainer.betas == [0.9, 0.999]


@pytest.mark.parametrize("name", ["train", "sample", "eval", "demo"])
def test_every_command_accepts_threads(name):
    assert _cfg(name, "threads=1").threads == 1


def test_small_models_on_a_cpu_default_to_one_thread():
    before = torch.get_num_threads()
    try:
        small = torch.nn.Linear(4, 4)
        assert choose_threads(None, torch.device("cpu"), small) == 1
        assert choose_threads(None, torch.device("cpu"), None) == 1  # an exact score
        assert choose_threads(2, torch.device("cpu"), small) == 2  # the user's choice wins
    finally:
        torch.set_num_threads(before)


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cmd", "args", "named"),
    [
        ("sample", ["n=2.7"], "n"),
        ("sample", ["n=abc"], "n"),
        ("sample", ["solver=pf_ode", "solver.steps=10"], "solver.steps"),
        ("sample", ["data=moons"], "no exact score"),
        ("train", ["trainer.lr=0", "trainer.progress=false"], "trainer.lr"),
        ("eval", ["method=FOO"], "RK45"),
        ("train", ["hydra.run.dir=/proc/sde_gen_x", "trainer.progress=false"], "/proc/sde_gen_x"),
        ("sample", ["hydra.run.dir=/dev/null/x"], "/dev/null/x"),
        ("train", ["device=tpu", "trainer.progress=false"], "device='tpu'"),
        ("eval", ["device=meta"], "device='meta'"),
        ("sample", ["n=1000000000"], "n=1000000000"),
        ("train", ["trainer.batch_size=1000000000", "trainer.progress=false"], "batch_size"),
        ("demo", ["out=/proc/sde_gen_x/f.png"], "/proc/sde_gen_x"),
    ],
)
def test_user_error_is_one_line_and_exit_status_2(tmp_path, cmd, args, named):
    quiet = [] if cmd in ("train", "demo") else ["progress=false"]
    proc = _cli(COMMANDS[cmd], *args, *quiet, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert named in proc.stderr


def test_collect_user_error_is_one_line_and_exit_status_2(tmp_path):
    (tmp_path / "afile").write_text("{}")
    for target in (tmp_path / "missing", tmp_path / "afile"):
        proc = _cli("sde-gen-collect", str(target), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("sde-gen-collect: error: ") and proc.stderr.count("\n") == 1
        assert str(target) in proc.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_collect_into_a_read_only_folder_is_one_line(tmp_path):
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / "summary.json").write_text('{"nfe": 3}')
    (tmp_path / "sweep").chmod(0o555)
    try:
        proc = _cli("sde-gen-collect", str(tmp_path / "sweep"), cwd=tmp_path)
    finally:
        (tmp_path / "sweep").chmod(0o755)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not writable" in proc.stderr and str(tmp_path / "sweep") in proc.stderr


def test_full_traceback_with_hydra_full_error(tmp_path):
    env = {**ENV, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [str(BIN / "sde-gen-sample"), "n=1", "progress=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "n=1" in proc.stderr


# -- help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["train", "sample", "eval"])
def test_help_describes_the_command_and_only_its_groups(tmp_path, name):
    proc = _cli(COMMANDS[name], "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"{COMMANDS[name]}:")  # its own description, not Hydra's generic text
    listed = {
        line.split(":")[0].strip()
        for line in out.split("== Config groups")[1].split("== Config (")[0].splitlines()[1:]
        if line.strip()
    }
    assert {g for g in listed if "/" not in g} == GROUPS[name]
    assert "Powered by Hydra" not in out


def test_group_options_lists_the_config_files():
    text = group_options("solver", "loss/weighting")
    assert "ancestral" in text and "dpm_solver" in text
    assert "likelihood" in text.splitlines()[1] and "sigma2" in text.splitlines()[1]


# -- outputs, latest link, logging, umask -------------------------------------------------------
def test_sample_writes_under_outputs_sample_with_latest_link_and_log(tmp_path):
    args = ["data=ring", "solver=ddim", "solver.steps=3", "n=16", "progress=false"]
    proc = _cli("sde-gen-sample", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "outputs" / "sample").glob("*/*/summary.json"))
    assert len(runs) == 1
    latest = tmp_path / "outputs" / "sample" / "latest"
    assert latest.is_symlink() and latest.resolve() == runs[0].parent.resolve()
    assert json.loads((latest / "summary.json").read_text())["nfe"] == 3
    # the summary line goes through logging: it stands in Hydra's job log too
    assert "nfe=3" in (latest / "sample.log").read_text() and "nfe=3" in proc.stdout


def test_multirun_sweep_is_collected_and_linked(tmp_path):
    args = ["-m", "data=ring", "solver=ddim", "solver.steps=2,3", "n=8", "plot=false"]
    proc = _cli("sde-gen-sample", *args, "progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    latest = tmp_path / "multirun" / "sample" / "latest"
    assert latest.is_symlink()
    table = (latest / "summaries.csv").read_text().splitlines()
    assert len(table) == 3  # header + 2 runs, written by the callback at the end of the sweep


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "f.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_progress_bars_are_rate_limited_off_a_terminal():
    bar = progress_bar(True, total=10)  # pytest captures stderr: not a terminal
    try:
        assert bar.mininterval >= 30
    finally:
        bar.close()
    assert progress_bar(False, total=10).disable
