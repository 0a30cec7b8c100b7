"""What every ``sde-gen-*`` command shares: a user error (a bad value, an input file, a folder
that cannot be written) is one line ``error: <message>`` on stderr and exit status 2 (the full
traceback with ``HYDRA_FULL_ERROR=1``); ``--help`` lists the config groups the command uses with
their options.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["run_cli", "user_errors", "one_line", "is_user_error", "group_options", "USER_ERRORS"]

USER_ERRORS = (ValueError, OmegaConfBaseException, HydraException)
"""Errors that a config value, an override or an input file causes: reported in one line."""


def _omegaconf_line(e: OmegaConfBaseException) -> str:
    msg = str(getattr(e, "msg", None) or e).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"{key}: {msg}" if key else msg


def is_user_error(e: BaseException) -> bool:
    """A config value, an override, an input file or the file system (an OSError naming a file:
    a folder that cannot be written, a missing file) caused ``e``; anything else is a bug."""
    return isinstance(e, USER_ERRORS) or (isinstance(e, OSError) and e.filename is not None)


_APPEND_HINT = re.compile(r"Could not override '([^']+)'\. To append to your config use \+\S+: ")


def _unknown_key(text: str) -> str:
    """Hydra's advice to add an unknown key with ``+key=`` (which a typed config or a solver then
    rejects anyway) becomes the plain fact: the config has no such key."""

    def fact(m: re.Match) -> str:
        key = m.group(1)
        why = "an adaptive solver has no steps, sde-gen-sample's steps=N sets fixed-step ones'; "
        return f"unknown key '{key}' ({why if key == 'solver.steps' else ''}keys: --cfg job): "

    return _APPEND_HINT.sub(fact, text)


def one_line(e: BaseException) -> str:
    """The message of a user error on one line (an OmegaConf cause keeps its key)."""
    if isinstance(e, OmegaConfBaseException):
        return _omegaconf_line(e)
    if isinstance(e, OSError) and not isinstance(e, USER_ERRORS) and e.filename is not None:
        return f"{e.strerror or type(e).__name__}: {str(e.filename)!r}"
    text = " ".join(str(e).split()).split(" Config search path:")[0]
    cause = e.__cause__
    if isinstance(e, HydraException) and isinstance(cause, OmegaConfBaseException):
        text = f"{text.rstrip('.:')}: {_omegaconf_line(cause)}"
    return _unknown_key(text) or type(e).__name__


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


def _exit_with(e: BaseException, hint: str = "") -> None:
    sys.stderr.write(f"error: {one_line(e)}{hint}\n")
    sys.exit(2)


def exit_user_error(e: BaseException) -> None:
    """Stop the process for user error ``e`` where raising cannot (Hydra turns a callback's
    exception into a warning): one line under :func:`run_cli`, else the traceback; status 2."""
    if os.environ.get(ONE_LINE_ENV) == "1":
        _exit_with(e)
    traceback.print_exception(e)
    sys.exit(2)


def run_cli(hydra_main: Callable[[], Any]) -> Any:
    """Run a ``@hydra.main`` function; a user error becomes one line and exit status 2."""
    from sde_gen.cli.settings import register_configs

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
    except OSError as e:  # not inside the task (user_errors): Hydra making the run folder
        if e.filename is None:
            raise
        _exit_with(
            OSError(e.errno, f"cannot write the run folder ({e.strerror})", e.filename),
            "; pick a writable one with hydra.run.dir=<folder> (hydra.sweep.dir= with -m)",
        )
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
        except Exception as e:
            if os.environ.get(ONE_LINE_ENV) != "1" or not is_user_error(e):
                raise
            _exit_with(e)

    return wrapped
