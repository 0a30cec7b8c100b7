"""Two solver-comparison jobs from the same x_T, compared x_T by x_T.

An RMS end-point error over a few hundred x_T can rest on a handful of trajectories. This reads
two job folders' per-x_T errors (``endpoint_errors.npy``, written beside ``summary.json``) and
prints both RMS errors, their ratio with its paired bootstrap interval, the medians, the share of
x_T where A is closer, and where the two differ: the spread of log(e_A / e_B) over the bulk (x_T
below the 90th percentile of max(e_A, e_B)) and over the tail above it, and the x_T with the
largest errors::

    python experiments/paired_errors.py <job folder A> <job folder B> [--top 8]

Two integrators that agree step by step give a narrow spread everywhere; where the tail's spread
is wide and the bulk's narrow, the tail trajectories are ones the flow amplifies errors on, and
the RMS over a set is as much a draw of those trajectories as a property of the solver.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from solver_comparison import SAMPLES_FILE
from solver_selection import label, paired_ratio_interval, rms

#: the bulk: x_T whose larger error is below this quantile; the tail: the rest
BULK_QUANTILE = 0.9


def load(job: Path) -> tuple[str, np.ndarray]:
    """A job's label (solver, family, grid, budget, seed) and its per-x_T errors."""
    summary = json.loads((job / "summary.json").read_text())
    errors = np.load(job / SAMPLES_FILE)
    return f"{label(summary)} @ {summary['nfe_budget']} NFE, seed {summary.get('seed')}", errors


def compare(a: np.ndarray, b: np.ndarray, top: int = 8) -> dict:
    """The paired statistics of errors ``a`` and ``b`` of the same x_T (see the module doc)."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"the two jobs have {a.shape} and {b.shape} x_T errors, not the same x_T")
    errors = [rms(e) for e in (a, b)]
    log_ratio = np.log(a / b)
    larger = np.maximum(a, b)
    tail = larger > np.quantile(larger, BULK_QUANTILE)
    worst = np.argsort(larger)[::-1][:top]
    return {
        "n": len(a),
        "rms": errors,
        "ratio": errors[0] / errors[1],
        "interval": paired_ratio_interval(a, b),
        "median": [float(np.median(a)), float(np.median(b))],
        "a_closer": float((a < b).mean()),
        "spread_bulk": float(np.std(log_ratio[~tail])),
        "spread_tail": float(np.std(log_ratio[tail])),
        "worst": [(int(i), float(a[i]), float(b[i])) for i in worst],
    }


def report(name_a: str, name_b: str, c: dict) -> str:
    """The comparison as text."""
    lo, hi = c["interval"]
    lines = [
        f"A: {name_a}\nB: {name_b}\n{c['n']} x_T",
        f"RMS A {c['rms'][0]:.4g}, B {c['rms'][1]:.4g}; A ÷ B {c['ratio']:.2f} [{lo:.2f}–{hi:.2f}]",
        f"median A {c['median'][0]:.4g}, B {c['median'][1]:.4g}; A closer on {c['a_closer']:.0%}",
        f"spread of log(e_A/e_B): bulk {c['spread_bulk']:.3f}, tail {c['spread_tail']:.3f} "
        f"(tail: max error above its {BULK_QUANTILE:.0%} quantile)",
        "largest errors (x_T: A, B, A/B): "
        + "; ".join(f"{i}: {ea:.3g}, {eb:.3g}, {ea / eb:.2f}" for i, ea, eb in c["worst"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job_a", type=Path)
    parser.add_argument("job_b", type=Path)
    parser.add_argument("--top", type=int, default=8, help="how many of the largest errors to list")
    args = parser.parse_args(argv)
    try:
        (name_a, a), (name_b, b) = load(args.job_a), load(args.job_b)
        print(report(name_a, name_b, compare(a, b, args.top)))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
