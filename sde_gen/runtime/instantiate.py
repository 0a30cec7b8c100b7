"""Objects from config nodes (Hydra's ``instantiate``), with any failure a ValueError naming the
config group; the objects of a whole config group, found from its yaml files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
