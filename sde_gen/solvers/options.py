"""Checks of the solvers' own constructor options, written once (torchsde's habit: a contract
checked at the boundary with a message naming the value and what is allowed)."""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

__all__ = ["check_choice", "check_flag", "check_enum", "check_non_negative"]

E = TypeVar("E", bound=Enum)


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``allowed`` (bools rejected), else a ValueError naming it."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a ValueError naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be true or false")
    return value


def check_enum(name: str, value: Any, kind: type[E]) -> E:
    """``kind(value)``, else a ValueError naming ``value`` and ``kind``'s values."""
    try:
        return kind(value)
    except ValueError:
        choices = tuple(v.value for v in kind)
        raise ValueError(f"{name}={value!r} is not one of {choices}") from None


def check_non_negative(name: str, value: Any) -> float:
    """``value`` as a float if it is a number >= 0 (bools rejected), else a ValueError naming it."""
    if not (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a number >= 0")
    return float(value)
