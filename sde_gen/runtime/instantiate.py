"""Objects from config nodes (Hydra's ``instantiate``), with any failure a ValueError naming the
config group."""

from __future__ import annotations

from typing import Any


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
