"""Objects from config nodes (Hydra's ``instantiate``), with any failure a ValueError naming the
config group; the objects of a whole config group, found from its yaml files; a network's size
checked against the memory before it is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: the package's config tree (``sde_gen/conf``)
CONF = Path(__file__).resolve().parents[1] / "conf"


def instantiate_group(group: str, node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``; any failure is a ValueError naming the group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        raise ValueError(f"config group '{group}' is invalid: {cause}") from e
    except (ValueError, TypeError) as e:
        raise ValueError(f"config group '{group}' is invalid: {e}") from e


def group_objects(group: str) -> dict[str, Any]:
    """Each option of config group ``group`` (``sde_gen/conf/<group>/*.yaml``) that needs no
    further value (no ``???``, no defaults list), instantiated, by option name: what a sweep
    over the group builds, so a new option is found without any table."""
    from omegaconf import OmegaConf

    folder = CONF / group
    if not folder.is_dir():
        raise ValueError(f"config group '{group}' has no folder {folder}")
    found: dict[str, Any] = {}
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.load(path)
        if "defaults" in node or OmegaConf.missing_keys(node):
            continue
        found[path.stem] = instantiate_group(group, node)
    return found


def check_parameter_memory(
    group: str, node: Any, device: torch.device, copies: int = 1, **kwargs: Any
) -> int:
    """The parameter count of the network ``node`` builds, counted on the meta device (no
    memory); a ValueError naming the group's integer keys (``model.hidden=1000000``) when
    ``copies`` of its parameters exceed the memory of ``device``. A node that cannot be built
    on the meta device is left to the real build (which names what is wrong): 0."""
    from hydra.utils import instantiate

    from sde_gen.runtime.resources import gib, memory_bytes

    try:
        with torch.device("meta"):
            net = instantiate(node, **kwargs)
        params = list(net.parameters())
    except Exception:  # noqa: BLE001 - the real build reports it
        return 0
    count = sum(p.numel() for p in params)
    need, have = copies * sum(p.numel() * p.element_size() for p in params), memory_bytes(device)
    if have is not None and need > have:
        sizes = [f"{group}.{k}={v}" for k, v in node.items() if type(v) is int and k != "_target_"]
        raise ValueError(
            f"{group} has {count:,} parameters ({', '.join(sizes) or node.get('_target_')}): "
            f"{copies} cop{'y' if copies == 1 else 'ies'} need about {gib(need)}, more than the "
            f"{gib(have)} of {device}; make it smaller"
        )
    return count


__all__ = ["instantiate_group", "group_objects", "check_parameter_memory"]
