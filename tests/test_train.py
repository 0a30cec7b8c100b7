"""The training loop: it learns the ring mixture, resumes bit-identically, stops on NaN with the
last checkpoint intact, and follows the warm-up and EMA formulas exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_helpers import tiny_trainer

from sde_gen.losses import DSMLoss
from sde_gen.solvers import EulerMaruyama
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.trainer import (
    METRICS_FILE,
    NonFiniteLossError,
    TrainingInterrupted,
    mixture_sample_metrics,
)


def _metrics(out_dir):
    return [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]


def _assert_same_state(a, b):
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    for (name, p), q in zip(a.ema.state_dict().items(), b.ema.state_dict().values()):
        assert torch.equal(p, q), f"ema {name}"
    sa, sb = a.loop.optimizer.state_dict()["state"], b.loop.optimizer.state_dict()["state"]
    for k in sa:
        for key in sa[k]:
            assert torch.equal(sa[k][key], sb[k][key]), f"adam state {k}.{key}"
    assert a.loop.data_generator.get_state().equal(b.loop.data_generator.get_state())
    assert a.loop.noise_generator.get_state().equal(b.loop.noise_generator.get_state())


def test_short_run_learns_the_ring_mixture(tmp_path):
    """500 steps of a 64-wide MLP on the ring (8 modes, radius 2, std 0.3): the loss falls and EMA
    samples sit on the modes.

    References (4000 draws): exact data have mode fraction (within 3σ per axis) 0.998 and NLL gap
    0; the prior N(0, I) has 0.56 and a gap of 5.1 nats; N(0, 0.5²) (all mass near the centre) 0.14
    and 10 nats.
    """
    solver = EulerMaruyama(steps=100, denoise_final=True)
    trainer = tiny_trainer(
        tmp_path,
        hidden=64,
        std=0.3,
        steps=500,
        batch_size=256,
        lr=5e-3,
        warmup_steps=20,
        ema_decay=0.95,
        log_every=50,
        checkpoint_every=None,
        sample_count=1000,
        solver=solver,
    )
    summary = trainer.fit()
    losses = [r["loss"] for r in _metrics(tmp_path)]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["mode_fraction"] > 0.9
    assert summary["nll_gap"] < 1.25
    radius = trainer.sample(1000).norm(dim=1)
    assert abs(radius.median().item() - 2.0) < 0.15
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "loss.png").is_file()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["steps"] == 500 and on_disk["final_loss"] == pytest.approx(losses[-1])


def test_mixture_metrics_reference_values():
    """Data drawn from the mixture itself: gap ≈ 0 and mode fraction ≈ 0.995 (binomial 3σ)."""
    from sde_gen.data import ring_mixture

    mix = ring_mixture(std=0.15)
    g = torch.Generator().manual_seed(0)
    m = mixture_sample_metrics(mix, mix.sample(4000, g), mix.sample(4000, g))
    assert abs(m["nll_gap"]) < 0.1
    assert abs(m["mode_fraction"] - 0.9946) < 3 * math.sqrt(0.0054 * 0.9946 / 4000) + 1e-3
    prior = torch.randn(4000, 2, generator=g)
    assert mixture_sample_metrics(mix, prior, mix.sample(4000, g))["mode_fraction"] < 0.2  # 0.155


def test_interrupted_run_resumes_bit_identically(tmp_path):
    """20 steps straight vs 10 steps, a crash at step 15, and a fresh process resuming 'latest'."""
    full = tiny_trainer(tmp_path / "full", steps=20)
    full.fit()

    class Crash(DSMLoss):
        calls = 0

        def evaluate(self, model, x0, draws):
            Crash.calls += 1
            if Crash.calls == 15:
                raise KeyboardInterrupt  # the job is killed mid-run, after the step-10 checkpoint
            return super().evaluate(model, x0, draws)

    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(tmp_path / "cut", steps=20, loss_fn=Crash()).fit()
    assert ckpt.latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step_00000010.pt"
    resumed = tiny_trainer(tmp_path / "cut", steps=20, resume="latest", seed=0)
    with torch.no_grad():  # a fresh process starts from other weights; resume must overwrite all
        for p in resumed.model.parameters():
            p.add_(1.0)
    summary = resumed.fit()
    assert summary["steps_this_run"] == 10
    _assert_same_state(full, resumed)
    # the metrics history is continuous: lines past the checkpoint were replaced, not duplicated
    assert _metrics(tmp_path / "cut") == [
        {**r, "steps_per_s": c["steps_per_s"]}
        for r, c in zip(_metrics(tmp_path / "full"), _metrics(tmp_path / "cut"))
    ]
    assert [r["step"] for r in _metrics(tmp_path / "cut")] == [5, 10, 15, 20]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    snapshot = {}

    class NanAt7(DSMLoss):
        calls = 0

        def evaluate(self, model, x0, draws):
            NanAt7.calls += 1
            if NanAt7.calls == 6:  # the step-5 checkpoint has just been written
                snapshot["bytes"] = ckpt.checkpoint_path(tmp_path / "checkpoints", 5).read_bytes()
            out = super().evaluate(model, x0, draws)
            return out._replace(loss=out.loss * float("nan")) if NanAt7.calls == 7 else out

    trainer = tiny_trainer(tmp_path, steps=20, checkpoint_every=5, loss_fn=NanAt7())
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7.*step_00000005\.pt"):
        trainer.fit()
    kept = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step_00000005.pt"]
    assert kept[0].read_bytes() == snapshot["bytes"]
    assert ckpt.load_checkpoint(kept[0])["step"] == 5
    assert all(math.isfinite(p.detach().abs().sum()) for p in trainer.model.parameters())
    assert not (tmp_path / "summary.json").exists()


def test_warmup_lr_and_ema_follow_their_formulas(tmp_path):
    """lr_k = lr·min(1, k/W); EMA (torch AveragedModel): θ̄_1 = θ_1, θ̄_k = d θ̄_{k−1} + (1−d) θ_k."""
    seen = []

    class Record(DSMLoss):
        def evaluate(self, model, x0, draws):
            seen.append([p.detach().clone() for p in model.parameters()])
            return super().evaluate(model, x0, draws)

    d, steps = 0.7, 6
    trainer = tiny_trainer(
        tmp_path,
        steps=steps,
        loss_fn=Record(),
        warmup_steps=4,
        lr=1e-2,
        ema_decay=d,
        log_every=1,
        checkpoint_every=None,
    )
    trainer.fit()
    lrs = [r["lr"] for r in _metrics(tmp_path)]
    assert lrs == pytest.approx([1e-2 * min(1.0, k / 4) for k in range(1, steps + 1)], rel=1e-12)
    thetas = seen[1:] + [[p.detach() for p in trainer.model.parameters()]]  # θ_1 … θ_6
    ema = [p.clone() for p in thetas[0]]
    for theta in thetas[1:]:
        ema = [d * e + (1 - d) * p for e, p in zip(ema, theta)]
    for e, p in zip(ema, trainer.ema.module.parameters()):
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update(tmp_path):
    """With max-norm c the clipped gradient has norm min(‖g‖, c); the logged norm is pre-clip."""
    grads = []
    trainer = tiny_trainer(tmp_path, steps=3, grad_clip=1e-3, log_every=1, checkpoint_every=None)

    def spy(optimizer, args, kwargs):
        grads.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.loop.params)))

    trainer.loop.optimizer.register_step_pre_hook(spy)
    trainer.fit()
    logged = [r["grad_norm"] for r in _metrics(tmp_path)]
    assert all(g > 1e-3 for g in logged)
    assert [float(g) for g in grads] == pytest.approx([1e-3] * 3, rel=1e-4)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = tiny_trainer(tmp_path / "a", steps=5, checkpoint_every=None)
    b = tiny_trainer(tmp_path / "b", steps=5, checkpoint_every=None)
    c = tiny_trainer(tmp_path / "c", steps=5, checkpoint_every=None, seed=1)
    for t in (a, b, c):
        t.fit()
    _assert_same_state(a, b)
    assert not torch.equal(a.model.eps_net.inp.weight, c.model.eps_net.inp.weight)


def test_resume_latest_without_checkpoint_and_pruning(tmp_path):
    with pytest.raises(ValueError, match="resume='latest' but no checkpoint in .*checkpoints"):
        tiny_trainer(tmp_path / "empty", resume="latest").fit()
    assert not (tmp_path / "empty" / "summary.json").exists()
    trainer = tiny_trainer(tmp_path / "keep", steps=12, checkpoint_every=2, keep_checkpoints=2)
    trainer.fit()
    kept = [p.name for p in ckpt.list_checkpoints(tmp_path / "keep" / "checkpoints")]
    assert kept == ["step_00000010.pt", "step_00000012.pt"]
    shorter = tiny_trainer(tmp_path / "keep", steps=8, resume="latest")
    with pytest.raises(ValueError, match="step 12 > trainer.steps=8"):
        shorter.fit()


# -- stop signals ---------------------------------------------------------------------------------
class _SignalAt(DSMLoss):
    """Sends ``signum`` to this process during the ``at``-th loss evaluation."""

    def __init__(self, signum, at):
        super().__init__()
        self.signum, self.at, self.calls = signum, at, 0

    def evaluate(self, model, x0, draws):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return super().evaluate(model, x0, draws)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_the_step_and_resumes_bit_identically(tmp_path, signum):
    """The signal arrives inside step 7: the step completes, step_7 is written, the run stops
    (exit status 128 + signum in the CLI) and the previous handlers come back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    full = tiny_trainer(tmp_path / "full", steps=12, checkpoint_every=5)
    full.fit()
    cut = tiny_trainer(tmp_path / "cut", steps=12, checkpoint_every=5, loss_fn=_SignalAt(signum, 7))
    with pytest.raises(TrainingInterrupted) as stop:
        cut.fit()
    assert stop.value.step == 7 and stop.value.exit_status == 128 + signum
    assert stop.value.checkpoint.name == "step_00000007.pt" and stop.value.checkpoint.is_file()
    assert {s: signal.getsignal(s) for s in before} == before
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = tiny_trainer(tmp_path / "cut", steps=12, checkpoint_every=5, resume="latest")
    assert resumed.fit()["steps_this_run"] == 5
    _assert_same_state(full, resumed)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")]
    # keep_checkpoints=3 bounds the folder, the interrupted run's 5 and 7 counted (issue 23;
    # issue 9's rule kept 5, 7, 10, 12: four, one more a resume)
    assert names == ["step_00000007.pt", "step_00000010.pt", "step_00000012.pt"]


SLOW_RUN = """
import sys, time
import torch
sys.path.insert(0, sys.argv[2])
torch.set_num_threads(1)
from test_train_helpers import tiny_trainer
from sde_gen.losses import DSMLoss
from sde_gen.training.trainer import TrainingInterrupted

class Slow(DSMLoss):
    def evaluate(self, model, x0, draws):
        time.sleep(0.01)
        return super().evaluate(model, x0, draws)

try:
    tiny_trainer(sys.argv[1], loss_fn=Slow(), steps=400, log_every=5, checkpoint_every=100).fit()
except TrainingInterrupted as e:
    print(e, flush=True)
    sys.exit(e.exit_status)
"""


def test_sigterm_to_a_training_process_then_resume_is_bit_identical(tmp_path):
    """A real process: SIGTERM once its first metrics line is written, exit status 143, a
    checkpoint of the step it was on, and a resume equal (torch.equal) to an uninterrupted run."""
    out = tmp_path / "cut"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(out), tests],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / METRICS_FILE).is_file() and (out / METRICS_FILE).read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    step = ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))["step"]
    assert 5 <= step < 400 and f"SIGTERM at step {step}" in stdout
    full = tiny_trainer(tmp_path / "full", steps=400, log_every=5, checkpoint_every=100)
    full.fit()
    resumed = tiny_trainer(out, steps=400, log_every=5, checkpoint_every=100, resume="latest")
    assert resumed.fit()["steps_this_run"] == 400 - step
    _assert_same_state(full, resumed)


def test_resume_auto_starts_fresh_then_continues(tmp_path):
    """trainer.resume=auto: no checkpoint yet → a fresh run (a requeued job's first start);
    one there → the same as 'latest'; 'latest' alone still refuses an empty folder."""
    first = tiny_trainer(tmp_path, steps=10, checkpoint_every=5, resume="auto")
    assert first.fit()["steps_this_run"] == 10
    more = tiny_trainer(tmp_path, steps=15, checkpoint_every=5, resume="auto")
    summary = more.fit()
    assert summary["steps_this_run"] == 5 and summary["steps"] == 15
    with pytest.raises(ValueError, match="no checkpoint"):
        tiny_trainer(tmp_path / "empty", resume="latest").fit()
