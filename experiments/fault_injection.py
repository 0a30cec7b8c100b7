"""Faults a training run must survive, run by hand (slow: a few minutes on a CPU).

    python experiments/fault_injection.py --kills 12

1. ``kill -9`` in the middle of checkpoint writes, repeated: no torn checkpoint is ever loaded,
   and the next start removes the orphaned temporary files.
2. SIGTERM and SIGUSR1 in the middle of ``sde-gen-train``: exit status 128 + signal, a checkpoint
   of the step in progress, and ``trainer.resume=latest`` ends bit-identical (torch.equal) to an
   uninterrupted run.
3. Two runs at once in one folder: the second is refused naming the folder and the lock.
4. A full disk: checkpoints on a 2 MB tmpfs (needs root and ``mount``; else a monkeypatched
   ENOSPC): one line naming the disk and the file, exit status 2, earlier checkpoints intact.

Prints a Markdown table: case, expected, observed, ok.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sde_gen.runtime.files import TMP_PATTERN
from sde_gen.training import checkpoint as ckpt

TRAIN = str(Path(sys.executable).with_name("sde-gen-train"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
ENV.pop("HYDRA_FULL_ERROR", None)
TINY = [
    "model.hidden=32",
    "model.num_layers=2",
    "trainer.batch_size=64",
    "trainer.log_every=5",
    "trainer.progress=false",
    "solver.steps=5",
    "trainer.sample_count=64",
]
BIG = [  # checkpoints of ~40 MB, so that a kill lands inside a write
    "model.hidden=1024",
    "model.num_layers=4",
    "trainer.batch_size=16",
    "trainer.log_every=1",
    "trainer.checkpoint_every=1",
    "trainer.keep_checkpoints=2",
    "trainer.progress=false",
    "~solver",
]


def train(run: Path, *args: str, wait: bool = True, timeout: float = 600):
    cmd = [TRAIN, f"hydra.run.dir={run}", *args]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def orphans(folder: Path) -> list[Path]:
    return (
        [p for p in folder.glob(".*.tmp") if TMP_PATTERN.match(p.name)] if folder.is_dir() else []
    )


def all_checkpoints_load(folder: Path) -> bool:
    for p in ckpt.list_checkpoints(folder):
        ckpt.load_checkpoint(p)  # a torn file raises ValueError
    return True


def kill_mid_write(work: Path, kills: int) -> list[tuple[str, str, str, bool]]:
    run, ck = work / "kill9", work / "kill9" / "checkpoints"
    caught, left, cleaned = 0, 0, 0
    for i in range(kills):
        before = {p.name for p in orphans(ck)}
        resume = ["trainer.resume=latest"] if i else []
        proc = train(run, *BIG, "trainer.steps=100000", *resume, wait=False)
        deadline = time.monotonic() + 300
        seen = False
        while time.monotonic() < deadline and proc.poll() is None:
            fresh = [p for p in orphans(ck) if p.name not in before]
            if fresh and ckpt.list_checkpoints(ck):  # a whole one first, so that resume works
                if before and not any(p.name in before for p in orphans(ck)):
                    cleaned += 1  # this start removed the previous kill's orphan
                proc.send_signal(signal.SIGKILL)
                seen = True
                break
            time.sleep(0.001)
        proc.wait()
        if proc.returncode not in (-signal.SIGKILL,):
            raise RuntimeError(f"start {i} ended by itself: {proc.stderr.read().decode()[-2000:]}")
        caught += seen
        left = len(orphans(ck))
        all_checkpoints_load(ck)
    newest = ckpt.load_checkpoint(ckpt.latest_checkpoint(ck))["step"]
    final = train(run, *BIG, f"trainer.steps={newest + 2}", "trainer.resume=latest")
    after = len(orphans(ck))
    loads = all_checkpoints_load(ck)
    return [
        (
            f"kill -9 mid checkpoint write ×{kills}",
            "orphans left after each kill; no torn checkpoint loads",
            f"{caught}/{kills} kills inside a write, {left} orphan(s) after the last; "
            f"every step_*.pt loads: {loads}",
            caught == kills and loads,
        ),
        (
            "next start after a kill",
            "orphans of the killed write removed at start",
            f"{cleaned}/{kills - 1} restarts removed the previous orphan before writing; "
            f"final resume exit {final.returncode}, {after} orphan(s) left",
            cleaned == kills - 1 and final.returncode == 0 and after == 0,
        ),
    ]


def stop_signal(work: Path, signum: int) -> tuple[str, str, str, bool]:
    name = signal.Signals(signum).name
    steps = ["trainer.steps=1500", "trainer.checkpoint_every=500"]
    full = train(work / f"full_{name}", *TINY, *steps)
    assert full.returncode == 0, full.stderr[-2000:]
    run = work / f"cut_{name}"
    proc = train(run, *TINY, *steps, wait=False)
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text()):
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        time.sleep(0.01)
    proc.send_signal(signum)
    proc.wait(timeout=300)
    step = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))["step"]
    resumed = train(run, *TINY, *steps, "trainer.resume=latest")
    a = ckpt.load_checkpoint(work / f"full_{name}" / "checkpoints" / "step_00001500.pt")
    b = ckpt.load_checkpoint(run / "checkpoints" / "step_00001500.pt")
    equal = all(torch.equal(a[k][n], b[k][n]) for k in ("model", "ema") for n in a[k])
    return (
        f"{name} mid-run, then trainer.resume=latest",
        f"exit {128 + signum}, checkpoint of the step in progress, resume bit-identical",
        f"exit {proc.returncode}, checkpoint at step {step}, resume exit {resumed.returncode}, "
        f"weights torch.equal to an uninterrupted run: {equal}",
        proc.returncode == 128 + signum and 0 < step < 1500 and resumed.returncode == 0 and equal,
    )


def two_at_once(work: Path) -> tuple[str, str, str, bool]:
    run = work / "twice"
    first = train(run, *TINY, "trainer.steps=100000", wait=False)
    while not (run / "metrics.jsonl").is_file():
        time.sleep(0.01)
    second = train(run, *TINY, "trainer.steps=100", "trainer.resume=latest")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=300)
    line = second.stderr.strip()
    ok = second.returncode == 2 and str(run) in line and ".run.lock" in line and "\n" not in line
    return (
        "two runs at once in one folder",
        "the second refused: exit 2, one line naming folder and lock",
        f"exit {second.returncode}: `{line[:150]}…`; the first went on (exit {first.returncode})",
        ok and first.returncode == 128 + signal.SIGTERM,
    )


def disk_full(work: Path) -> tuple[str, str, str, bool]:
    mount = work / "tmpfs"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        return disk_full_monkeypatched(work)
    try:
        args = [
            *TINY,
            "model.hidden=64",
            "model.num_layers=2",
            "trainer.steps=400",
            "trainer.checkpoint_every=10",
            "trainer.keep_checkpoints=null",
            f"trainer.checkpoint_dir={mount}",
        ]
        proc = train(work / "full_disk", *args)
        line = proc.stderr.strip()
        saved = ckpt.list_checkpoints(mount)
        loads = all_checkpoints_load(mount)
        ok = (
            proc.returncode == 2
            and "disk full" in line
            and str(mount) in line
            and "\n" not in line
            and saved
            and not orphans(mount)
        )
        return (
            "disk full (2 MB tmpfs) while checkpointing",
            "exit 2, one line naming the disk and file; earlier checkpoints intact",
            f"exit {proc.returncode}: `{line[:170]}…`; {len(saved)} earlier checkpoint(s) load: "
            f"{loads}; {len(orphans(mount))} temp file(s)",
            bool(ok and loads),
        )
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def disk_full_monkeypatched(work: Path) -> tuple[str, str, str, bool]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_train_helpers import tiny_trainer

    from sde_gen.runtime.files import DiskFullError

    run = work / "enospc"
    tiny_trainer(run, steps=4, checkpoint_every=2).fit()
    before = (run / "checkpoints" / "step_00000004.pt").read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.save = full
    try:
        tiny_trainer(run, steps=6, checkpoint_every=2, resume="latest").fit()
        observed, ok = "no error", False
    except DiskFullError as e:
        observed, ok = str(e)[:170], "disk full" in str(e)
    finally:
        torch.save = real
    intact = (run / "checkpoints" / "step_00000004.pt").read_bytes() == before
    return (
        "disk full (monkeypatched ENOSPC: no tmpfs mount here)",
        "DiskFullError naming the file; previous checkpoint intact",
        f"`{observed}…`; previous intact: {intact}",
        ok and intact,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sde_gen_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = kill_mid_write(work, args.kills)
    rows += [stop_signal(work, signal.SIGTERM), stop_signal(work, signal.SIGUSR1)]
    rows += [two_at_once(work), disk_full(work)]
    print("| case | expected | observed | ok |\n|---|---|---|---|")
    for case, expected, observed, ok in rows:
        print(f"| {case} | {expected} | {observed.replace('|', '/')} | {'yes' if ok else 'NO'} |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
