"""Tables, targets and the error-vs-NFE plot of the solver comparison (from its summary rows)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from solver_selection import (  # noqa: E402
    FRESH_SEED,
    PEER_PREFIX,
    SELECTION_SEED,
    geometric_mean,
    held_out_report,
    side,
)

from sde_gen.plotting import plot_solver_comparison  # noqa: E402
from sde_gen.runtime.files import atomic_write

METRICS = (
    ("mmd2", "MMD² to exact samples", 1e3, "×10⁻³"),
    ("nll_gap", "NLL gap E_gen[−log p] − E_data[−log p]", 1.0, "nats"),
    ("endpoint_error", "ODE end-point RMS error vs the tight PF-ODE reference", 1.0, ""),
)


def _is_peer(solver: str) -> bool:
    return solver.startswith(PEER_PREFIX)


def _order(solvers: set[str]) -> list[str]:
    return sorted(solvers, key=lambda s: (_is_peer(s), s))


def _cell(row: dict[str, Any] | None, metric: str, scale: float) -> str:
    if row is None:
        return ""
    if row.get("status") != "ok":
        return "skip"
    if not row.get("finite", True):
        return "nan"
    if metric not in row:
        return ""
    text = f"{row[metric] * scale:.3g}"
    if abs(row["nfe"] - row["nfe_budget"]) > 0.1 * row["nfe_budget"]:
        text += f" ({row['nfe']})"
    return text


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """One table per (sde, data, metric): solvers × NFE budgets; actual NFE in brackets when it
    differs from the budget by more than 10 %."""
    out = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for (sde, data), group in sorted(_groups(rows).items()):
        budgets = sorted({r["nfe_budget"] for r in group})
        table = {(r["solver"], r["nfe_budget"]): r for r in group}
        solvers = _order({r["solver"] for r in group})
        floors = next((r for r in ok if r["sde"] == sde and r["data"] == data), None)
        for metric, title, scale, unit in METRICS:
            shown = [
                s for s in solvers if any(metric in (table.get((s, b)) or {}) for b in budgets)
            ]
            if not shown:
                continue
            head = f"**{data}, sde={sde}: {title}**" + (f" ({unit})" if unit else "")
            if floors is not None and f"{metric}_floor_rms" in floors:
                f_mean = floors[f"{metric}_floor_mean"] * scale
                f_std = floors[f"{metric}_floor_std"] * scale
                head += (
                    f"; Monte Carlo floor (exact vs exact, n={floors['n']}): "
                    f"{f_mean:.3g} ± {f_std:.3g}"
                )
            if floors is not None and f"{metric}_exact_flow" in floors:
                head += (
                    f"; exact PF-ODE flow from the same x_T (the ODE solvers' limit): "
                    f"{floors[f'{metric}_exact_flow'] * scale:.3g}"
                )
            lines = [head, "", "| solver | " + " | ".join(f"NFE {b}" for b in budgets) + " |"]
            lines.append("|---" * (len(budgets) + 1) + "|")
            for s in shown:
                cells = [_cell(table.get((s, b)), metric, scale) for b in budgets]
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["sde"], r["data"])].append(r)
    return groups


def targets(rows: list[dict[str, Any]]) -> str:
    """The issue's two targets, per (sde, 2-D data): best of ours at 20 NFE within 2× the MMD²
    floor (RMS of exact-vs-exact MMD²); at 10 NFE at most ¼ of the best diffusers scheduler."""
    lines = []
    for (sde, data), group in sorted(_groups(rows).items()):
        ok = [r for r in group if r.get("status") == "ok" and r.get("finite") and "mmd2" in r]
        if not ok or ok[0]["dim"] > 2:
            continue
        floor = ok[0]["mmd2_floor_rms"]

        def best(budget: int, peers: bool, ok=ok) -> dict[str, Any] | None:
            cands = [
                r
                for r in ok
                if r["nfe_budget"] == budget
                and _is_peer(r["solver"]) == peers
                and r["nfe"] <= 1.1 * budget
            ]
            return min(cands, key=lambda r: r["mmd2"]) if cands else None

        b20, b10, p10 = best(20, False), best(10, False), best(10, True)
        if b20 is not None:
            verdict = "met" if b20["mmd2"] <= 2 * floor else "MISSED"
            lines.append(
                f"- {data}, sde={sde}: best of ours at 20 NFE = {b20['solver']} "
                f"MMD² {b20['mmd2']:.3g} vs 2× floor {2 * floor:.3g} → {verdict}"
            )
        ode20 = [
            r for r in ok if r["nfe_budget"] == 20 and "endpoint_error" in r and r["nfe"] <= 22
        ]
        if ode20 and "mmd2_exact_flow" in ok[0]:
            flow = ok[0]["mmd2_exact_flow"]
            b = min(ode20, key=lambda r: r["mmd2"])
            verdict = "met" if b["mmd2"] - flow <= 2 * floor else "MISSED"
            lines.append(
                f"- {data}, sde={sde}: paired (ODE solvers, same x_T): {b['solver']} at 20 NFE "
                f"exceeds the exact flow's MMD² {flow:.3g} by {b['mmd2'] - flow:.3g} vs 2× floor "
                f"{2 * floor:.3g} → {verdict}"
            )
        if b10 is not None and p10 is not None:
            verdict = "met" if b10["mmd2"] <= 0.25 * p10["mmd2"] else "MISSED"
            lines.append(
                f"- {data}, sde={sde}: at 10 NFE best of ours {b10['solver']} MMD² "
                f"{b10['mmd2']:.3g} vs ¼ × best diffusers {p10['solver']} "
                f"{p10['mmd2']:.3g} → {verdict}"
            )
    return "\n".join(lines) + "\n"


PEER_METRICS = (
    ("endpoint_error", "RMS end-point error vs the PF-ODE reference (same x_T)", abs),
    ("mmd2", "MMD² (×10⁻³) to exact samples", lambda v: v),
    ("nll_gap", "|NLL gap| (nats)", abs),
)


def _label(r: dict[str, Any]) -> str:
    if _is_peer(r["solver"]):
        return r["solver"].removeprefix(PEER_PREFIX)
    return str(r.get("grid") or "default")


def _best(cands: list[dict[str, Any]], metric: str, key) -> dict[str, Any] | None:
    cands = [r for r in cands if metric in r and math.isfinite(r[metric])]
    return min(cands, key=lambda r: key(r[metric])) if cands else None


def _reference_note(group: list[dict[str, Any]]) -> str:
    """The reference's tolerance, cost and error bound (RMS difference from the check solve)."""
    r = next((r for r in group if "reference_error_zero" in r), None)
    if r is None:
        return ""
    return (
        f"Reference: the PF-ODE at rtol {r['reference_tol']:g} ({r['reference_nfe']} "
        f"evaluations, n = {r['n']}); RMS difference from rtol {r['check_tol']:g}, a bound on "
        f"its error: {r['reference_error_zero']:.2g} at t ≈ 0, {r['reference_error_t_min']:.2g} "
        "at t_min."
    )


def _chunk_ratios(ours: dict[str, Any] | None, peer: dict[str, Any] | None) -> str:
    """The ratio peer ÷ ours on each chunk of the same held-out x_T (``endpoint_error_chunks``):
    min–max (median), or "" without chunks on both sides."""
    a, b = (r.get("endpoint_error_chunks") if r else None for r in (ours, peer))
    if not a or not b or len(a) != len(b):
        return ""
    ratios = sorted(p / o for o, p in zip(a, b, strict=True))
    return f"{ratios[0]:.2f}–{ratios[-1]:.2f} ({statistics.median(ratios):.2f})"


def peers_at_best(rows: list[dict[str, Any]]) -> str:
    """Per (sde, data) and metric: the best configuration of each family at each budget (within
    the budget: NFE ≤ budget), our fixed and fitted (fit on pilot x_T, evaluated on held-out x_T)
    schedules as separate rows, and for the end-point error the ratio best diffusers ÷ ours; then
    the geometric mean of the ratios over the data sets."""
    ok = [
        r
        for r in rows
        if r.get("status") == "ok" and r.get("finite") and r["nfe"] <= r["nfe_budget"]
    ]
    out, ratios = [], defaultdict(lambda: defaultdict(dict))
    for (sde, data), group in sorted(_groups(ok).items()):
        budgets = sorted({r["nfe_budget"] for r in group})
        for metric, title, key in PEER_METRICS:
            scale = 1e3 if metric == "mmd2" else 1.0
            fams = sorted(
                {(side(r), r.get("family", r["solver"])) for r in group if metric in r},
                key=lambda kf: ({"ours fixed": 0, "ours fitted": 1, "diffusers": 2}[kf[0]], kf[1]),
            )
            if not fams:
                continue
            lines = [f"**{data}, sde={sde}: {title}, best configuration of each family**", ""]
            if metric == "endpoint_error" and (note := _reference_note(group)):
                lines[-1:-1] = [note]
            lines.append("| family | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
            lines.append("|---" * (len(budgets) + 1) + "|")
            best_of: dict[tuple[str, int], dict[str, Any] | None] = {}
            for kind, fam in fams:
                cells = []
                for b in budgets:
                    cand = [
                        r
                        for r in group
                        if r["nfe_budget"] == b and side(r) == kind and r.get("family") == fam
                    ]
                    r = _best(cand, metric, key)
                    cells.append(f"{r[metric] * scale:.3g} ({_label(r)})" if r else "")
                lines.append(
                    f"| {fam if kind == 'diffusers' else kind + ': ' + fam} | "
                    + " | ".join(cells)
                    + " |"
                )
            for kind in ("ours fixed", "ours fitted", "diffusers"):
                cells = []
                for b in budgets:
                    r = _best(
                        [x for x in group if x["nfe_budget"] == b and side(x) == kind], metric, key
                    )
                    best_of[(kind, b)] = r
                    cells.append(f"{r[metric] * scale:.3g} ({r.get('family')})" if r else "")
                lines.append(f"| **best {kind}** | " + " | ".join(cells) + " |")
            if metric == "endpoint_error":
                for kind in ("ours fixed", "ours fitted"):
                    cells = []
                    for b in budgets:
                        ours, peer = best_of[(kind, b)], best_of[("diffusers", b)]
                        if ours and peer and ours[metric] > 0:
                            ratio = peer[metric] / ours[metric]
                            ratios[kind][b][data] = ratio
                            cells.append(f"{ratio:.2f}")
                        else:
                            cells.append("")
                    lines.append(f"| ratio diffusers ÷ {kind} | " + " | ".join(cells) + " |")
                    spread = [
                        _chunk_ratios(best_of[(kind, b)], best_of[("diffusers", b)])
                        for b in budgets
                    ]
                    if any(spread):
                        lines.append(
                            f"| {kind}, ratio per chunk: min–max (median) | "
                            + " | ".join(spread)
                            + " |"
                        )
            out.append("\n".join(lines))
    summary = [
        "**Geometric mean over data sets of the end-point-error ratio (best diffusers ÷ ours)**"
    ]
    summary += ["", "| schedules | budget | ratio | per data set |", "|---|---|---|---|"]
    for kind in ("ours fixed", "ours fitted"):
        for b, per in sorted(ratios[kind].items()):
            gm = geometric_mean(list(per.values()))
            each = ", ".join(f"{d} {v:.2f}" for d, v in sorted(per.items()))
            summary.append(f"| {kind} | {b} | {gm:.2f} | {each} |")
    return "\n\n".join(out) + "\n\n" + "\n".join(summary) + "\n"


FLOOR_LABEL = "Monte Carlo floor\n(up to |mean| + 2 sd,\nexact vs exact)"
"""The band of ``plot``: the metric between exact sample sets over ``floor_seeds`` seeds."""


def plot(rows: list[dict[str, Any]], sde: str, path: Path) -> None:
    """Error vs NFE (log–log), one panel per (data, metric) drawn by
    ``sde_gen.plotting.plot_solver_comparison``; diffusers dashed; floor = |mean| + 2 sd band."""
    groups = {k: v for k, v in _groups(rows).items() if k[0] == sde}
    data_names = sorted(d for _, d in groups)
    if not data_names:
        return
    fig, axes = plt.subplots(
        len(data_names),
        len(METRICS),
        figsize=(4.2 * len(METRICS), 3.4 * len(data_names)),
        squeeze=False,
    )
    solvers = _order({r["solver"] for g in groups.values() for r in g})
    ours, peers = [s for s in solvers if not _is_peer(s)], [s for s in solvers if _is_peer(s)]
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(ours)}
    colours.update({s: plt.get_cmap("Dark2")(i % 8) for i, s in enumerate(peers)})
    for i, data in enumerate(data_names):
        group = [r for r in groups[(sde, data)] if r.get("status") == "ok" and r.get("finite")]
        for j, (metric, _title, _, _) in enumerate(METRICS):
            ax = axes[i, j]
            floor_rms = next((r.get(f"{metric}_floor_rms") for r in group), None)
            lowest = floor_rms / 10 if floor_rms else 1e-6
            curves = {}
            for s in solvers:
                pts = sorted(
                    (r["nfe"], r[metric]) for r in group if r["solver"] == s and metric in r
                )
                if pts:
                    curves[s] = ([p[0] for p in pts], [max(abs(p[1]), lowest) for p in pts])
            if not curves:
                ax.set_axis_off()
                continue
            floor = None
            if floor_rms:
                f_mean = next(r[f"{metric}_floor_mean"] for r in group)
                f_std = next(r[f"{metric}_floor_std"] for r in group)
                floor = (lowest, abs(f_mean) + 2 * f_std)
            plot_solver_comparison(
                curves, ax=ax, floor=floor, ylabel=metric, title=data, floor_label=FLOOR_LABEL
            )
            for line in ax.get_lines():
                name = line.get_label()
                line.set_color(colours[name])
                line.set_linestyle("--" if _is_peer(name) else "-")
                line.set_marker("s" if _is_peer(name) else "o")
                line.set_markersize(3)
            ax.get_legend().remove()
            ax.set_title(f"{data}: {metric}", fontsize=9)
            ax.grid(True, which="major", lw=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(
        f"sde={sde}: |metric| vs NFE (values below the floor drawn at its bottom)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 0.86, 0.97))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=72, format="png"))
    plt.close(fig)


def _display(r: dict[str, Any]) -> dict[str, Any]:
    """A row named by solver, order and grid (``dpm_solver-3/trailing``, ``unipc-2/fitted``)
    where the sweep varies them."""
    if _is_peer(r["solver"]) or "family" not in r:
        return r
    order = r["family"].rsplit("-", 1)[-1] if "-" in r["family"] else ""
    name = r["solver"] + (f"-{order}" if order else "") + (f"/{r['grid']}" if r.get("grid") else "")
    return {**r, "solver": name}


def by_x_T_set(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose ``data`` names the x_T set (``ring, x_T seed 1``) where several seeds are
    present, so that the per-set tables never mix sets."""
    if len({r.get("seed") for r in rows}) < 2:
        return rows
    return [{**r, "data": f"{r['data']}, x_T seed {r.get('seed')}"} for r in rows]


def write_report(rows: list[dict[str, Any]], out_dir: Path) -> None:
    per_set = by_x_T_set(rows)
    named = [_display(r) for r in per_set]
    skipped = [r for r in rows if r.get("status") != "ok"]
    text = "# Solver comparison\n\n"
    if any("endpoint_error" in r for r in rows) and {SELECTION_SEED, FRESH_SEED} <= {
        r.get("seed") for r in rows
    }:
        text += "## Picked on one x_T set, reported on a fresh one\n\n" + held_out_report(rows)
        text += "\n## Every configuration, per x_T set\n\n"
    text += markdown_tables(named) + "\n## Targets\n\n" + targets(named)
    if any("family" in r for r in rows):
        text += "\n## The peers at their best on each x_T set (in sample)\n\n"
        text += peers_at_best(per_set)
    if skipped:
        text += (
            "\n## Skipped jobs\n\n"
            + "\n".join(
                f"- {r['sde']}/{r['data']}/{r['solver']}/NFE {r['nfe_budget']}: {r.get('reason')}"
                for r in skipped
            )
            + "\n"
        )
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    text += f"\nTotal sampling time over {len(rows)} jobs: {seconds:.1f} s.\n"
    atomic_write(out_dir / "solver_comparison.md", lambda tmp: Path(tmp).write_text(text))
    for sde in sorted({r["sde"] for r in rows}):
        plot(named, sde, out_dir / f"solver_comparison_{sde}.png")
    print(text)
    if any(math.isnan(r.get("mmd2", 0.0)) for r in rows):
        print("warning: NaN MMD² in some rows")
