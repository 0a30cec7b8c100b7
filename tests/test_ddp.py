"""Scale-out training (issue 10): 2 processes under torchrun (gloo) end with 1 process's weights,
a SIGTERM-stopped 2-process run resumes bit-identically, accumulate=k equals a k-times batch,
bf16/fp16 autocast trains finite, and DataLoader batches do not depend on workers or ranks.

Run as a script (``torchrun … tests/test_ddp.py <out_dir> <settings json>``) this file is the
worker the tests launch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _relative_gap(a: dict, b: dict) -> float:
    """max over tensors of ‖a − b‖/‖b‖."""
    return max(
        float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30))
        for k in b
    )


def _final(out: Path) -> dict:
    from sde_gen.training import checkpoint as ckpt

    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))


def _torchrun(out: Path, nproc: int, **settings) -> subprocess.Popen:
    """Start ``nproc`` workers of this file under torchrun (gloo) training into ``out``."""
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", __file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd.append(json.dumps(settings))
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait(job: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = job.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        job.kill()
        raise
    return job.returncode, out


def _loss_aware_trainer(out: Path):
    """A tiny DDPM (T=10) with L_simple and the loss-aware step sampler (history 2)."""
    from test_train_helpers import tiny_trainer

    from sde_gen.losses import LossAwareStepSampler, SimpleLoss
    from sde_gen.sde import DiscreteVPSDE
    from sde_gen.sde.ddpm import linear_betas

    trainer = tiny_trainer(out, SimpleLoss(step_sampler=LossAwareStepSampler(2)), steps=6)
    trainer.model.sde = trainer.loop.train_model.sde = DiscreteVPSDE(linear_betas(10, 1e-3, 0.2))
    return trainer


# -- DDP ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_two_processes_match_one_and_resume_bit_identically(tmp_path):
    """Same global batch (64) on 1 and 2 ranks: weights agree to 1e-4; SIGTERM to rank 1 at step
    7 stops both ranks with a step-7 checkpoint, and resuming it ends bit-identical to the
    uninterrupted 2-process run; summary.json records world_size."""
    from test_train_helpers import tiny_trainer

    run = dict(steps=12, checkpoint_every=5)
    full = _torchrun(tmp_path / "two", 2, loss_aware=str(tmp_path / "la2"), **run)
    cut = _torchrun(tmp_path / "cut", 2, kill_at=7, **run)
    one = tiny_trainer(tmp_path / "one", **run)
    assert one.fit()["world_size"] == 1
    code, log = _wait(full)
    assert code == 0, log[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    two_state, one_state = _final(tmp_path / "two"), _final(tmp_path / "one")
    assert two_state["step"] == one_state["step"] == 12
    assert _relative_gap(two_state["model"], one_state["model"]) < 1e-4
    assert _relative_gap(two_state["ema"], one_state["ema"]) < 1e-4

    one_la = _loss_aware_trainer(tmp_path / "la1")
    one_la.fit()
    two_la = _final(tmp_path / "la2")
    sampler = one_la.loop.loss_fn.step_sampler
    assert sampler.warmed_up(10)  # the draws of the last steps followed the loss history
    assert torch.equal(two_la["loss"]["step_sampler"]["counts"], sampler.counts)
    assert torch.allclose(two_la["loss"]["step_sampler"]["losses"], sampler.losses, rtol=1e-4)
    assert _relative_gap(two_la["model"], one_la.model.state_dict()) < 1e-4

    code, log = _wait(cut)
    assert code != 0
    assert "SIGTERM at step 7" in log
    names = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000005.pt", "step_00000007.pt"]
    code, log = _wait(_torchrun(tmp_path / "cut", 2, resume="latest", **run))
    assert code == 0, log[-3000:]
    cut_state = _final(tmp_path / "cut")
    for part in ("model", "ema"):
        for key, value in two_state[part].items():
            assert torch.equal(value, cut_state[part][key]), f"{part} {key}"
    for k, state in two_state["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, cut_state["optimizer"]["state"][k][key]), f"adam {k}.{key}"
    assert cut_state["data_info"] == {"shape": [2], "num_bins": None}


# -- accumulation, precision, compile --------------------------------------------------------------
def test_accumulate_equals_a_k_times_batch(tmp_path):
    """accumulate=4 micro-batches of 16 = one batch of 64: the same weights to 1e-6 relative."""
    from test_train_helpers import tiny_trainer

    a = tiny_trainer(tmp_path / "a", batch_size=16, accumulate=4, steps=10, checkpoint_every=None)
    b = tiny_trainer(tmp_path / "b", batch_size=64, steps=10, checkpoint_every=None)
    a.fit(), b.fit()
    assert _relative_gap(a.model.state_dict(), b.model.state_dict()) < 1e-6
    assert _relative_gap(a.ema.state_dict(), b.ema.state_dict()) < 1e-6


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_stays_finite(tmp_path, precision):
    from test_train_helpers import tiny_trainer

    trainer = tiny_trainer(tmp_path, precision=precision, steps=10, checkpoint_every=None)
    summary = trainer.fit()
    assert np.isfinite(summary["final_loss"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert _final(tmp_path)["scaler"] is not None


def _compiled_run(tmp_path) -> float:
    from test_train_helpers import tiny_trainer

    try:
        torch.compile(torch.nn.Linear(2, 2))(torch.zeros(1, 2))
    except Exception as e:  # no C++ compiler / unsupported platform
        pytest.skip(f"torch.compile does not work here: {e}")
    trainer = tiny_trainer(tmp_path, compile=True, steps=3, checkpoint_every=None)
    return trainer.fit()["final_loss"]


def test_compiled_network_trains(tmp_path, monkeypatch):
    """trainer.compile=true runs the network through torch.compile (dynamo + AOT autograd here;
    inductor's C++ code generation takes a minute on a CPU: the slow test below)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compile_(m, backend="aot_eager", **kw))
    assert np.isfinite(_compiled_run(tmp_path))


@pytest.mark.slow
def test_compiled_network_trains_with_inductor(tmp_path):
    assert np.isfinite(_compiled_run(tmp_path))


def test_new_trainer_settings_are_checked():
    from sde_gen.training.settings import Precision, TrainerSettings

    assert TrainerSettings(precision="bf16").precision is Precision.bf16
    for key, value in (("precision", "fp8"), ("accumulate", 0), ("workers", -1)):
        with pytest.raises(ValueError, match=f"trainer.{key}="):
            TrainerSettings(**{key: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda(tmp_path):
    from test_train_helpers import tiny_trainer

    trainer = tiny_trainer(tmp_path, precision="bf16", device="cuda", steps=5)
    assert np.isfinite(trainer.fit()["final_loss"])


# -- finite data through a DataLoader -------------------------------------------------------------
def _images(flip: bool = True, dequantize: bool = False):
    from sde_gen.data.uint8_images import UInt8Images

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    return UInt8Images(train, train[:4], flip=flip, dequantize=dequantize)


@pytest.mark.parametrize("dequantize", [False, True])
def test_loader_batches_do_not_depend_on_ranks_workers_or_start(dequantize):
    """Rank parts of 2 ranks concatenate to the 1-rank micro-batch; 2 workers serve what the main
    process serves; a loader started at step 3 (a resume) serves step 3 of the full stream; the
    dequantization noise too."""
    from sde_gen.data.batches import LoaderBatches

    data = _images(dequantize=dequantize)

    def steps(size=1, rank=0, workers=0, start=0):
        b = LoaderBatches(
            data, seed=5, micro=6, accumulate=2, workers=workers, rank=rank, size=size
        )
        b.start(start, 5)
        out = [b.next() for _ in range(5 - start)]
        b.close()
        return out

    one = steps()
    halves = [steps(size=2, rank=r) for r in range(2)]
    for s in range(5):
        for j in range(2):
            assert torch.equal(torch.cat([halves[0][s][j], halves[1][s][j]]), one[s][j])
    assert all(torch.equal(a, b) for x, y in zip(steps(workers=2), one) for a, b in zip(x, y))
    assert all(torch.equal(a, b) for x, y in zip(steps(start=3), one[3:]) for a, b in zip(x, y))
    flipped = any(not torch.equal(x, x.flip(-1)) for x in one[0])
    half_bin = 1 / 255
    assert flipped and one[0][0].abs().max() <= 1 + half_bin * dequantize
    levels = (one[0][0] + 1) * 127.5  # integers unless dequantized
    off_level = (levels - levels.round()).abs().max()
    assert (off_level > 0.05) == dequantize


def test_finite_data_resume_through_the_loader_is_bit_identical(tmp_path):
    from test_train_helpers import tiny_model

    from sde_gen.data.base import TensorData
    from sde_gen.losses import DSMLoss
    from sde_gen.training.settings import TrainerSettings
    from sde_gen.training.trainer import Trainer

    data = TensorData(torch.randn(50, 2, generator=torch.Generator().manual_seed(0)))

    def trainer(out, **kw):
        s = TrainerSettings(steps=8, batch_size=8, log_every=2, checkpoint_every=4, progress=False)
        for k, v in kw.items():
            setattr(s, k, v)
        return Trainer(tiny_model(), DSMLoss(), data, out, s, device="cpu")

    full = trainer(tmp_path / "full", workers=1)
    full.fit()
    half = trainer(tmp_path / "cut")
    half.begin()
    half.advance(4)
    half.end()
    rest = trainer(tmp_path / "cut", resume="latest")
    rest.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, rest.model.state_dict()[key]), key


def test_loss_draw_evaluate_is_the_loss():
    """loss(model, x0, g) = mean of evaluate(draw) with the same generator; slices add up."""
    from test_train_helpers import tiny_model

    from sde_gen.losses import DSMLoss
    from sde_gen.losses.base import take

    model, loss = tiny_model(), DSMLoss()
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    whole = loss(model, x0, torch.Generator().manual_seed(2))
    draws = loss.draw(model, x0, torch.Generator().manual_seed(2))
    parts = [loss.evaluate(model, x0[s], take(draws, s)).loss for s in (slice(0, 3), slice(3, 10))]
    assert torch.allclose(torch.cat(parts).mean(), whole, rtol=1e-6)


# -- the torchrun worker --------------------------------------------------------------------------
def _worker(out: str, settings: str) -> None:
    torch.set_num_threads(1)
    from test_train_helpers import tiny_trainer

    from sde_gen.losses import DSMLoss
    from sde_gen.runtime.distributed import close_world, init_world
    from sde_gen.training.trainer import TrainingInterrupted

    world = init_world("cpu")
    kw = json.loads(settings)
    loss_aware = kw.pop("loss_aware", None)
    kill_at = kw.pop("kill_at", None)
    kill_at = kill_at if world.rank == 1 else None  # SIGTERM reaches rank 1 alone

    class KillAt(DSMLoss):
        calls = 0

        def evaluate(self, model, x0, draws):
            KillAt.calls += 1
            if KillAt.calls == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().evaluate(model, x0, draws)

    try:
        tiny_trainer(Path(out), loss_fn=KillAt(), **kw).fit()
        if loss_aware:
            _loss_aware_trainer(Path(loss_aware)).fit()
    except TrainingInterrupted as e:
        print(e, flush=True)
        close_world()
        sys.exit(e.exit_status)
    close_world()


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
