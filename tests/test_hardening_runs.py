"""Bad inputs and faults of the second hardening round (issue 23), around a run's folders: each
is refused with an error of the stated type whose message names the folder, file or key, and
nothing already on disk is lost (bytes and mtimes compared before and after)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from test_bad_inputs_runs import _assert_nothing_lost, _fit, _snapshot
from test_train_helpers import tiny_trainer

from sde_gen import runtime
from sde_gen.cli.summaries import collect
from sde_gen.runtime.files import FolderLockedError

CLI = str(Path(sys.executable).with_name("sde-gen-sample"))
HOLD_LOCK = (
    "import sys, time; from filelock import FileLock; "
    "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)"
)


def _hydra_cfg(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


def _hold_lock(folder: Path, request) -> None:
    """Another process holds ``folder``'s lock until the test ends (a run in progress)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder / ".run.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    request.addfinalizer(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout.readline().strip() == "held"


def _refused(call, capsys) -> str:
    """The one-line message with which a callback stopped the process (status 2)."""
    with pytest.raises(SystemExit) as stop:
        call()
    assert stop.value.code == 2
    return capsys.readouterr().err


# -- 1. one owner for the run folders of sampling, evaluation and fit-grid, and for sweeps -------
RESULTS = {"sample": "samples.npz", "eval": "summary.json", "fit_grid": "grid.yaml"}


@pytest.mark.parametrize("command", sorted(RESULTS))
def test_a_fresh_run_into_a_folder_with_results_is_refused(command, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / RESULTS[command]).write_bytes(b"an earlier run's result")
    before = _snapshot(tmp_path)
    cfg = _hydra_cfg(command, f"hydra.run.dir={run}")
    owner = instantiate(cfg.hydra.callbacks.own_run)
    err = _refused(lambda: owner.on_run_start(cfg), capsys)
    assert "RunFolderError" in err and f"run folder '{run}'" in err, err
    assert RESULTS[command] in err and "hydra.run.dir=<new folder>" in err, err
    _assert_nothing_lost(tmp_path, before)
    runtime.lock_folder(run).release()  # a refused run gives the lock back


@pytest.mark.parametrize("command", sorted(RESULTS))
def test_a_second_run_into_a_folder_in_use_is_refused(command, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _hydra_cfg(command, f"hydra.run.dir={run}")
    first = instantiate(cfg.hydra.callbacks.own_run)
    first.on_run_start(cfg)
    second = instantiate(cfg.hydra.callbacks.own_run)
    err = _refused(lambda: second.on_run_start(cfg), capsys)
    assert "FolderLockedError" in err and f"run folder '{run}'" in err, err
    assert f"{run / '.run.lock'}" in err and "in use" in err, err
    first.on_run_end(cfg)
    runtime.lock_folder(run).release()  # free once the first run has ended


def test_a_sweep_into_a_finished_sweep_folder_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    runtime.write_summary(sweep / "0", {"nfe": 2, "mmd2": 0.5})
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    before = _snapshot(tmp_path)
    cfg = _hydra_cfg("sample", f"hydra.sweep.dir={sweep}")
    owner = instantiate(cfg.hydra.callbacks.own_sweep)
    err = _refused(lambda: owner.on_multirun_start(cfg), capsys)
    assert f"sweep folder '{sweep}'" in err and "0/summary.json" in err, err
    assert "multirun.yaml" in err and "hydra.sweep.dir=<new folder>" in err, err
    _assert_nothing_lost(tmp_path, before)


def test_a_resubmitted_training_sweep_continues_in_its_folder_but_not_beside_a_live_one(
    tmp_path, capsys
):
    """The documented SLURM pattern (``-m ... trainer.resume=auto hydra.sweep.dir=S`` submitted
    again) takes S's lock and goes on, each trainer guarding its job folder; while that sweep
    lives, a second one into S is refused."""
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    cfg = _hydra_cfg("train", f"hydra.sweep.dir={sweep}")
    first = instantiate(cfg.hydra.callbacks.own_sweep)
    first.on_multirun_start(cfg)
    second = instantiate(cfg.hydra.callbacks.own_sweep)
    err = _refused(lambda: second.on_multirun_start(cfg), capsys)
    assert f"sweep folder '{sweep}'" in err and "in use" in err, err
    first.on_multirun_end(cfg)
    runtime.lock_folder(sweep).release()  # free once the sweep has ended


def test_a_second_sweep_into_a_sweep_folder_in_use_is_refused(tmp_path, request):
    """``sde-gen-sample -m ... hydra.sweep.dir=S`` while another sweep holds S: exit status 2 with
    one line naming S and its lock; S gets no job folder, log or summary of the second sweep."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _hold_lock(sweep, request)
    before = _snapshot(tmp_path)
    cmd = [CLI, "-m", "data=ring", "solver=ddim", "solver.steps=2", "n=8", "plot=false",
           "progress=false", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: sweep folder") and f"'{sweep}'" in line, line
    assert f"{sweep / '.run.lock'}" in line and "hydra.sweep.dir=" in line, line
    assert sorted(p.name for p in sweep.iterdir()) == [".run.lock"]
    _assert_nothing_lost(tmp_path, before)


def test_collect_refuses_a_sweep_folder_in_use(tmp_path, request):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    runtime.write_summary(sweep / "0", {"nfe": 2, "mmd2": 0.5})
    held = runtime.lock_folder(sweep)
    request.addfinalizer(held.release)
    before = _snapshot(tmp_path)
    with pytest.raises(FolderLockedError) as err:
        collect(sweep)
    assert f"'{sweep}'" in str(err.value) and "running sweep" in str(err.value)
    assert not (sweep / "summaries.csv").exists()
    _assert_nothing_lost(tmp_path, before)
    held.release()
    assert collect(sweep)["csv"].is_file()  # once the sweep has ended


# -- 2. keep_checkpoints bounds the checkpoint folder across resumes -----------------------------
def test_keep_checkpoints_bounds_the_folder_across_kill_and_resume_cycles(tmp_path):
    """Three runs of 4 steps (a start, two resumes), a checkpoint every 2 steps, keep 2: the
    folder holds steps 10 and 12 only (issue 9's rule left 2 a run: 6); a symlinked step file and
    a checkpoint of another folder that the first run started from are not touched."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    _fit(elsewhere, steps=2, keep_checkpoints=None)()
    foreign = elsewhere / "checkpoints" / "step_00000002.pt"
    before = _snapshot(elsewhere)
    _fit(run, steps=4, resume=str(foreign), keep_checkpoints=2)()
    (run / "checkpoints" / "step_00000001.pt").symlink_to(foreign)
    for steps in (8, 12):
        _fit(run, steps=steps, resume="latest", keep_checkpoints=2)()
    names = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.is_symlink())
    assert names == ["step_00000010.pt", "step_00000012.pt"]
    assert (run / "checkpoints" / "step_00000001.pt").resolve() == foreign.resolve()
    _assert_nothing_lost(elsewhere, before)


# -- 3. a rendezvous whose peers never come ends within dist_timeout, naming them ----------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(monkeypatch, rank: int, size: int) -> int:
    port = _free_port()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
           "WORLD_SIZE": str(size), "LOCAL_RANK": "0"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return port


def test_rank_zero_names_the_ranks_that_never_joined(tmp_path, monkeypatch):
    """``sde-gen-sample`` as rank 0 of 3 whose peers never start: a RendezvousError after
    dist_timeout=1 s (torch waited 30 min in silence) naming MASTER_ADDR/PORT and ranks 1, 2."""
    from sde_gen.runtime.distributed import RendezvousError
    from sde_gen.sample import run_sampling

    port = _as_rank(monkeypatch, 0, 3)
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=["data=ring", "n=8", "dist_timeout=1", "progress=false"])
    start = time.perf_counter()
    with pytest.raises(RendezvousError) as err:
        run_sampling(cfg, tmp_path / "run")
    assert time.perf_counter() - start < 10.0
    message = str(err.value)
    assert f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port}" in message, message
    assert "rank(s) [1, 2] did not join" in message and "dist_timeout=1 s" in message, message
    assert not (tmp_path / "run").exists()


def test_a_rank_without_rank_zero_names_it(monkeypatch):
    from sde_gen.runtime.distributed import RendezvousError, init_world

    port = _as_rank(monkeypatch, 1, 2)
    start = time.perf_counter()
    with pytest.raises(RendezvousError) as err:
        init_world("cpu", timeout_s=1.0)
    assert time.perf_counter() - start < 10.0
    message = str(err.value)
    assert f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port}" in message, message
    assert "rank 1 of 2" in message and "missing: rank 0" in message, message


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_dist_timeout_must_be_positive(command):
    from sde_gen.cli.settings import EvalConfig, SampleConfig, TrainConfig, settings_from

    schema = {"train": TrainConfig, "sample": SampleConfig, "eval": EvalConfig}[command]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose(command, overrides=["dist_timeout=0"])
    with pytest.raises(ValueError, match="dist_timeout"):
        settings_from(cfg, schema)


# -- 4, 5. checkpoints: a step that is not a count, weights that are NaN ---------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 6-step run (checkpoints at 2, 4, 6)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    tiny_trainer(out, steps=6, checkpoint_every=2, keep_checkpoints=None, log_every=2).fit()
    return out


def _crafted(finished: Path, tmp: Path, **changes) -> Path:
    """The finished run's step-6 checkpoint with ``changes``, as an attacker would save it."""
    import torch

    state = torch.load(finished / "checkpoints" / "step_00000006.pt", weights_only=True)
    for key, change in changes.items():
        state[key] = change(state[key]) if callable(change) else change
    path = tmp / "crafted" / "step_00000006.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(state, path)
    return path


def _nan_weights(weights: dict) -> dict:
    return {k: v.new_full(v.shape, float("nan")) if v.is_floating_point() else v
            for k, v in weights.items()}  # fmt: skip


CHECKPOINTS = {
    "step_abc": ({"step": "abc"}, ("step='abc'", "not an integer >= 0")),
    "step_minus_5": ({"step": -5}, ("step=-5", "not an integer >= 0")),
    "all_nan_weights": (
        {"model": _nan_weights, "ema": _nan_weights},
        ("NaN/inf weights", "all 'model' tensors", "use an earlier one"),
    ),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
@pytest.mark.parametrize("use", ["resume", "sample"])
def test_a_crafted_checkpoint_is_named_before_use(name, use, finished, tmp_path):
    """Resuming from it (into a new folder) or sampling from it: a ValueError naming the file
    and what is wrong; a step of −5 once wrote step_00000000.pt, NaN weights were reported as a
    score returning NaN and, after a resume, as "the last good checkpoint"."""
    from sde_gen.sample import run_sampling

    changes, named = CHECKPOINTS[name]
    path = _crafted(finished, tmp_path, **changes)
    before = _snapshot(path.parent)  # (not _assert_nothing_lost: it loads every checkpoint)
    if use == "resume":
        call = _fit(tmp_path / "new", resume=str(path))
    else:
        with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
            over = [f"checkpoint={path}", "n=8", "solver.steps=2", "progress=false"]
            cfg = compose("sample", overrides=over)
        call = lambda: run_sampling(cfg, tmp_path / "new")  # noqa: E731
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and f"'{path}'" in message, message
    for text in named:
        assert text in message, message
    assert "last good checkpoint" not in message
    assert not list((tmp_path / "new").rglob("step_*.pt"))
    assert not (tmp_path / "new" / "summary.json").exists()
    assert _snapshot(path.parent) == before


# -- 7. a full disk during the PNG export ----------------------------------------------------------
def test_disk_full_during_the_png_export_is_named_and_leaves_no_partial_export(
    tmp_path, monkeypatch
):
    """``export_png=true`` on a disk that fills at the 4th of 6 PNGs: the DiskFullError of
    checkpoints, naming that file; the 3 written before are removed (no png/ folder that looks
    whole), and no summary claims the run finished."""
    import errno

    from PIL import Image

    from sde_gen.runtime.files import DiskFullError
    from sde_gen.sample import run_sampling

    save = Image.Image.save

    def fill_at_the_fourth(self, fp, *args, **kwargs):
        if Path(fp).name == "000003.png":
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fill_at_the_fourth)
    from test_bad_inputs_library import MLP_CFG, VP, _craft

    data = {"_target_": "sde_gen.data.NpzImages", "path": str(tmp_path / "gone.npz")}
    info = {"shape": [1, 6, 6], "num_bins": 256}
    config = {"sde": VP, "data": data, "model": MLP_CFG}
    ckpt = _craft(tmp_path / "step_00000001.pt", config, shape=(1, 6, 6), data_info=info)
    over = [f"checkpoint={ckpt}", "n=6", "solver.steps=2", "export_png=true", "plot=false",
            "progress=false"]  # fmt: skip
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=over)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError) as err:
        run_sampling(cfg, out, data_chosen=False)
    message = str(err.value)
    assert "disk full" in message and f"'{out / 'png' / '000003.png'}'" in message, message
    assert "PNG 4 of 6" in message and "the 3 written before were removed" in message, message
    assert not (out / "png").exists() and not (out / "summary.json").exists()
    assert (out / "samples.npz").is_file()  # what was saved before stays


# -- 8. misleading messages: the latest link, TensorBoard at a resume, fp16 skips ------------------
def test_the_latest_link_moves_only_when_the_run_succeeds(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from sde_gen.cli.callbacks import LinkLatest

    link = tmp_path / "outputs" / "latest"
    good, bad = tmp_path / "outputs" / "good", tmp_path / "outputs" / "bad"
    for folder in (good, bad):
        folder.mkdir(parents=True)
    latest = LinkLatest(run_link=str(link), sweep_link=str(tmp_path / "multirun" / "latest"))

    def end(folder: Path, status: JobStatus) -> None:
        config = OmegaConf.create({"hydra": {"run": {"dir": str(folder)}}})
        latest.on_run_start(config)
        latest.on_run_end(config, job_return=JobReturn(status=status))

    end(good, JobStatus.COMPLETED)
    assert link.resolve() == good.resolve()
    end(bad, JobStatus.FAILED)
    assert link.resolve() == good.resolve()  # a failed run leaves it on the last good one


def test_tensorboard_keeps_the_resumed_checkpoints_own_step(tmp_path):
    """6 steps (events at 2, 4, 6; checkpoint at 6), then a resume to 8: the event of step 6
    stays (purging at the resume step dropped it), the steps are 2, 4, 6, 8 once each."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _fit(run, steps=6)()
    _fit(run, steps=8, resume="latest")()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8]


def test_fp16_does_not_blame_the_caller_when_the_scaler_skips_a_step(tmp_path):
    """An infinite loss scale overflows every gradient: the scaler skips the optimizer steps and
    torch would warn "lr_scheduler.step() before optimizer.step()"; no warning, weights kept."""
    import warnings

    import torch

    trainer = tiny_trainer(tmp_path, precision="fp16", steps=2, checkpoint_every=None)
    trainer.loop.scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
