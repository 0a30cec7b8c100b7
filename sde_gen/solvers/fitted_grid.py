"""A fitted step schedule: a grid of given times (``sde-gen-fit-grid`` writes one), saved to and
loaded from a small plain YAML file (``solver/grid=fitted solver.grid.path=<file>``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from sde_gen.runtime.files import read_regular_text
from sde_gen.sde import SDE
from sde_gen.solvers.grids import Grid

__all__ = ["FittedGrid"]

#: a grid file holds a few hundred numbers; a larger one is not one ``FittedGrid.save`` wrote
MAX_GRID_BYTES = 2**20


class FittedGrid(Grid):
    """A grid of given times T = t_0 > t_1 > … > t_N (``times``); ``info`` records how it was
    fitted (solver, steps, sde, pilot and held-out errors, cost). Called for a solver of ``steps``
    = N on an SDE whose T is t_0; the last time becomes the solver's t_min."""

    standalone = False  # fitted for one solver and step count

    def __init__(self, times: Sequence[float], info: dict[str, Any] | None = None):
        values = [float(t) for t in times]
        if len(values) < 2:
            raise ValueError(f"times={values} needs at least 2 entries (T and t_min)")
        if any(not math.isfinite(t) for t in values) or any(
            b >= a for a, b in zip(values, values[1:], strict=False)
        ):
            raise ValueError(f"times={values} must be finite and strictly decreasing")
        if values[-1] < 0:
            raise ValueError(f"times={values} end at {values[-1]} < 0: the last time is t_min ≥ 0")
        self.knots = values
        self.info = dict(info or {})

    @property
    def steps(self) -> int:
        return len(self.knots) - 1

    def __repr__(self) -> str:
        return f"FittedGrid(steps={self.steps}, times={[round(t, 6) for t in self.knots]})"

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        if len(u) != len(self.knots):
            raise ValueError(
                f"the fitted grid has {len(self.knots)} times (steps={self.steps}); the solver "
                f"asks for steps={len(u) - 1}: set solver.steps={self.steps}"
            )
        if abs(self.knots[0] - sde.T) > 1e-12 * max(1.0, abs(sde.T)):
            raise ValueError(
                f"the fitted grid starts at T={self.knots[0]}, the SDE {sde!r} has T={sde.T}"
            )
        if not self.knots[-2] > t_min:
            raise ValueError(f"t_min={t_min} must be below the last interior time {self.knots[-2]}")
        return torch.tensor(self.knots, dtype=torch.float64)

    def save(self, path: str | Path) -> Path:
        """Write ``times`` and ``info`` to a YAML file (floats written exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        node = OmegaConf.create({"times": self.knots, **self.info})
        path.write_text(OmegaConf.to_yaml(node))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FittedGrid:
        """Read a YAML file written by ``save`` (``solver/grid=fitted solver.grid.path=…``): a
        small regular UTF-8 file without anchors or aliases whose ``times`` are numbers; anything
        else is a ValueError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"grid path={str(path)!r} is not a file (write one: sde-gen-fit-grid)")
        data = _plain_yaml(path, read_regular_text(path, "grid file", MAX_GRID_BYTES))
        if not isinstance(data, dict) or not isinstance(data.get("times"), list):
            held = f"a {data}" if isinstance(data, str) else "no 'times' list"
            raise ValueError(f"grid path={str(path)!r} holds {held}, not a list of times")
        for i, t in enumerate(data["times"]):
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ValueError(f"grid file {str(path)!r}: times[{i}]={t!r} is not a number")
        info = {k: v for k, v in data.items() if k != "times"}
        try:
            return cls(data["times"], info)
        except ValueError as e:
            raise ValueError(f"grid file {str(path)!r}: {e}") from None


def _plain_yaml(path: Path, text: str) -> Any:
    """``text`` as containers (a top-level text or list: its kind, "str" or "list"); anchors
    and aliases (an alias bomb expands without bound) are refused, interpolations kept as text,
    a syntax error names ``path``."""
    import yaml

    kinds = {yaml.ScalarEvent: "str", yaml.SequenceStartEvent: "list"}
    try:
        root = None
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(
                    f"grid file {str(path)!r} uses YAML anchors or aliases (&, *): a fitted grid "
                    "is plain numbers (sde-gen-fit-grid writes none)"
                )
            root = root or (type(event) if isinstance(event, yaml.NodeEvent) else None)
        if root in kinds:
            return kinds[root]  # OmegaConf would read a lone string as a key
        return OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except (yaml.YAMLError, ValueError) as e:
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        line = " ".join(str(e).split())[:200]
        raise ValueError(f"grid file {str(path)!r} is not valid YAML: {line}") from None
