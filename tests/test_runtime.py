"""Run-time helpers: atomic writes never leave half a file, bad settings are named."""

import json

import pytest
import torch

from sde_gen.runtime import atomic_write, pick_device, seed_everything, set_threads, write_summary


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
