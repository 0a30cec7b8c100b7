"""Where the last evaluation goes: ``final_step=zero`` against ``zero_from_t_min``, paired.

Both end on x̂0 of the last evaluation. ``zero`` divides T … t_min into N steps and jumps to 0
from the next-to-last time; ``zero_from_t_min`` divides it into N − 1 steps and jumps from t_min
(diffusers' and k-diffusion's Karras and Lu-λ levels). This pairs the solver comparison's rows
of two result folders that differ only in that option (same data, x_T set and size, solver,
order, grid and budget) and prints, per data set and budget, the geometric mean over the pairs of
RMS(zero) ÷ RMS(zero_from_t_min) (> 1: the last evaluation at t_min is closer) and how many
pairs it wins::

    python experiments/solver_comparison.py -m <the comparison's options> seed=0 \\
        ++solver.final_step=zero_from_t_min out_dir=$PWD/results/fs
    python experiments/final_step_study.py --base results/cmp --new results/fs
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple

from solver_comparison import read_rows
from solver_selection import METRIC, usable

Row = dict[str, Any]


class Key(NamedTuple):
    """What makes two rows the same configuration on the same x_T."""

    sde: str
    data: str
    n: int
    seed: int
    solver: str
    family: str
    grid: str
    nfe_budget: int


def key(r: Row) -> Key:
    return Key(*(r.get(f) for f in Key._fields))


def pairs(base: list[Row], new: list[Row]) -> dict[Key, tuple[float, float]]:
    """{key: (base error, new error)} for the fixed-grid rows present, usable, in both."""

    def index(rows: list[Row]) -> dict[Key, float]:
        return {key(r): r[METRIC] for r in rows if usable(r) and not r.get("fitted")}

    a, b = index(base), index(new)
    return {k: (a[k], b[k]) for k in a.keys() & b.keys() if a[k] > 0 and b[k] > 0}


def table(matched: dict[Key, tuple[float, float]]) -> str:
    """Per data set × budget: geometric mean of base ÷ new, and the pairs new wins."""
    budgets = sorted({k.nfe_budget for k in matched})
    sets = sorted({(k.data, k.n) for k in matched})
    lines = ["| data (x_T) | " + " | ".join(f"NFE {b}" for b in budgets) + " |"]
    lines.append("|---" + "|---" * len(budgets) + "|")
    for data, n in sets:
        cells = []
        for b in budgets:
            ratios = [
                e0 / e1
                for k, (e0, e1) in matched.items()
                if (k.data, k.n, k.nfe_budget) == (data, n, b)
            ]
            if not ratios:
                cells.append("")
                continue
            wins = sum(r > 1 for r in ratios)
            cells.append(f"{statistics.geometric_mean(ratios):.2f} ({wins}/{len(ratios)})")
        lines.append(f"| {data} ({n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, nargs="+", required=True, help="final_step=zero rows")
    parser.add_argument("--new", type=Path, nargs="+", required=True, help="the other option's")
    args = parser.parse_args(argv)
    base = [r for folder in args.base for r in read_rows(folder)]
    new = [r for folder in args.new for r in read_rows(folder)]
    matched = pairs(base, new)
    if not matched:
        print("error: no configuration is in both --base and --new", file=sys.stderr)
        return 2
    print(table(matched))
    overall = statistics.geometric_mean([e0 / e1 for e0, e1 in matched.values()])
    print(f"{len(matched)} pairs; geometric mean of all ratios {overall:.3f}")
    return 0 if math.isfinite(overall) else 2


if __name__ == "__main__":
    sys.exit(main())
