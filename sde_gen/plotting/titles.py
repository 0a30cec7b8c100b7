"""Figure titles that say which run a PNG shows: solver, steps, weighting and each metric with
its Monte Carlo floor, read from a run's summary (or a sweep's rows of summaries)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SIGNED_METRICS", "run_title", "sweep_title", "metric_text"]

SIGNED_METRICS = ("mmd2", "nll_gap")
"""Metrics whose estimator is ≈ 0 for exact samples and may be negative (unbiased MMD², NLL gap)."""


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def metric_text(run: Mapping[str, Any], metric: str) -> str | None:
    """``"mmd2 = -0.0556 ± 0.0643"`` (value ± ``<metric>_floor``, the Monte Carlo floor), or the
    value alone without a floor; None when the run has no finite ``metric``."""
    value = _number(run.get(metric))
    if value is None:
        return None
    floor = _number(run.get(f"{metric}_floor"))
    return f"{metric} = {value:.3g}" + ("" if floor is None else f" ± {floor:.2g}")


def _solver_text(solver: Any, steps: Any, nfe: Any, weighting: Any) -> str:
    parts = [] if solver is None else [f"solver {solver}"]
    if steps is not None:
        parts.append(f"steps {steps}")
    if nfe is not None:
        parts.append(f"NFE {nfe}")
    if weighting is not None:
        parts.append(f"weighting {weighting}")
    return ", ".join(parts)


def run_title(
    run: Mapping[str, Any], head: str | None = None, metrics: Sequence[str] = SIGNED_METRICS
) -> str:
    """Title of one run's figure from its summary: ``head``; the keys ``solver``, ``steps``,
    ``nfe``, ``weighting`` that the run has; then each of ``metrics`` it has as value ± floor.
    One line each, empty lines dropped."""
    line = _solver_text(run.get("solver"), run.get("steps"), run.get("nfe"), run.get("weighting"))
    scores = "; ".join(t for t in (metric_text(run, m) for m in metrics) if t is not None)
    return "\n".join(s for s in (head, line, scores) if s)


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> str | None:
    seen = sorted({r[key] for r in rows if r.get(key) is not None}, key=lambda v: (str(type(v)), v))
    return ", ".join(str(v) for v in seen) if seen else None


def sweep_title(rows: Sequence[Mapping[str, Any]], metric: str, floor: float | None) -> str:
    """Title of a sweep's metric-vs-NFE figure: the metric, the solvers, steps and weightings the
    rows cover, and the (mean) Monte Carlo floor ± ``floor`` when there is one."""
    head = f"{metric} vs NFE" + ("" if floor is None else f" (Monte Carlo floor ± {floor:.2g})")
    line = _solver_text(
        _values(rows, "solver"), _values(rows, "steps"), None, _values(rows, "weighting")
    )
    return "\n".join(s for s in (head, line) if s)
