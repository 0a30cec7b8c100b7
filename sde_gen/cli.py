"""What every ``sde-gen-*`` command shares: a user error is one line ``error: <message>`` on stderr
and exit status 2 (the full traceback with ``HYDRA_FULL_ERROR=1``); ``--help`` lists the config
groups the command uses with their options.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["run_cli", "user_errors", "one_line", "group_options", "USER_ERRORS"]

USER_ERRORS = (ValueError, OmegaConfBaseException, HydraException)
"""Errors that a config value, an override or an input file causes: reported in one line."""


def _omegaconf_line(e: OmegaConfBaseException) -> str:
    msg = str(getattr(e, "msg", None) or e).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"{key}: {msg}" if key else msg


def one_line(e: BaseException) -> str:
    """The message of a user error on one line (an OmegaConf cause keeps its key)."""
    if isinstance(e, OmegaConfBaseException):
        return _omegaconf_line(e)
    text = " ".join(str(e).split()).split(" Config search path:")[0]
    cause = e.__cause__
    if isinstance(e, HydraException) and isinstance(cause, OmegaConfBaseException):
        text = f"{text.rstrip('.:')}: {_omegaconf_line(cause)}"
    return text or type(e).__name__


def group_options(*groups: str) -> str:
    """``--help`` text: each config group of ``sde_gen/conf`` with its options."""
    root = files("sde_gen.conf")
    lines = []
    for group in groups:
        folder = root.joinpath(group)
        names = sorted(
            p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")
        )
        lines.append(f"  {group + ':':<22}{', '.join(names)}")
    return "\n".join(lines)


def register_resolvers() -> None:
    """``${sde_gen_groups:a,b}`` in the help templates (idempotent)."""
    OmegaConf.register_new_resolver("sde_gen_groups", group_options, replace=True)


ONE_LINE_ENV = "SDE_GEN_ONE_LINE_ERRORS"
"""Set by :func:`run_cli` while it runs, so that :func:`user_errors` inside the job knows."""


def _exit_with(e: BaseException) -> None:
    sys.stderr.write(f"error: {one_line(e)}\n")
    sys.exit(2)


def run_cli(hydra_main: Callable[[], Any]) -> Any:
    """Run a ``@hydra.main`` function; a user error becomes one line and exit status 2."""
    from sde_gen.settings import register_configs

    register_configs()
    register_resolvers()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return hydra_main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's print
    os.environ[ONE_LINE_ENV] = "1"
    try:
        return hydra_main()
    except USER_ERRORS as e:
        _exit_with(e)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.pop(ONE_LINE_ENV, None)


def user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Decorate a Hydra task: under :func:`run_cli` a user error inside the job exits at once with
    one line (before Hydra adds its own lines); elsewhere the exception propagates."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except USER_ERRORS as e:
            if os.environ.get(ONE_LINE_ENV) != "1":
                raise
            _exit_with(e)

    return wrapped
