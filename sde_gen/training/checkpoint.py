"""Training checkpoints: atomic writes, safe loads (``weights_only``), RNG states, model rebuild.

A checkpoint is a plain dict of tensors and containers, so ``torch.load(weights_only=True)`` reads
it back: ``step``, ``model`` and ``ema`` state dicts, ``optimizer``, ``scheduler``, ``config`` (the
resolved Hydra config as a YAML string) and ``rng`` (every random stream as a uint8/int64 tensor).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sde_gen.runtime.files import atomic_write

FORMAT_VERSION = 1
CHECKPOINT_GLOB = "step_*.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
_REQUIRED = ("format", "step", "model", "ema", "optimizer", "scheduler", "config", "rng")


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``<directory>/step_<step:08d>.pt``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``directory`` ordered by step (oldest first); temp files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


# -- random streams ---------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random stream a run draws from, as tensors: torch CPU, CUDA, numpy, named ones."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore the streams saved by :func:`rng_state` (CUDA only when this machine has it)."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state["generators"]
    missing = sorted(set(generators) - set(saved))
    if missing:
        raise ValueError(f"checkpoint has no state for generator(s) {missing}")
    for name, g in generators.items():
        g.set_state(saved[name])


# -- save / load ------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename): never a half-written file."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; a corrupt or foreign file is a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # arbitrary bytes make the unpickler raise almost anything
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a dict")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is not an sde_gen checkpoint: lacks {missing}")
    if state["format"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format {state['format']}, expected {FORMAT_VERSION}"
        )
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint {str(path)!r} has step={step!r}: not an integer >= 0")
    check_finite_weights(state, path)
    return state


def check_finite_weights(state: dict[str, Any], path: str | os.PathLike) -> None:
    """A ValueError naming ``path`` when a floating tensor of the ``model`` or ``ema`` weights
    holds NaN or inf (training stops before it could write one: the file was made elsewhere)."""
    for part in ("model", "ema"):
        weights = state[part] if isinstance(state[part], dict) else {}
        floats = {k: v for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point()}
        bad = [k for k, v in floats.items() if not bool(torch.isfinite(v).all())]
        if bad:
            every = "all" if len(bad) == len(floats) else f"{len(bad)} of {len(floats)}"
            raise ValueError(
                f"checkpoint {str(path)!r} holds NaN/inf weights ({every} '{part}' tensors, "
                f"e.g. {bad[0]!r}): not a usable checkpoint; use an earlier one"
            )


def load_weights(
    module: nn.Module,
    weights: dict[str, torch.Tensor],
    path: str | os.PathLike,
    what: str = "model",
) -> None:
    """``module.load_state_dict(weights)`` with a ValueError naming the path and each mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        raise ValueError(f"checkpoint {str(path)!r} does not fit the {what}: " + "; ".join(parts))
    module.load_state_dict(weights)


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged network's weights from an ``AveragedModel`` state dict (drops n_averaged)."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


__all__ = [
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "ema_weights",
    "check_finite_weights",
]
