"""A checkpoint's stored config is untrusted input: it may build only sde_gen's own objects.

``torch.load(weights_only=True)`` keeps a checkpoint from running code while it is read, but the
config it stores is instantiated afterwards, and Hydra's ``_target_`` can name any callable
(``builtins.open``, ``numpy.save``, ``os.makedirs`` …). ``stored_config`` parses the YAML and
refuses, naming the key and the value, anything but plain values and allow-listed targets:

* every ``_target_`` of a group lies in that group's modules (``ALLOWED``) and resolves to a class
  or function defined there (not a name those modules merely import, such as ``torch.save``);
* no other Hydra key (``_args_``, ``_partial_``, ``_recursive_``, ``_convert_``);
* no interpolation or resolver anywhere (``${oc.env:…}``): the trainer stores a resolved config;
* no missing value (``???``) in a group that is built.

``trained_data`` then builds the data set the checkpoint was trained on; when its file is gone it
falls back to the shape the checkpoint records (``data_info``), or names the file and the
``data.path`` override.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sde_gen.data.base import DataFileMissing, DataSource, ShapeOnly

__all__ = [
    "ALLOWED",
    "stored_config",
    "check_group",
    "check_target",
    "trained_data",
    "trained_shape",
]

ALLOWED: dict[str, tuple[str, ...]] = {
    "sde": ("sde_gen.sde",),
    "data": ("sde_gen.data",),
    "model": ("sde_gen.models", "sde_gen.networks.diffusers_folder"),
}
"""The modules (and their submodules) whose classes and functions each group may build."""

MOVED: dict[str, str] = {"sde_gen.ddpm.": "sde_gen.sde.ddpm."}
"""Modules that moved since checkpoints were written: old prefix → new, applied to a stored
``_target_`` before it is checked, so checkpoints of earlier versions still load."""

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in allowed)


def check_target(target: Any, allowed: tuple[str, ...], key: str) -> None:
    """ValueError naming ``key`` and ``target`` unless it is a class or function defined in one
    of the ``allowed`` modules. Only modules inside ``allowed`` are ever imported."""
    scope = ", ".join(m + ".*" for m in allowed)
    if not isinstance(target, str) or not _DOTTED.match(target):
        raise ValueError(f"{key}={target!r} is not a dotted name of a class or function")
    module_name, _, attr = target.rpartition(".")
    if not _within(module_name, allowed):
        raise ValueError(f"{key}={target!r} is not allowed: this group may only build {scope}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"{key}={target!r} is not allowed: no module {module_name!r}") from None
    obj = getattr(module, attr, None)
    defined_here = (inspect.isclass(obj) or inspect.isfunction(obj)) and _within(
        getattr(obj, "__module__", "") or "", allowed
    )
    if not defined_here:
        raise ValueError(
            f"{key}={target!r} is not allowed: not a class or function defined in {scope}"
        )


def check_group(node: Any, group: str, key: str | None = None) -> None:
    """Walk a group's node: a ``_target_`` on top and in every nested mapping that has one must
    pass ``check_target`` for the group; other Hydra keys and ``???`` are refused."""
    allowed, key = ALLOWED[group], group if key is None else key
    if isinstance(node, dict):
        if key == group and "_target_" not in node:
            raise ValueError(f"stored config group {group!r} has no _target_")
        for k, v in node.items():
            sub = f"{key}.{k}"
            if k == "_target_":
                check_target(v, allowed, sub)
            elif isinstance(k, str) and k.startswith("_") and k.endswith("_"):
                raise ValueError(f"{sub} is not allowed in a stored config (only _target_ is)")
            else:
                check_group(v, group, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_group(v, group, f"{key}[{i}]")
    elif key == group:
        raise ValueError(f"stored config group {group!r} is a {type(node).__name__}, not a mapping")
    elif node == "???":
        raise ValueError(f"stored config value {key} is missing (???)")


def _moved(node: Any) -> Any:
    """``node`` with every ``_target_`` under a moved module renamed (``MOVED``)."""
    if isinstance(node, dict):
        return {k: _renamed(v) if k == "_target_" else _moved(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_moved(v) for v in node]
    return node


def _renamed(target: Any) -> Any:
    for old, new in MOVED.items():
        if isinstance(target, str) and target.startswith(old):
            return new + target[len(old) :]
    return target


def _check_plain(node: Any, key: str) -> None:
    """No interpolation or resolver call anywhere (``${…}``): nothing is looked up on load."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_plain(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_plain(v, f"{key}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ValueError(
            f"stored config value {key}={node!r} is an interpolation; a checkpoint's config "
            "must hold plain values"
        )


def stored_config(text: Any, groups: tuple[str, ...] = ("sde", "data", "model")) -> DictConfig:
    """The config stored in a checkpoint, parsed and checked (see the module docstring) before
    any of ``groups`` is instantiated; a ValueError names the offending key and value."""
    if not isinstance(text, str):
        raise ValueError(f"stored config is a {type(text).__name__}, not a YAML string")
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:  # noqa: BLE001 - any parse error means a foreign config string
        raise ValueError(f"stored config is unreadable: {e}") from e
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"stored config is a {type(cfg).__name__}, not a mapping")
    plain = _moved(OmegaConf.to_container(cfg, resolve=False))
    _check_plain(plain, "")
    for group in groups:
        if group not in plain:
            raise ValueError(f"stored config has no '{group}' group")
        check_group(plain[group], group)
    return OmegaConf.create(plain)


# -- the trained data set ---------------------------------------------------------------------
def _missing_file(error: BaseException) -> DataFileMissing | None:
    """The DataFileMissing behind ``error`` (Hydra wraps what a constructor raises), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DataFileMissing):
            return seen
        seen = seen.__cause__
    return None


def _data_info(info: Any) -> tuple[tuple[int, ...], int | None] | None:
    """(shape, num_bins) from a checkpoint's optional ``data_info`` entry, when well formed."""
    if not isinstance(info, dict) or not isinstance(info.get("shape"), (list, tuple)):
        return None
    shape, bins = info["shape"], info.get("num_bins")
    if not all(isinstance(s, int) and s >= 1 for s in shape) or not (
        bins is None or isinstance(bins, int)
    ):
        return None
    return tuple(shape), bins


def trained_data(node: DictConfig, info: Any = None) -> DataSource:
    """The data set a checkpoint was trained on, built from its (checked) ``data`` node.

    If its file is gone, a ``ShapeOnly`` source from the checkpoint's ``data_info``
    ({shape, num_bins}) when it has one, so that sampling still works; otherwise a ValueError
    naming the file and the ``data=npz data.path=<file>`` override."""
    from sde_gen.runtime.instantiate import instantiate_group

    try:
        return instantiate_group("data", node)
    except ValueError as e:
        missing = _missing_file(e)
        if missing is None:
            raise
        hint = "give the data with data=npz data.path=<file>"
        known = _data_info(info)
        if known is None:
            raise ValueError(
                f"the training data file {missing.path!r} does not exist; {hint} (sampling "
                "needs only its shape, evaluation its images)"
            ) from e
        why = f"the training data file {missing.path!r} does not exist; {hint}"
        return ShapeOnly(known[0], known[1], why)


def trained_shape(node: DictConfig, info: Any = None) -> tuple[int, ...] | None:
    """The per-sample shape a checkpoint was trained on, or None when it cannot be known (the
    data set's file is gone or unreadable and the checkpoint has no ``data_info``)."""
    known = _data_info(info)
    if known is not None:
        return known[0]
    try:
        return tuple(int(s) for s in trained_data(node).shape)
    except ValueError:
        return None
