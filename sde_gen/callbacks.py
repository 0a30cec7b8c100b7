"""Hydra callbacks of the command lines: ``sde-gen-collect`` at the end of every ``-m`` sweep, and
the ``latest`` link to the newest run folder.

Enabled in a primary config by
``hydra.callbacks.collect: {_target_: sde_gen.callbacks.CollectOnMultirunEnd}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["CollectOnMultirunEnd", "LinkLatest"]

log = logging.getLogger(__name__)


class CollectOnMultirunEnd(Callback):
    """Gather the sweep's ``summary.json`` files into ``summaries.{csv,md,png}`` in its sweep
    directory once every job has run; a failure to collect is logged, never raised, so that
    the jobs' own results stand."""

    def __init__(self, metric: str | None = None, group: str = "solver") -> None:
        self.metric = metric
        self.group = group

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sde_gen.collect import collect

        sweep_dir = str(config.hydra.sweep.dir)
        try:
            written = collect(sweep_dir, self.metric, self.group)
        except Exception as e:  # the jobs' results must survive a bad summary
            log.warning("sde-gen-collect %s: not collected: %s", sweep_dir, e)
            return
        log.info("sde-gen-collect: %s", ", ".join(str(p) for p in written.values()))


class LinkLatest(Callback):
    """Point ``run_link`` (``sweep_link`` for ``-m``) at the run's folder when that folder lies
    beside the link, e.g. ``outputs/train/latest -> 2026-11-29/08-00-00``. A run started with
    ``hydra.run.dir=outputs/train/latest`` (a resume) keeps the link on the same folder."""

    def __init__(self, run_link: str, sweep_link: str):
        self.run_link, self.sweep_link = Path(run_link), Path(sweep_link)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _link(self.run_link, Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _link(self.sweep_link, Path(config.hydra.sweep.dir))


def _link(link: Path, target: Path) -> None:
    target = target.resolve()
    home = link.parent.resolve()
    if home not in target.parents or (link.exists() and not link.is_symlink()):
        return
    tmp = link.parent / f".{link.name}.{os.getpid()}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, home), tmp)
        os.replace(tmp, link)
    except OSError as e:  # a link is a convenience: never fail the run for it
        log.warning("could not point %s at %s: %s", link, target, e)
