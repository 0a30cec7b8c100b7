"""A free first evaluation: ``first_eval=prior_mean`` as a candidate of the fixed-schedule picks.

Reads the solver comparison's rows (one or more result folders, each taken alone: the same seed
in two folders may be two x_T sets of different sizes) and, per data set and budget:

1. the option's own effect on the selection x_T (seed 0): for each configuration run both ways,
   RMS(model) ÷ RMS(prior_mean) (> 1: the free start is closer), their geometric mean and the
   share of configurations it helps;
2. the pick: the published one (``solver_selection.choose``: least selection-set error among the
   configurations also run on the fresh set) against the least selection-set error over those and
   the ``+m_T`` configurations; a cell whose pick changes is scored on the ``--fresh-seed`` x_T,
   against the peers' selection-set pick run there, with the paired interval. Nothing is picked on
   that set::

    python experiments/solver_comparison.py -m <the comparison's options> seed=0 \\
        solver.first_eval=prior_mean out_dir=<folder>
    python experiments/first_eval_study.py <folder> [<folder> …] --fresh-seed 3
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solver_comparison import read_rows
from solver_selection import (
    METRIC,
    SELECTION_SEED,
    _ratio,
    _ratio_cell,
    _where,
    choose,
    config,
    counterpart,
    geometric_mean,
    label,
    side,
)

Row = dict[str, Any]
MARK = "+m_T"  # the family suffix of a first_eval=prior_mean row (solver_comparison.family)


def is_free_start(r: Row) -> bool:
    return str(r.get("family", "")).endswith(MARK)


def twin(r: Row) -> tuple:
    """The configuration with the free start removed: what pairs the two ways of one config."""
    solver, family, grid, objective = config(r)
    return solver, str(family).removesuffix(MARK), grid, objective


def effect(rows: list[Row], sde: str, data: str, budget: int) -> tuple[float, int, int] | None:
    """(geometric mean of RMS(model) ÷ RMS(prior_mean), configurations helped, pairs) on the
    selection x_T, over the fixed-grid configurations run both ways."""
    mine = [r for r in _where(rows, sde, data, budget, SELECTION_SEED) if side(r) == "ours fixed"]
    model = {twin(r): r[METRIC] for r in mine if not is_free_start(r)}
    free = {twin(r): r[METRIC] for r in mine if is_free_start(r)}
    ratios = [model[k] / free[k] for k in model.keys() & free.keys() if free[k] > 0]
    if not ratios:
        return None
    return geometric_mean(ratios), sum(x > 1 for x in ratios), len(ratios)


@dataclass
class Cell:
    """One (data, budget): the published pick, the pick with the free start among the
    candidates, the peers' pick, and (where the pick changed) both on the fresh set."""

    data: str
    budget: int
    published: Row | None
    pick: Row | None
    peer: Row | None
    effect: tuple[float, int, int] | None = None
    fresh_ours: Row | None = None
    fresh_peer: Row | None = None

    @property
    def changed(self) -> bool:
        return self.pick is not None and (
            self.published is None or config(self.pick) != config(self.published)
        )

    @property
    def fresh_ratio(self) -> float | None:
        return _ratio(*(r[METRIC] if r else None for r in (self.fresh_peer, self.fresh_ours)))


def cells(rows: list[Row], fresh_seed: int) -> list[Cell]:
    """Every (sde, data, budget) with ``+m_T`` rows on the selection x_T, from the rows of one
    result folder (another folder's sets of the same seed are other x_T)."""
    out = []
    keys = {(r["sde"], r["data"], r["nfe_budget"]) for r in rows if is_free_start(r)}
    for sde, data, b in sorted(keys):
        published = choose(rows, sde, data, b, "ours fixed").selection
        peer = choose(rows, sde, data, b, "diffusers").selection
        free = [
            r
            for r in _where(rows, sde, data, b, SELECTION_SEED)
            if side(r) == "ours fixed" and is_free_start(r)
        ]
        candidates = [*free, *([published] if published else [])]
        if not candidates:  # +m_T rows on other x_T sets only: nothing to pick from
            continue
        pick = min(candidates, key=lambda r: r[METRIC])
        cell = Cell(data, b, published, pick, peer, effect(rows, sde, data, b))
        if cell.changed:
            cell.fresh_ours = counterpart(rows, pick, fresh_seed)
            cell.fresh_peer = counterpart(rows, peer, fresh_seed) if peer else None
        out.append(cell)
    return out


def _err(r: Row | None) -> str:
    return f"{r[METRIC]:.3g} ({label(r)})" if r else ""


def report(found: list[Cell], fresh_seed: int) -> str:
    """The Markdown of both tables and the verdict on every changed cell."""
    lines = [
        "| data | NFE | RMS(model) ÷ RMS(prior_mean), geo. mean (helped / pairs) | published pick"
        " | pick with the free start | diffusers' pick | changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in found:
        e = c.effect
        eff = f"{e[0]:.2f} ({e[1]}/{e[2]})" if e else ""
        lines.append(
            f"| {c.data} | {c.budget} | {eff} | {_err(c.published)} | {_err(c.pick)} | "
            f"{_err(c.peer)} | {'yes' if c.changed else 'no'} |"
        )
    changed = [c for c in found if c.changed]
    lines += [
        "",
        f"Changed picks on the fresh x_T (seed {fresh_seed}):",
        "",
        "| data | NFE | ours | diffusers | ratio diffusers ÷ ours | met |",
        "|---|---|---|---|---|---|",
    ]
    for c in changed:
        ratio = c.fresh_ratio
        met = "not run" if ratio is None else ("yes" if ratio >= 1 else "**no**")
        cell = _ratio_cell(ratio, c.fresh_peer, c.fresh_ours, bold=True)
        n = f", {c.fresh_ours['n']} x_T" if c.fresh_ours and "n" in c.fresh_ours else ""
        lines.append(
            f"| {c.data} | {c.budget} | {_err(c.fresh_ours)}{n} | {_err(c.fresh_peer)} | "
            f"{cell} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="solver comparison result folders")
    p.add_argument("--fresh-seed", type=int, default=3, help="the x_T set changed picks meet")
    args = p.parse_args(argv)
    found: list[Cell] = []
    for folder in args.folders:
        if not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
        found += cells(read_rows(folder), args.fresh_seed)
    if not found:
        where = ", ".join(map(str, args.folders))
        print(f"error: no first_eval=prior_mean rows ({MARK}) under {where}", file=sys.stderr)
        return 2
    print(report(found, args.fresh_seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
