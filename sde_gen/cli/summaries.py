"""Every ``summary.json`` below a directory → one table (``sde-gen-collect``, the sweep callback).

Writes ``summaries.csv`` and ``summaries.md`` into the directory and, when the runs have an
``nfe`` and a metric, ``summaries.png`` (metric vs NFE, one curve per solver, log NFE; the metric
at its signed value, on a symlog axis when some value is ≤ 0).
Each row also holds the run's Hydra overrides (``.hydra/overrides.yaml``) when present.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sde_gen.runtime.files import (
    LOCK_FILE,
    SUMMARY_FILE,
    FolderLockedError,
    atomic_write,
    check_writable,
    lock_folder,
    read_regular_text,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_METRICS = ("nll_gap", "mmd2", "endpoint_error", "nll", "bpd", "loss", "final_loss")
RESULT_KEYS = ("solver", "steps", "nfe", "time_s", "wall_s", "mode_fraction", *DEFAULT_METRICS)
"""Columns the compact Markdown table always keeps (when present) beside the varying ones."""
OUTPUT_STEM = "summaries"
MAX_SUMMARY_BYTES = 2**20
"""A summary.json is one line of a few kB; a larger file is not one a run wrote."""

log = logging.getLogger(__name__)


def _run_key(rel: str) -> tuple:
    """Sort runs naturally: multirun job numbers as integers."""
    return tuple(int(p) if p.isdigit() else math.inf for p in Path(rel).parts) + (rel,)


def _overrides(run_dir: Path) -> str | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        text = read_regular_text(path, "overrides", MAX_SUMMARY_BYTES)
    except ValueError as e:
        log.warning("sde-gen-collect: overrides left out: %s", e)
        return None
    lines = [ln[2:].strip() for ln in text.splitlines() if ln.startswith("- ")]
    return " ".join(lines)


def _non_finite(value: Any, key: str) -> str | None:
    """The first key (``a.b[2]``) below ``key`` holding NaN or ±inf, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return key
    items = value.items() if isinstance(value, dict) else []
    items = enumerate(value) if isinstance(value, list) else items
    for k, v in items:
        found = _non_finite(v, f"{key}[{k}]" if isinstance(value, list) else f"{key}.{k}")
        if found:
            return found
    return None


def read_summary(path: Path) -> dict[str, Any]:
    """One run's summary: a JSON object of finite numbers in a small regular file; else a
    ValueError naming the file (and the key holding NaN or inf)."""
    text = read_regular_text(path, "summary", MAX_SUMMARY_BYTES)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"summary {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise ValueError(
            f"summary {str(path)!r} holds a {type(record).__name__}, not a JSON object"
        )
    bad = next((k for k, v in record.items() if _non_finite(v, k)), None)
    if bad is not None:
        raise ValueError(f"summary {str(path)!r} holds {_non_finite(record[bad], bad)}=NaN/inf")
    return record


def read_summaries(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict a run, sorted by run directory, with ``run`` (the path relative to
    ``directory``) and ``overrides`` added; a run whose summary cannot be read (not a small
    regular file, not a JSON object, NaN or inf) is left out with a warning naming the file."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file: give the folder of a sweep")
    if not root.is_dir():
        raise ValueError(f"directory {str(root)!r} does not exist")
    rows, skipped = [], []
    for path in root.rglob(SUMMARY_FILE):
        try:
            record = read_summary(path)
        except ValueError as e:
            log.warning("sde-gen-collect: left out a run: %s", e)
            skipped.append(str(e))
            continue
        rel = str(path.parent.relative_to(root)) or "."
        row = {"run": rel, **record}
        over = _overrides(path.parent)
        if over is not None:
            row["overrides"] = over
        rows.append(row)
    if not rows:
        unread = f" ({len(skipped)} unreadable, left out: {skipped[0]})" if skipped else ""
        raise ValueError(f"no {SUMMARY_FILE} below {str(root)!r}{unread}")
    return sorted(rows, key=lambda r: _run_key(r["run"]))


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """All keys, ``run`` first and ``overrides`` last, the rest in first-seen order."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    middle = [c for c in cols if c not in ("run", "overrides")]
    return ["run", *middle] + (["overrides"] if "overrides" in cols else [])


def compact_columns(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> list[str]:
    """``run``, the columns whose value differs between runs, and the result keys: what a
    sweep changed and what it measured (the CSV keeps every column)."""

    def varies(c: str) -> bool:
        return len({json.dumps(r.get(c), sort_keys=True) for r in rows}) > 1

    keep = [c for c in cols if c == "run" or c in RESULT_KEYS or (c != "overrides" and varies(c))]
    return keep


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def to_csv(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(esc(_cell(r.get(c))) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pick_metric(rows: Sequence[dict[str, Any]], metric: str | None) -> str | None:
    """``metric`` if given (it must occur), else the first of DEFAULT_METRICS that occurs."""
    present = {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
    if metric is not None:
        if metric not in present:
            raise ValueError(f"metric={metric!r} is in no summary; numeric keys: {sorted(present)}")
        return metric
    return next((m for m in DEFAULT_METRICS if m in present), None)


def floor_label(metric: str) -> str:
    """The legend of the band ±(mean over runs of ``<metric>_floor``): for the mixture metrics
    the RMS of the metric between two exact sample sets over 5 seeds
    (``metrics.mixtures.exact_metrics``); for another metric, what its runs report."""
    from sde_gen.plotting.titles import SIGNED_METRICS

    if metric in SIGNED_METRICS:
        return "Monte Carlo floor: ± RMS, exact vs exact, 5 draws"
    return f"floor: ± mean {metric}_floor of the runs"


def plot_rows(
    rows: Sequence[dict[str, Any]], metric: str, path: Path | None = None, group: str = "solver"
) -> Figure | Path | None:
    """``metric`` vs NFE at its signed value (symlog axis when some value is ≤ 0), one curve per
    ``group`` value (mean over repeated NFE), with the mean ``<metric>_floor`` of the runs (the
    Monte Carlo floor) as the band ±floor and the axis' linear range when they report one; the
    PNG at ``path`` (the Figure without one), None when no run has an NFE and the metric."""
    from sde_gen.plotting import plot_solver_comparison, sweep_title

    curves: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        nfe, val = r.get("nfe"), r.get(metric)
        if not isinstance(nfe, (int, float)) or not isinstance(val, (int, float)) or nfe <= 0:
            continue
        if not math.isfinite(val):
            continue
        curves.setdefault(str(r.get(group, "run")), {}).setdefault(float(nfe), []).append(val)
    if not curves:
        return None
    data = {
        name: (sorted(pts), [sum(pts[k]) / len(pts[k]) for k in sorted(pts)])
        for name, pts in curves.items()
    }
    floors = [r[f"{metric}_floor"] for r in rows if isinstance(r.get(f"{metric}_floor"), float)]
    floor = sum(floors) / len(floors) if floors else None
    return plot_solver_comparison(
        data,
        path,
        floor=None if floor is None else (0.0, floor),
        floor_label=floor_label(metric),
        ylabel=metric,
        title=sweep_title(rows, metric, floor),
    )


def collect(
    directory: str | os.PathLike,
    metric: str | None = None,
    group: str = "solver",
    all_columns: bool = False,
    lock: bool = True,
) -> dict[str, Path]:
    """Read the summaries below ``directory``; write the CSV (every column), the Markdown
    (compact unless ``all_columns``) and, when runs have an NFE and a metric, the plot. With
    ``lock`` it holds the folder's lock meanwhile: a sweep still running there is refused
    (``FolderLockedError`` naming the folder); a caller that owns the folder passes False."""
    root = Path(directory)
    rows = read_summaries(root)
    check_writable(root, "folder")  # a read-only folder: one line naming it, before any write
    held = _lock(root) if lock else None
    try:
        return _write_tables(root, rows, metric, group, all_columns)
    finally:
        if held is not None:
            held.release()


def _lock(root: Path) -> Any:
    try:
        return lock_folder(root)
    except FolderLockedError:
        raise FolderLockedError(
            f"folder {str(root)!r} is in use by a running sweep (lock "
            f"{str(root / LOCK_FILE)!r} is held): collect it once the sweep has ended"
        ) from None


def _write_tables(
    root: Path, rows: list[dict[str, Any]], metric: str | None, group: str, all_columns: bool
) -> dict[str, Path]:
    cols = columns_of(rows)
    md_cols = cols if all_columns else compact_columns(rows, cols)
    out = {
        "csv": atomic_write(
            root / f"{OUTPUT_STEM}.csv", lambda t: Path(t).write_text(to_csv(rows, cols))
        ),
        "md": atomic_write(
            root / f"{OUTPUT_STEM}.md", lambda t: Path(t).write_text(to_markdown(rows, md_cols))
        ),
    }
    chosen = pick_metric(rows, metric)
    if chosen is not None and any("nfe" in r for r in rows):
        png = plot_rows(rows, chosen, root / f"{OUTPUT_STEM}.png", group)
        if png is not None:
            out["png"] = png
    return out
