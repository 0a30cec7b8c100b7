"""Wall time of the README's first command on a busy CPU, with the default threads (one for small
models) against torch's own default (one thread per core).

    python experiments/first_run_time.py                 # 2 busy processes beside the run
    python experiments/first_run_time.py --hogs 0 --steps 3000

Each setting runs ``sde-gen-train experiment=toy2d`` (``trainer.steps=<steps>``) in a fresh
temporary folder while ``--hogs`` pure-Python busy loops hold the cores; the table reports the
wall time of the whole command and the training rate from its summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def timed_run(train: str, steps: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as cwd:
        args = [train, "experiment=toy2d", f"trainer.steps={steps}", "trainer.progress=false"]
        start = time.perf_counter()
        subprocess.run([*args, *extra], cwd=cwd, check=True, capture_output=True)
        wall = time.perf_counter() - start
        summary = json.loads(next(Path(cwd).glob("outputs/train/2*/*/summary.json")).read_text())
    return {"wall_s": wall, "steps_per_s": summary["steps_per_s"], "threads": summary["threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=2, help="busy processes beside the run")
    parser.add_argument("--steps", type=int, default=3000, help="trainer.steps (README: 3000)")
    parser.add_argument("--torch-default-steps", type=int, default=300)
    args = parser.parse_args()
    train = str(Path(sys.executable).with_name("sde-gen-train"))
    env_threads = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    os.environ.clear()
    os.environ.update(env_threads)
    hogs = [
        subprocess.Popen([sys.executable, "-c", HOG.format(seconds=3600)]) for _ in range(args.hogs)
    ]
    try:
        rows = [
            ("default (threads=null)", args.steps, timed_run(train, args.steps, [])),
            (
                f"threads={os.cpu_count()} (torch's default)",
                args.torch_default_steps,
                timed_run(train, args.torch_default_steps, [f"threads={os.cpu_count()}"]),
            ),
        ]
    finally:
        for hog in hogs:
            hog.kill()
    print(f"\n{args.hogs} busy processes on {os.cpu_count()} cores\n")
    print("| setting | steps | threads used | wall time (s) | training steps/s |")
    print("|---|---|---|---|---|")
    for name, steps, r in rows:
        print(f"| {name} | {steps} | {r['threads']} | {r['wall_s']:.1f} | {r['steps_per_s']:.1f} |")
    ratio = rows[0][2]["steps_per_s"] / rows[1][2]["steps_per_s"]
    print(f"\nsteps/s ratio default / torch default: {ratio:.1f}")


if __name__ == "__main__":
    main()
