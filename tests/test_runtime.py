"""Run-time helpers: atomic writes never leave half a file, bad settings are named."""

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from sde_gen import runtime
from sde_gen.runtime.files import (
    DiskFullError,
    FolderLockedError,
    UnwritableError,
    atomic_write,
    check_writable,
    lock_folder,
    remove_orphans,
    write_summary,
)
from sde_gen.runtime.resources import (
    StopSignals,
    check_memory,
    pick_device,
    seed_everything,
    set_threads,
)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_write_summary_is_one_json_line(tmp_path):
    path = write_summary(tmp_path, {"nfe": torch.tensor(20), "mmd2": 1e-3, "solver": "heun"})
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == {"mmd2": 1e-3, "nfe": 20, "solver": "heun"}


def test_seed_everything_reproduces_draws():
    g1 = seed_everything(7)
    a = torch.randn(3), torch.randn(3, generator=g1)
    g2 = seed_everything(7)
    b = torch.randn(3), torch.randn(3, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: set_threads(0), "threads=0"),
        (lambda: set_threads(True), "threads=True"),
        (lambda: seed_everything(-1), "seed=-1"),
        (lambda: pick_device("gpu0"), "device='gpu0'"),
        (lambda: pick_device("meta"), "device='meta' cannot run sde_gen"),
    ],
)
def test_bad_settings_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_set_threads_applies():
    before = torch.get_num_threads()
    set_threads(1)
    assert torch.get_num_threads() == 1
    set_threads(None)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)


# -- guards of a run's process and folder -------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RuntimeError("basic_ios::clear: iostream error"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 10944 vs 10838"),
    ],
)
def test_a_full_disk_is_named_and_the_old_file_stays(tmp_path, error):
    target = tmp_path / "step_00000008.pt"
    target.write_bytes(b"old")

    def fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise error

    with pytest.raises(DiskFullError, match=r"disk full: could not write '.*step_00000008\.pt'"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000008.pt"]


def test_other_write_errors_keep_their_type(tmp_path):
    def fail(tmp: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output") as err:
        atomic_write(tmp_path / "f", fail)
    assert not isinstance(err.value, DiskFullError)


def test_only_atomic_write_orphans_are_removed(tmp_path):
    orphans = [".step_00000001.pt.0123456789ab.tmp", ".summary.json.ffffffffffff.tmp"]
    others = ["step_00000001.pt", "notes.tmp", ".x.0123.tmp", ".step.pt.0123456789AB.tmp"]
    for name in orphans + others:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in remove_orphans(tmp_path)) == sorted(orphans)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert remove_orphans(tmp_path / "missing") == []


def test_check_writable_names_files_and_unwritable_folders(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnwritableError, match=r"checkpoint folder '.*/f' is a file"):
        check_writable(tmp_path / "f", "checkpoint folder")
    with pytest.raises(UnwritableError, match=r"run folder '/proc/sde_gen_x/y' is not writable"):
        check_writable("/proc/sde_gen_x/y", "run folder")
    assert check_writable(tmp_path / "a" / "b", "run folder").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone


def test_the_folder_lock_is_exclusive_and_named(tmp_path):
    held = lock_folder(tmp_path)
    try:
        with pytest.raises(FolderLockedError, match=r"in use.*\.run\.lock"):
            lock_folder(tmp_path)
    finally:
        held.release()
    lock_folder(tmp_path).release()


def test_stop_signals_record_the_first_and_restore_the_handlers():
    previous = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_memory_check_names_the_key_and_sizes(monkeypatch):
    monkeypatch.setattr(runtime.resources, "memory_bytes", lambda device: 2**30)
    check_memory("n", 1000, 1e3, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"n=2000000 needs about 1.86 GiB .* 1 GiB of cpu"):
        check_memory("n", 2_000_000, 1e3, torch.device("cpu"))


def test_machine_memory_is_known_on_linux():
    total = runtime.memory_bytes(torch.device("cpu"))
    assert total is None or total > 2**26
