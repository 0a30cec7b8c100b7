"""Objects from config nodes (Hydra's ``instantiate``), with any failure a ValueError naming the
config group; a network's size checked against the memory before it is built."""

from __future__ import annotations

from typing import Any

import torch


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


__all__ = ["instantiate_group", "check_parameter_memory"]
