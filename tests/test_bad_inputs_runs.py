"""Bad inputs and faults around a run's process and folder (issue 9): each case is refused with an
error of the stated type whose message names the value or file, and nothing already on disk is
lost or half-written (bytes and mtimes compared before and after; logs may only grow).

The library side (SDE, data, loss, checkpoint contents) has its own tests; the slow faults
(kill -9 mid-write, SIGTERM through the CLI, a full tmpfs) are in experiments/fault_injection.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_train_helpers import tiny_trainer

from sde_gen import runtime
from sde_gen.cli.callbacks import GuardRunFolder
from sde_gen.cli.summaries import collect
from sde_gen.runtime import files, resources
from sde_gen.runtime.files import TMP_PATTERN, DiskFullError, FolderLockedError, UnwritableError
from sde_gen.solvers import EulerMaruyama
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.trainer import RunFolderError

APPENDABLE = {"metrics.jsonl", "metrics.csv"}
"""Logs a resume may rewrite with the same lines and then extend."""
REDRAWN = {"loss.png"}
"""Plots a resume may draw again (whole: a PNG from signature to IEND); every other file must keep
its bytes and its mtime."""
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cfg(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


TINY_TRAIN = [
    "model.hidden=16",
    "model.num_layers=1",
    "model.embedding.dim=8",
    "trainer.steps=4",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "solver.steps=2",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 6-step run (checkpoints at 2, 4, 6) with Hydra's files beside it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    tiny_trainer(out, steps=6, checkpoint_every=2, keep_checkpoints=None, log_every=2).fit()
    (out / ".hydra").mkdir()
    (out / ".hydra" / "overrides.yaml").write_text("- trainer.steps=6\n")
    (out / "train.log").write_text("a finished run\n")
    return out


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _assert_nothing_lost(root: Path, before: dict[str, tuple[bytes, int]]) -> None:
    after = _snapshot(root)
    for name, (data, mtime) in before.items():
        assert name in after, f"{name} was deleted"
        if Path(name).name in APPENDABLE:
            assert after[name][0].startswith(data), f"{name} lost lines"
        elif Path(name).name in REDRAWN:
            png = after[name][0]
            assert png.startswith(b"\x89PNG") and png.endswith(b"IEND\xaeB`\x82"), name
        else:
            assert after[name] == (data, mtime), f"{name} was rewritten"
    torn = [n for n in after if TMP_PATTERN.match(Path(n).name)]
    assert not torn, f"half-written files left: {torn}"
    for name in after:
        if Path(name).name.startswith("step_") and name.endswith(".pt"):
            ckpt.load_checkpoint(root / name)  # every checkpoint on disk is whole


# -- the cases ------------------------------------------------------------------------------------
Case = Callable[..., Callable[[], object]]
CASES: dict[str, tuple[Case, type[BaseException], tuple[str, ...], tuple[str, ...]]] = {}


def case(exc: type[BaseException], *named: str, absent: tuple[str, ...] = ()):
    """Register a case: its setup returns the call that must raise ``exc``; ``named`` (formatted
    with run=, tmp=) must occur in the message; ``absent`` paths must not have been created."""

    def register(setup: Case) -> Case:
        CASES[setup.__name__] = (setup, exc, named, absent)
        return setup

    return register


def _fit(out: Path, **kw) -> Callable[[], object]:
    kw = {"steps": 8, "checkpoint_every": 2, "keep_checkpoints": None, "log_every": 2, **kw}
    return lambda: tiny_trainer(out, **kw).fit()


def _keep_only(run: Path, *names: str) -> None:
    for p in list(run.iterdir()):
        if p.name not in names and p.name not in (".hydra", "train.log"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


# one owner per run folder
@case(RunFolderError, "{run}", "trainer.resume=latest", "metrics.jsonl", "summary.json")
def fresh_run_into_a_finished_folder(run, tmp, **_):
    return _fit(run)


@case(RunFolderError, "{run}", "metrics.jsonl", "trainer.resume=latest")
def fresh_run_into_a_folder_with_metrics(run, tmp, **_):
    _keep_only(run, "metrics.jsonl")
    return _fit(run)


@case(RunFolderError, "{run}", "summary.json")
def fresh_run_into_a_folder_with_a_summary(run, tmp, **_):
    _keep_only(run, "summary.json")
    return _fit(run)


@case(RunFolderError, "3 checkpoint(s)", "{run}/checkpoints")
def fresh_run_into_a_folder_with_checkpoints(run, tmp, **_):
    _keep_only(run, "checkpoints")
    return _fit(run)


@case(RunFolderError, "metrics.csv")
def fresh_run_into_a_folder_with_a_csv_log(run, tmp, **_):
    _keep_only(run)
    (run / "metrics.csv").write_text("step,loss\n2,0.5\n")
    return _fit(run)


@case(RunFolderError, "{run}/checkpoints", "checkpoint(s)", absent=("{tmp}/new",))
def fresh_run_sharing_a_checkpoint_dir(run, tmp, **_):
    return _fit(tmp / "new", checkpoint_dir=str(run / "checkpoints"))


@case(RunFolderError, "step_00000002.pt", "not the newest", "step_00000006.pt", "new folder")
def resume_of_an_older_checkpoint_in_its_folder(run, tmp, **_):
    return _fit(run, resume=str(run / "checkpoints" / "step_00000002.pt"))


@case(RunFolderError, "{run}", "{tmp}/elsewhere/step_00000004.pt", "new folder")
def resume_of_a_foreign_checkpoint_into_a_finished_folder(run, tmp, **_):
    (tmp / "elsewhere").mkdir()
    shutil.copy2(run / "checkpoints" / "step_00000004.pt", tmp / "elsewhere")
    return _fit(run, resume=str(tmp / "elsewhere" / "step_00000004.pt"))


@case(ValueError, "step_00000006.pt", "step 6 > trainer.steps=4")
def resume_past_the_configured_steps(run, tmp, **_):
    return _fit(run, steps=4, resume="latest")


@case(ValueError, "trainer.resume='{run}/checkpoints'", "is a folder")
def resume_of_a_folder(run, tmp, **_):
    return _fit(tmp / "new", resume=str(run / "checkpoints"))


@case(ValueError, "{tmp}/missing.pt", absent=("{tmp}/new",))
def resume_of_a_missing_file(run, tmp, **_):
    return _fit(tmp / "new", resume=str(tmp / "missing.pt"))


@case(ValueError, "resume='latest'", "{tmp}/empty/checkpoints", absent=("{tmp}/empty",))
def resume_latest_without_a_checkpoint(run, tmp, **_):
    return _fit(tmp / "empty", resume="latest")


@case(FolderLockedError, "{run}", "{run}/.run.lock", "in use")
def second_run_while_the_first_holds_the_lock(run, tmp, request, **_):
    lock = runtime.lock_folder(run)
    request.addfinalizer(lock.release)
    return _fit(run, steps=10, resume="latest")


@case(FolderLockedError, "{run}", ".run.lock")
def second_run_while_another_process_holds_the_lock(run, tmp, request, **_):
    code = (
        "import sys, time; from filelock import FileLock; "
        "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run / ".run.lock")], stdout=subprocess.PIPE, text=True
    )
    request.addfinalizer(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout.readline().strip() == "held"
    return _fit(run, steps=10, resume="latest")


@case(FolderLockedError, "{tmp}/ck", "{tmp}/ck/.run.lock")
def second_run_on_a_locked_checkpoint_dir(run, tmp, request, **_):
    (tmp / "ck").mkdir()
    lock = runtime.lock_folder(tmp / "ck")
    request.addfinalizer(lock.release)
    return _fit(tmp / "new", checkpoint_dir=str(tmp / "ck"))


@case(RunFolderError, "{run}", "trainer.resume=latest")
def hydra_guard_refuses_before_hydra_writes(run, tmp, **_):
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(run)}}, "trainer": {"resume": None, "checkpoint_dir": None}}
    )
    return lambda: GuardRunFolder.check(config)


@case(RunFolderError, "step_00000004.pt", "not the newest")
def hydra_guard_refuses_an_older_resume(run, tmp, **_):
    older = str(run / "checkpoints" / "step_00000004.pt")
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(run)}}, "trainer": {"resume": older, "checkpoint_dir": None}}
    )
    return lambda: GuardRunFolder.check(config)


@case(FolderLockedError, "{run}/.run.lock")
def hydra_guard_refuses_a_locked_folder(run, tmp, request, **_):
    lock = runtime.lock_folder(run)
    request.addfinalizer(lock.release)
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(run)}}, "trainer": {"resume": "latest"}}
    )
    return lambda: GuardRunFolder.check(config)


# folders checked before the first step
@case(UnwritableError, "trainer.checkpoint_dir", "{tmp}/afile", "is a file")
def checkpoint_dir_is_a_file(run, tmp, **_):
    (tmp / "afile").write_text("not a folder")
    return _fit(tmp / "new", checkpoint_dir=str(tmp / "afile"))


@case(UnwritableError, "checkpoint folder", "{tmp}/new/checkpoints", "is a file")
def default_checkpoints_is_a_file(run, tmp, **_):
    (tmp / "new").mkdir()
    (tmp / "new" / "checkpoints").write_text("not a folder")
    return _fit(tmp / "new")


@case(UnwritableError, "{tmp}/afile/sub", "not writable")
def checkpoint_dir_below_a_file(run, tmp, **_):
    (tmp / "afile").write_text("not a folder")
    return _fit(tmp / "new", checkpoint_dir=str(tmp / "afile" / "sub"))


@case(UnwritableError, "run folder", "/proc/sde_gen_no_such_run", "not writable")
def run_folder_under_proc(run, tmp, **_):
    return _fit(Path("/proc/sde_gen_no_such_run"))


@case(UnwritableError, "run folder", "{tmp}/afile", "is a file")
def run_folder_is_a_file(run, tmp, **_):
    (tmp / "afile").write_text("not a folder")
    return _fit(tmp / "afile")


@case(UnwritableError, "{tmp}/ro/checkpoints", "not writable")
def read_only_checkpoint_folder(run, tmp, request, **_):
    if IS_ROOT:
        pytest.skip("root writes into read-only folders")
    (tmp / "ro" / "checkpoints").mkdir(parents=True)
    (tmp / "ro" / "checkpoints").chmod(0o555)
    request.addfinalizer(lambda: (tmp / "ro" / "checkpoints").chmod(0o755))
    return _fit(tmp / "ro")


# absurd sizes: refused by a preflight estimate, before any file
@case(ValueError, "trainer.batch_size=1000000000", "memory", absent=("{tmp}/new",))
def training_batch_larger_than_memory(run, tmp, **_):
    return _fit(tmp / "new", batch_size=10**9)


@case(ValueError, "trainer.sample_count=1000000000", absent=("{tmp}/new",))
def sample_plot_larger_than_memory(run, tmp, **_):
    return _fit(tmp / "new", sample_count=10**9, solver=EulerMaruyama(steps=2))


@case(ValueError, "trainer.batch_size=1000000000", absent=("{tmp}/new",))
def training_batch_larger_than_memory_from_the_config(run, tmp, **_):
    from sde_gen.train import run as train_run

    cfg = _cfg("train", *TINY_TRAIN, "trainer.batch_size=1000000000")
    return lambda: train_run(cfg, tmp / "new", progress=False)


@case(ValueError, "n=1000000000", "lower n", absent=("{tmp}/new",))
def sample_count_larger_than_memory(run, tmp, **_):
    from sde_gen.sample import run_sampling

    cfg = _cfg("sample", "data=ring", "n=1000000000", "progress=false")
    return lambda: run_sampling(cfg, tmp / "new")


@case(ValueError, "n=10000000", absent=("{tmp}/new",))
def recorded_trajectory_larger_than_memory(run, tmp, **_):
    from sde_gen.sample import run_sampling

    overrides = ("data=ring", "n=10000000", "record=true", "solver.steps=1000", "progress=false")
    cfg = _cfg("sample", *overrides)
    return lambda: run_sampling(cfg, tmp / "new")


@case(ValueError, "n=1000000000", absent=("{tmp}/new",))
def evaluation_set_larger_than_memory(run, tmp, **_):
    from sde_gen.evaluate import run_evaluation

    cfg = _cfg("eval", "data=ring", "n=1000000000", "progress=false")
    return lambda: run_evaluation(cfg, tmp / "new")


@case(ValueError, "batch_size=64", "lower batch_size", absent=("{tmp}/new",))
def evaluation_batch_larger_than_device_memory(run, tmp, monkeypatch, **_):
    from sde_gen.evaluate import run_evaluation

    monkeypatch.setattr(resources, "memory_bytes", lambda device: 40_000)  # a 40 kB device
    cfg = _cfg("eval", "data=ring", "n=64", "batch_size=64", "progress=false")
    return lambda: run_evaluation(cfg, tmp / "new")


# devices
@pytest.mark.parametrize("name", ["meta", "tpu", "cuda:99", "gpu", "mps"])
def test_unusable_devices_are_named(name):
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if name == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    with pytest.raises(ValueError, match=f"device='{name}'"):
        runtime.pick_device(name)


@case(ValueError, "device='meta'", absent=("{tmp}/new",))
def training_on_the_meta_device(run, tmp, **_):
    from sde_gen.train import run as train_run

    cfg = _cfg("train", *TINY_TRAIN, "device=meta")
    return lambda: train_run(cfg, tmp / "new", progress=False)


@case(ValueError, "device='tpu'", absent=("{tmp}/new",))
def sampling_on_an_unknown_device(run, tmp, **_):
    from sde_gen.sample import run_sampling

    cfg = _cfg("sample", "data=ring", "n=8", "device=tpu", "progress=false")
    return lambda: run_sampling(cfg, tmp / "new")


@case(ValueError, "device='cuda:99'", absent=("{tmp}/new",))
def evaluating_on_a_missing_gpu(run, tmp, **_):
    from sde_gen.evaluate import run_evaluation

    if torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    cfg = _cfg("eval", "data=ring", "n=8", "device=cuda:99", "progress=false")
    return lambda: run_evaluation(cfg, tmp / "new")


# logs: a torn line only at the end is forgiven
@case(ValueError, "{run}/metrics.jsonl", "line 2")
def metrics_log_damaged_in_the_middle(run, tmp, **_):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return _fit(run, resume="latest")


# a full disk: named, and the previous checkpoint stays
def _full_disk(monkeypatch, error: BaseException) -> None:
    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", save)


@case(DiskFullError, "disk full", "step_00000008.pt", "last good checkpoint", "step_00000006.pt")
def disk_full_while_checkpointing(run, tmp, monkeypatch, **_):
    _full_disk(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    return _fit(run, resume="latest")


@case(DiskFullError, "disk full", "step_00000008.pt", "iostream error")
def disk_full_reported_by_torch_save(run, tmp, monkeypatch, **_):
    _full_disk(monkeypatch, RuntimeError("basic_ios::clear: iostream error"))
    return _fit(run, resume="latest")


@case(DiskFullError, "disk full", "step_00000008.pt")
def disk_quota_exceeded_while_checkpointing(run, tmp, monkeypatch, **_):
    _full_disk(monkeypatch, OSError(errno.EDQUOT, "Disk quota exceeded"))
    return _fit(run, resume="latest")


@case(DiskFullError, "disk full", "{run}/summary.json")
def disk_full_while_writing_the_summary(run, tmp, monkeypatch, **_):
    write_text = Path.write_text

    def full(self, data, *args, **kwargs):
        if self.name.startswith(".summary.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    return _fit(run, resume="latest")


@case(DiskFullError, "disk full", "{run}/metrics.jsonl")
def disk_full_while_appending_metrics(run, tmp, monkeypatch, **_):
    real_open = Path.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            self.handle.close()

    def opened(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return Full(handle) if self.name == "metrics.jsonl" and mode == "a" else handle

    monkeypatch.setattr(Path, "open", opened)
    return _fit(run, resume="latest")


@case(DiskFullError, "disk full", "{tmp}/new/summary.json")
def disk_full_while_writing_a_sample_summary(run, tmp, monkeypatch, **_):
    from sde_gen.sample import run_sampling

    write_text = Path.write_text

    def full(self, data, *args, **kwargs):
        if self.name.startswith(".summary.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    cfg = _cfg("sample", "data=ring", "n=8", "solver.steps=2", "plot=false", "progress=false")
    return lambda: run_sampling(cfg, tmp / "new")


# sde-gen-collect
@case(UnwritableError, "{tmp}/sweep", "not writable", absent=("{tmp}/sweep/summaries.csv",))
def collect_into_a_read_only_folder(run, tmp, monkeypatch, **_):
    (tmp / "sweep" / "0").mkdir(parents=True)
    runtime.write_summary(tmp / "sweep" / "0", {"nfe": 3, "mmd2": 0.1})
    sweep = str(tmp / "sweep")

    def refuse(*args, dir=None, **kwargs):
        if str(dir) == sweep:
            raise PermissionError(errno.EACCES, "Permission denied", dir)
        raise AssertionError("unexpected probe")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    return lambda: collect(tmp / "sweep")


@case(ValueError, "{tmp}/afile", "is a file")
def collect_of_a_file(run, tmp, **_):
    (tmp / "afile").write_text("{}")
    return lambda: collect(tmp / "afile")


@case(ValueError, "{tmp}/nowhere", "does not exist", absent=("{tmp}/nowhere",))
def collect_of_a_missing_folder(run, tmp, **_):
    return lambda: collect(tmp / "nowhere")


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named_and_nothing_on_disk_is_lost(name, finished, tmp_path, request):
    setup, exc, named, absent = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    monkeypatch = request.getfixturevalue("monkeypatch")
    call = setup(run, tmp_path, request=request, monkeypatch=monkeypatch)
    before = _snapshot(tmp_path)
    with pytest.raises(exc) as err:
        call()
    monkeypatch.undo()
    message = str(err.value)
    assert "\n" not in message, message
    for text in named:
        assert text.format(run=run, tmp=tmp_path) in message, message
    for path in absent:
        assert not Path(path.format(run=run, tmp=tmp_path)).exists(), path
    _assert_nothing_lost(tmp_path, before)


def test_enough_cases():
    assert len(CASES) >= 40


# -- what is forgiven, and what a run may delete ---------------------------------------------------
def test_torn_last_metrics_line_is_dropped_with_a_warning(finished, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 7, "loss": 0.')  # a kill in the middle of a line
    with caplog.at_level("WARNING"):
        summary = _fit(run, resume="latest")()
    assert summary["steps"] == 8
    assert any(
        "metrics.jsonl" in r.getMessage() and "torn" in r.getMessage() for r in caplog.records
    )
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [int(s.split(",")[0].split(":")[1]) for s in steps] == [2, 4, 6, 8]


def test_orphaned_temporary_files_are_removed_at_start(finished, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    orphans = [
        run / "checkpoints" / ".step_00000008.pt.0123456789ab.tmp",
        run / ".summary.json.abcdef012345.tmp",
    ]
    keep = [run / "checkpoints" / "notes.tmp", run / "checkpoints" / ".step_00000008.pt.xyz.tmp"]
    for p in orphans + keep:
        p.write_bytes(b"x" * 100)
    with caplog.at_level("WARNING"):
        _fit(run, resume="latest")()
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in keep)  # only atomic_write's own pattern is touched
    assert any("removed 2 unfinished" in r.getMessage() for r in caplog.records)


def test_pruning_deletes_only_checkpoints_of_this_run_and_those_it_resumes(finished, tmp_path):
    """Issue 23 reversed issue 9's rule "only what this run wrote" (a requeue loop filled the
    disk): the earlier run's 2, 4, 6 count; files that are not its checkpoints stay."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    others = [run / "checkpoints" / "notes.txt", run / "checkpoints" / "step_00000001.pt.bak"]
    for p in others:
        p.write_bytes(b"not a checkpoint of this run")
    _fit(run, steps=14, resume="latest", keep_checkpoints=2)()
    names = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    # of the earlier run's 2, 4, 6 and this run's 8, 10, 12, 14 the newest two
    assert names == [f"step_{s:08d}.pt" for s in (12, 14)]
    assert all(p.read_bytes() == b"not a checkpoint of this run" for p in others)


def test_resume_of_an_older_checkpoint_into_a_new_folder_leaves_the_old_one(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = _snapshot(run)
    older = run / "checkpoints" / "step_00000002.pt"
    summary = _fit(tmp_path / "branch", steps=4, resume=str(older), keep_checkpoints=1)()
    assert summary["steps"] == 4 and summary["steps_this_run"] == 2
    _assert_nothing_lost(run, before)


def test_the_lock_is_given_back_after_a_run_and_after_a_refusal(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with pytest.raises(ValueError):
        _fit(run, steps=4, resume="latest")()  # refused after taking the lock
    _fit(run, steps=8, resume="latest")()
    runtime.lock_folder(run).release()  # free again


def test_ema_no_and_plot_no_are_real_booleans(finished, tmp_path):
    """``ema=no plot=no`` sample the raw weights and draw nothing (they once read as true)."""
    from sde_gen.sample import run_sampling

    state = ckpt.load_checkpoint(finished / "checkpoints" / "step_00000006.pt")
    cfg_yaml = OmegaConf.to_yaml(
        OmegaConf.create(
            {
                "sde": {"_target_": "sde_gen.sde.VPSDE"},
                "data": {"_target_": "sde_gen.data.ring_mixture", "std": 0.15},
                "model": {
                    "_target_": "sde_gen.models.MLP",
                    "hidden": 32,
                    "num_layers": 2,
                    "embedding": {"_target_": "sde_gen.models.SinusoidalEmbedding", "dim": 16},
                },
            }
        )
    )
    state["config"] = cfg_yaml
    path = tmp_path / "step_00000006.pt"
    torch.save(state, path)
    common = (f"checkpoint={path}", "n=8", "solver.steps=2", "progress=false")
    raw = run_sampling(_cfg("sample", *common, "ema=no", "plot=no"), tmp_path / "raw")
    ema = run_sampling(_cfg("sample", *common, "ema=yes", "plot=yes"), tmp_path / "ema")
    assert raw["ema"] is False and ema["ema"] is True
    assert not (tmp_path / "raw" / "samples.png").exists()
    assert (tmp_path / "ema" / "samples.png").exists()
    a = np.load(tmp_path / "raw" / "samples.npz")["x0"]
    b = np.load(tmp_path / "ema" / "samples.npz")["x0"]
    assert not np.array_equal(a, b)  # other weights, other samples
