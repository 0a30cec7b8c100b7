"""Held-out selection for the solver comparison (docs/results.md, "The peers at their best").

Per (sde, data, NFE budget) and side (ours fixed, diffusers, ours fitted) one configuration is
picked without looking at the fresh x_T set: fixed grids and diffusers' schedulers by their RMS
end-point error on the selection x_T (``seed`` = ``SELECTION_SEED``), fitted grids by their error
on the pilot x_T held out from the fit (``fit_validation_error``). The picked configuration's
error is then reported on the fresh x_T (``seed`` = ``FRESH_SEED``), with the ratio best
diffusers ÷ ours there, and its selection-set figure beside it. Where both fresh rows carry their
per-x_T errors (``SAMPLES_KEY``), the fresh ratio comes with a paired bootstrap interval
(``paired_ratio_interval``): both sides ran from the same x_T, so a resample keeps each x_T's two
errors together, and an RMS that a few trajectories carry shows a wide interval. Further x_T sets
(seed ≥ 2, ``replication_table``) rerun the selection set's fixed-grid picks unchanged; their
ratios are reported per set and over all fresh x_T pooled.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

SELECTION_SEED, FRESH_SEED = 0, 1
SAMPLES_KEY = "_endpoint_error_samples"  # a row's per-x_T end-point errors (solver_comparison.py)
LEVEL, DRAWS = 0.95, 2000  # the paired bootstrap interval's level and resamples
PEER_PREFIX = "diffusers_"
SIDES = ("ours fixed", "diffusers", "ours fitted")
METRIC = "endpoint_error"

Row = dict[str, Any]


def side(r: Row) -> str:
    """The side a row competes on: diffusers' schedulers, our fixed grids or our fitted grids."""
    if r["solver"].startswith(PEER_PREFIX):
        return "diffusers"
    return "ours fitted" if r.get("fitted") else "ours fixed"


def config(r: Row) -> tuple:
    """What names a configuration across x_T sets: solver, family (order, variant), grid and the
    fit's objective."""
    return (r["solver"], r.get("family"), r.get("grid"), str(r.get("fit_objective")))


def label(r: Row) -> str:
    """``dpm_3m_lu`` for a peer, ``UniPC-2/quadratic`` for ours, ``UniPC-2/fitted`` (or the fixed
    grid the fit fell back to on validation) for a fitted row."""
    if side(r) == "diffusers":
        return r["solver"].removeprefix(PEER_PREFIX)
    grid = r.get("grid")
    if r.get("fitted") and r.get("fit_choice") not in (None, "fitted"):
        grid = f"{r['fit_choice']}, fit not kept"
    return f"{r.get('family', r['solver'])}/{grid or 'default'}"


def usable(r: Row) -> bool:
    """A finite end-point error within the budget (NFE ≤ budget)."""
    value = r.get(METRIC)
    return (
        r.get("status") == "ok"
        and bool(r.get("finite", True))
        and value is not None
        and math.isfinite(value)
        and r["nfe"] <= r["nfe_budget"]
    )


def _where(rows: list[Row], sde: str, data: str, budget: int, seed: int) -> list[Row]:
    return [
        r
        for r in rows
        if r["sde"] == sde
        and r["data"] == data
        and r["nfe_budget"] == budget
        and r.get("seed") == seed
        and usable(r)
    ]


def counterpart(rows: list[Row], chosen: Row, seed: int) -> Row | None:
    """The same configuration's row on the x_T set ``seed`` (the first, if repeated)."""
    same = _where(rows, chosen["sde"], chosen["data"], chosen["nfe_budget"], seed)
    return next((r for r in same if config(r) == config(chosen)), None)


@dataclass
class Choice:
    """A side's pick: its row on the selection x_T and on the fresh x_T (either may be absent)."""

    selection: Row | None
    fresh: Row | None

    def error(self, which: str) -> float | None:
        r = getattr(self, which)
        return r[METRIC] if r is not None else None


def choose(rows: list[Row], sde: str, data: str, budget: int, kind: str) -> Choice:
    """The side's configuration picked without the fresh set's errors: least error on the
    selection x_T among the configurations run on both sets (fixed, diffusers), least
    ``fit_validation_error`` (fitted, among the fits evaluated on the fresh x_T); returned with
    its rows on both sets."""
    if kind == "ours fitted":
        fresh = [
            r
            for r in _where(rows, sde, data, budget, FRESH_SEED)
            if side(r) == kind and _finite(r.get("fit_validation_error"))
        ]
        if not fresh:
            return Choice(None, None)
        pick = min(fresh, key=lambda r: r["fit_validation_error"])
        return Choice(counterpart(rows, pick, SELECTION_SEED), pick)
    cands = [
        r
        for r in _where(rows, sde, data, budget, SELECTION_SEED)
        if side(r) == kind and counterpart(rows, r, FRESH_SEED) is not None
    ]
    if not cands:
        return Choice(None, None)
    pick = min(cands, key=lambda r: r[METRIC])
    return Choice(pick, counterpart(rows, pick, FRESH_SEED))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def best_fixed_of_solver(rows: list[Row], fitted: Row) -> list[tuple[float, str]]:
    """The fresh-set errors of the best fixed grids of ``fitted``'s solver, with their labels:
    the one picked on the selection x_T among our fixed rows of the same family ("seed 0"), and
    the fit's own, picked on its validation x_T (``fit_best_fixed_endpoint_error``, "val.")."""
    found = []
    sel = [
        r
        for r in _where(rows, fitted["sde"], fitted["data"], fitted["nfe_budget"], SELECTION_SEED)
        if side(r) == "ours fixed"
        and (r["solver"], r.get("family")) == (fitted["solver"], fitted.get("family"))
    ]
    if sel:
        fresh = counterpart(rows, min(sel, key=lambda r: r[METRIC]), FRESH_SEED)
        if fresh is not None:
            found.append((fresh[METRIC], f"{label(fresh)}, seed 0"))
    own = fitted.get("fit_best_fixed_endpoint_error")
    if _finite(own):
        found.append((own, f"{fitted.get('family')}/{fitted.get('fit_best_fixed')}, val."))
    return found


def fits_worse_than_fixed(
    rows: list[Row], sde: str, data: str, budget: int
) -> tuple[int, list[str]]:
    """Every fitted row on the fresh x_T checked against the best fixed grids of its solver
    (``best_fixed_of_solver``): the number checked and a note for each that is worse than one."""
    checked, worse = 0, []
    for r in _where(rows, sde, data, budget, FRESH_SEED):
        if side(r) != "ours fitted" or not (fixed := best_fixed_of_solver(rows, r)):
            continue
        checked += 1
        worse += [
            f"{label(r)} {r[METRIC]:.3g} > {e:.3g} ({name})" for e, name in fixed if r[METRIC] > e
        ]
    return checked, worse


def geometric_mean(values: list[float]) -> float:
    """(Π v)^(1/n) of positive ratios."""
    return statistics.geometric_mean(values)


def _ratio(peer: float | None, ours: float | None) -> float | None:
    return peer / ours if peer is not None and ours is not None and ours > 0 else None


def paired_ratio_interval(
    peer: np.ndarray, ours: np.ndarray, level: float = LEVEL, draws: int = DRAWS, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of RMS(peer) ÷ RMS(ours) over the x_T resampled in
    pairs (each x_T keeps both its errors; Efron & Tibshirani 1993, §13.3)."""
    if peer.shape != ours.shape or peer.ndim != 1:
        raise ValueError(f"paired errors need equal 1-D shapes, got {peer.shape} and {ours.shape}")
    idx = np.random.default_rng(seed).integers(0, len(ours), size=(draws, len(ours)))
    ratios = np.sqrt((peer[idx] ** 2).mean(1) / (ours[idx] ** 2).mean(1))
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _paired(peer: Row | None, ours: Row | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Both rows' per-x_T errors (peer, ours) where both have them for the same x_T, else None."""
    a, b = (r.get(SAMPLES_KEY) if r else None for r in (peer, ours))
    if a is None or b is None or np.shape(a) != np.shape(b):
        return None
    return np.asarray(a), np.asarray(b)


def _ratio_text(
    ratio: float | None, pair: tuple[np.ndarray, np.ndarray] | None, bold: bool = False
) -> str:
    """``ratio`` to two decimals, with the paired interval of ``pair`` (peer, ours) if given."""
    if ratio is None:
        return ""
    text = f"**{ratio:.2f}**" if bold else f"{ratio:.2f}"
    if pair is not None:
        lo, hi = paired_ratio_interval(*pair)
        text += f" [{lo:.2f}–{hi:.2f}]"
    return text


def _ratio_cell(ratio: float | None, peer: Row | None, ours: Row | None, bold: bool = False) -> str:
    """``ratio`` to two decimals, with its paired interval where both rows have per-x_T errors."""
    return _ratio_text(ratio, _paired(peer, ours), bold)


def _bulk_cell(peer: Row | None, ours: Row | None) -> str:
    """Per x_T on the same set: the share where ours is closer, and the two median errors
    (ours / peer); "" without per-x_T errors on both sides."""
    if (pair := _paired(peer, ours)) is None:
        return ""
    a, b = pair
    return f"{float((b < a).mean()):.0%}; {np.median(b):.3g} / {np.median(a):.3g}"


def _fmt(r: Row | None) -> str:
    return f"{r[METRIC]:.3g} ({label(r)})" if r is not None else ""


def held_out_table(rows: list[Row]) -> tuple[str, dict[str, dict[int, dict[str, float]]]]:
    """The Markdown table of the picks per (sde, data) × budget and the ratios per kind
    (``fixed, fresh``, ``fixed, selection``, ``fitted, fresh``) → budget → data."""
    keys = sorted({(r["sde"], r["data"]) for r in rows if usable(r)})
    budgets = sorted({r["nfe_budget"] for r in rows if usable(r)})
    ratios: dict[str, dict[int, dict[str, float]]] = {
        k: {} for k in ("fixed, fresh", "fixed, selection", "fitted, fresh")
    }
    head = "| data | row | " + " | ".join(f"NFE {b}" for b in budgets) + " |"
    lines = [head, "|---|---" + "|---" * len(budgets) + "|"]
    for sde, data in keys:
        picks = {(k, b): choose(rows, sde, data, b, k) for k in SIDES for b in budgets}
        if not any(c.selection or c.fresh for c in picks.values()):
            continue
        cells: dict[str, list[str]] = {}
        for kind in ("ours fixed", "diffusers"):
            cells[f"{kind}, selection x_T"] = [_fmt(picks[(kind, b)].selection) for b in budgets]
            cells[f"{kind}, fresh x_T"] = [_fmt(picks[(kind, b)].fresh) for b in budgets]
        for which, name in (("fresh", "fixed, fresh"), ("selection", "fixed, selection")):
            row = []
            for b in budgets:
                ours, peer = picks[("ours fixed", b)], picks[("diffusers", b)]
                ratio = _ratio(peer.error(which), ours.error(which))
                if ratio is not None:
                    ratios[name].setdefault(b, {})[data] = ratio
                row.append(_ratio_cell(ratio, getattr(peer, which), getattr(ours, which)))
            cells[f"ratio diffusers ÷ ours, {name.split(', ')[1]} x_T"] = row
        bulk = [_bulk_cell(picks[("diffusers", b)].fresh, picks[("ours fixed", b)].fresh)
                for b in budgets]  # fmt: skip
        if any(bulk):
            cells["fresh x_T: ours closer on; median error ours / diffusers"] = bulk
        if any(picks[("ours fitted", b)].fresh for b in budgets):
            fitted_cells, fitted_ratio, worse_cells = [], [], []
            for b in budgets:
                pick, peer = picks[("ours fitted", b)], picks[("diffusers", b)]
                r = pick.fresh
                fitted_cells.append(
                    f"{r['fit_validation_error']:.3g} → {r[METRIC]:.3g} ({label(r)})" if r else ""
                )
                ratio = _ratio(peer.error("fresh"), pick.error("fresh"))
                if ratio is not None:
                    ratios["fitted, fresh"].setdefault(b, {})[data] = ratio
                fitted_ratio.append(_ratio_cell(ratio, peer.fresh, pick.fresh, bold=True))
                checked, worse = fits_worse_than_fixed(rows, sde, data, b)
                worse_cells.append(
                    ("yes: " + "; ".join(worse))
                    if worse
                    else (f"no ({checked})" if checked else "")
                )
            cells["ours fitted: validation → fresh x_T"] = fitted_cells
            cells["ratio diffusers ÷ ours fitted, fresh x_T"] = fitted_ratio
            cells["a fit worse than its solver's best fixed grid, fresh x_T (fits checked)"] = (
                worse_cells
            )
        for name, row in cells.items():
            lines.append(f"| {data} | {name} | " + " | ".join(row) + " |")
    for name, per_budget in ratios.items():
        means = [
            f"**{geometric_mean(list(per_budget[b].values())):.2f}**" if b in per_budget else ""
            for b in budgets
        ]
        if any(means):
            lines.append(f"| **geometric mean** | ratio, {name} x_T | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n", ratios


def targets(rows: list[Row], ratios: dict[str, dict[int, dict[str, float]]]) -> str:
    """The targets on the fresh x_T: fixed ≥ 1× best diffusers at every budget and data set;
    fitted geometric mean ≥ 4× at 10 and ≥ 3× at 5 evaluations; no fit worse than the best fixed
    grid of its solver."""
    lines = []
    fixed = ratios["fixed, fresh"]
    misses = [
        f"{d} at {b}: {v:.2f}"
        for b, per in sorted(fixed.items())
        for d, v in sorted(per.items())
        if v < 1
    ]
    if fixed:
        low = min(v for per in fixed.values() for v in per.values())
        verdict = "met" if not misses else "NOT met (" + "; ".join(misses) + ")"
        lines.append(
            f"- fixed grids ≥ 1× best diffusers, every budget and data set: {verdict}; "
            f"lowest ratio {low:.2f}"
        )
    for budget, goal in ((10, 4.0), (5, 3.0)):
        per = ratios["fitted, fresh"].get(budget)
        if per:
            gm = geometric_mean(list(per.values()))
            verdict = "met" if gm >= goal else "NOT met"
            lines.append(
                f"- fitted at {budget} evaluations, geometric mean ≥ {goal:g}×: {gm:.2f}× over "
                f"{len(per)} data sets → {verdict}"
            )
        else:
            lines.append(f"- fitted at {budget} evaluations: no fitted rows on the fresh x_T")
    keys = sorted({(r["sde"], r["data"], r["nfe_budget"]) for r in rows if usable(r)})
    checks = [(k, fits_worse_than_fixed(rows, *k)) for k in keys]
    checked = sum(c for _, (c, _) in checks)
    worse = [f"{k[1]}@{k[2]}: {w}" for k, (_, ws) in checks for w in ws]
    if checked:
        verdict = "met" if not worse else "NOT met (" + "; ".join(worse) + ")"
        lines.append(
            f"- no fit worse than its solver's best fixed grid ({checked} fits): {verdict}"
        )
    return "\n".join(lines) + "\n"


def fitted_table(rows: list[Row]) -> str:
    """Every fit on the fresh x_T: validation error → fresh-set error (and the grid it fell back
    to where the fit was not kept), per data set × solver, one column per budget."""
    fits = [r for r in rows if side(r) == "ours fitted" and r.get("seed") == FRESH_SEED]
    fits = [r for r in fits if usable(r)]
    if not fits:
        return ""
    budgets = sorted({r["nfe_budget"] for r in fits})
    lines = ["| data | solver | " + " | ".join(f"NFE {b}" for b in budgets) + " |"]
    lines.append("|---|---" + "|---" * len(budgets) + "|")
    for data, fam in sorted({(r["data"], r.get("family", r["solver"])) for r in fits}):
        cells = []
        for b in budgets:
            same = [
                r
                for r in fits
                if (r["data"], r.get("family", r["solver"]), r["nfe_budget"]) == (data, fam, b)
            ]
            cells.append(
                ", ".join(
                    f"{r.get('fit_validation_error', math.nan):.3g} → {r[METRIC]:.3g}"
                    + ("" if r.get("fit_choice") in (None, "fitted") else f" ({r['fit_choice']})")
                    for r in same
                )
            )
        lines.append(f"| {data} | {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replication_seeds(rows: list[Row]) -> list[int]:
    """The x_T sets other than the selection and the fresh one (seed ≥ 2): replications, on
    which the configurations picked on the selection set are run again."""
    return sorted({r["seed"] for r in rows if usable(r)} - {SELECTION_SEED, FRESH_SEED})


def _pooled(pairs: list[tuple[Row | None, Row | None]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-x_T errors (peer, ours) of several x_T sets joined, each x_T once; None unless
    every set has both sides' errors."""
    joined = [_paired(peer, ours) for peer, ours in pairs]
    if not joined or any(p is None for p in joined):
        return None
    return np.concatenate([p[0] for p in joined]), np.concatenate([p[1] for p in joined])


def rms(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(errors**2)))


def replication_table(rows: list[Row]) -> tuple[str, list[str]]:
    """The fixed-grid picks of the selection x_T run on each replication set (seed ≥ 2): per
    (sde, data) × budget both sides' errors and the ratio there, and the ratio over all fresh
    x_T pooled (seed 1 and the replications, every x_T weighted alike); returns the Markdown
    table and the cells where a ratio is < 1."""
    seeds = replication_seeds(rows)
    again = [r for r in rows if usable(r) and r["seed"] in seeds]
    if not again:
        return "", []
    budgets = sorted({r["nfe_budget"] for r in again})
    lines = ["| data | row | " + " | ".join(f"NFE {b}" for b in budgets) + " |"]
    lines.append("|---|---" + "|---" * len(budgets) + "|")
    short = []
    for sde, data in sorted({(r["sde"], r["data"]) for r in again}):
        cells: dict[str, list[str]] = {}
        picks = {
            b: [choose(rows, sde, data, b, k) for k in ("ours fixed", "diffusers")] for b in budgets
        }
        # a set counts where ours' picks were rerun (a set of other configurations' runs is not
        # a replication of these)
        here = [
            s
            for s in seeds
            if any(o.selection and counterpart(rows, o.selection, s) for o, _ in picks.values())
        ]
        if not here:
            continue
        for b in budgets:
            ours, peer = picks[b]
            sets = [(peer.fresh, ours.fresh)]
            for s in here:
                mine, theirs = (
                    counterpart(rows, c.selection, s) if c.selection else None for c in (ours, peer)
                )
                sets.append((theirs, mine))
                ratio = _ratio(*(r[METRIC] if r else None for r in (theirs, mine)))
                if ratio is not None and ratio < 1:
                    short.append(f"{data} at {b}, seed {s}: {ratio:.2f}")
                named = {f"ours fixed, seed {s} x_T": mine, f"diffusers, seed {s} x_T": theirs}
                for name, r in named.items():
                    cells.setdefault(name, []).append(
                        f"{_fmt(r)}, {r['n']} x_T" if r and "n" in r else _fmt(r)
                    )
                cells.setdefault(f"ratio diffusers ÷ ours, seed {s} x_T", []).append(
                    _ratio_cell(ratio, theirs, mine)
                )
            pair = _pooled(sets)
            ratio = rms(pair[0]) / rms(pair[1]) if pair is not None else None
            if ratio is not None and ratio < 1:
                short.append(f"{data} at {b}, pooled: {ratio:.2f}")
            text = _ratio_text(ratio, pair, bold=True)
            cells.setdefault("ratio, all fresh x_T pooled", []).append(
                f"{text}, {len(pair[1])} x_T" if pair is not None else ""
            )
        for name, row in cells.items():
            lines.append(f"| {data} | {name} | " + " | ".join(row) + " |")
    if len(lines) == 2:
        return "", []
    return "\n".join(lines) + "\n", short


def replication_report(rows: list[Row]) -> str:
    """The replication section: the table and the verdict, where replication rows exist."""
    table, short = replication_table(rows)
    if not table:
        return ""
    seeds = ", ".join(str(s) for s in replication_seeds(rows))
    verdict = "met" if not short else "NOT met (" + "; ".join(short) + ")"
    return (
        f"\nReplication: the fixed-grid configurations picked on the selection x_T, run again on "
        f"further fresh x_T (seed {seeds}); pooled = seed {FRESH_SEED} and these together. A cell"
        " counts as met when its ratio on every replication set and on the pooled fresh x_T is ≥"
        f" 1.\n\n{table}\n- fixed grids ≥ 1× best diffusers on the replication and pooled: "
        f"{verdict}\n"
    )


def held_out_report(rows: list[Row]) -> str:
    """The section: how the picks are made, the table, the geometric means, the targets and
    every fit's validation and fresh-set error."""
    table, ratios = held_out_table(rows)
    fits = fitted_table(rows)
    if fits:
        fits = (
            "\nEvery fit, RMS on the validation part of its pilot x_T → on the fresh x_T (the fixed"
            " grid used instead where the fit did not beat it on validation):\n\n" + fits
        )
    intro = (
        f"Each side's configuration is picked on the selection x_T (seed {SELECTION_SEED}) and "
        f"reported on a fresh x_T set (seed {FRESH_SEED}); fitted grids are picked by their error "
        "on the validation part of their pilot x_T (validation → fresh). Ratio = best diffusers "
        f"÷ ours (> 1: ours ahead); in brackets its {LEVEL:.0%} paired bootstrap interval over "
        "the x_T (both sides' errors from the same x_T resampled together), where the rows carry "
        "per-x_T errors.\n\n"
    )
    report = intro + table + "\nTargets (fresh x_T):\n\n" + targets(rows, ratios)
    return report + replication_report(rows) + fits
