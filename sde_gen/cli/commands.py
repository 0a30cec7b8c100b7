"""The package's command lines: each console script (``sde-gen-train`` …, pyproject's
``[project.scripts]``) and the module that runs it, read from the installed entry points, so that
a tool running a documented command as ``python -m <module>`` knows every command without a copy
of the list."""

from __future__ import annotations

from importlib.metadata import entry_points

__all__ = ["command_modules"]


def command_modules() -> dict[str, str]:
    """{console script name: its module} for the scripts whose entry point lies in ``sde_gen``."""
    return {
        ep.name: ep.module
        for ep in entry_points(group="console_scripts")
        if ep.module.split(".")[0] == "sde_gen"
    }
