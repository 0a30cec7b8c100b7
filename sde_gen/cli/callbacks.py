"""Hydra callbacks of the command lines: ``sde-gen-collect`` at the end of every ``-m`` sweep, the
``latest`` link to the newest run folder, the guard that refuses a training run in a folder
another run owns before Hydra writes its ``.hydra/`` files there, and the owners of the run
folder of the other commands and of every sweep folder (its lock for the whole run or sweep).

Enabled in a primary config by
``hydra.callbacks.collect: {_target_: sde_gen.cli.callbacks.CollectOnMultirunEnd}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["CollectOnMultirunEnd", "LinkLatest", "GuardRunFolder", "OwnRunFolder", "OwnSweepFolder"]

SWEEP_RESULTS = ("multirun.yaml", "summaries.csv", "*/summary.json")
"""What an earlier sweep leaves in its sweep folder (Hydra's ``multirun.yaml`` from its start)."""

log = logging.getLogger(__name__)


class CollectOnMultirunEnd(Callback):
    """Gather the sweep's ``summary.json`` files into ``summaries.{csv,md,png}`` in its sweep
    directory once every job has run; a failure to collect is logged, never raised, so that
    the jobs' own results stand."""

    def __init__(self, metric: str | None = None, group: str = "solver") -> None:
        self.metric = metric
        self.group = group

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sde_gen.cli.summaries import collect

        sweep_dir = str(config.hydra.sweep.dir)
        try:  # the sweep's OwnSweepFolder (listed before, so ended after) holds the folder's lock
            written = collect(sweep_dir, self.metric, self.group, lock=False)
        except Exception as e:  # the jobs' results must survive a bad summary
            log.warning("sde-gen-collect %s: not collected: %s", sweep_dir, e)
            return
        log.info("sde-gen-collect: %s", ", ".join(str(p) for p in written.values()))


class LinkLatest(Callback):
    """Point ``run_link`` (``sweep_link`` for ``-m``) at the run's folder when that folder lies
    beside the link, e.g. ``outputs/train/latest -> 2026-11-29/08-00-00``, once the run (every
    job of the sweep) has succeeded: a failed or refused run leaves the link on the last good
    one. A run started with ``hydra.run.dir=outputs/train/latest`` (a resume) keeps the link on
    the same folder."""

    def __init__(self, run_link: str, sweep_link: str):
        self.run_link, self.sweep_link = Path(run_link), Path(sweep_link)

    def on_run_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if _succeeded(job_return):
            _link(self.run_link, Path(config.hydra.run.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _link(self.sweep_link, Path(config.hydra.sweep.dir))  # reached only when every job ran


def _succeeded(job_return: Any) -> bool:
    from hydra.core.utils import JobStatus

    return job_return is not None and job_return.status == JobStatus.COMPLETED


class GuardRunFolder(Callback):
    """Before Hydra writes ``.hydra/`` into the run folder, refuse (one line, exit status 2) a
    training run that the trainer would refuse: a fresh run in a folder holding an earlier run, a
    resume of a checkpoint other than the folder's newest, or a folder whose lock is held. Hydra
    would otherwise overwrite the earlier run's ``.hydra/overrides.yaml`` first. List it before
    ``latest`` so that a refused run leaves the link alone."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from sde_gen.cli.errors import exit_user_error

        try:
            self.check(config)
        except ValueError as e:  # Hydra would only warn: stop here, before it writes .hydra/
            exit_user_error(e)

    @staticmethod
    def check(config: DictConfig) -> None:
        """Raise the trainer's RunFolderError / FolderLockedError for the run ``config`` starts."""
        from sde_gen.runtime.files import lock_folder
        from sde_gen.training.checkpoint import latest_checkpoint
        from sde_gen.training.trainer import check_run_folder

        out_dir = Path(config.hydra.run.dir)
        trainer = config.get("trainer")
        if trainer is None or not out_dir.is_dir():
            return
        lock_folder(out_dir).release()  # in use by a live run: refused, naming the lock
        ckpt_dir = Path(trainer.checkpoint_dir) if trainer.get("checkpoint_dir") else None
        ckpt_dir = ckpt_dir or out_dir / "checkpoints"
        resume = trainer.get("resume")
        if resume is not None:
            auto = str(resume) == "auto"
            newest = str(resume) in ("latest", "auto")
            resume = latest_checkpoint(ckpt_dir) if newest else Path(resume)
            if resume is None and auto:
                pass  # no checkpoint yet: a fresh run, checked as one
            elif resume is None or not resume.is_file():
                return  # the trainer names the missing checkpoint
        check_run_folder(out_dir, ckpt_dir, resume)


class _OwnFolder(Callback):
    """Hold a folder's lock from the start of a run (sweep) to its end; refuse (one line, exit
    status 2) a folder in use or one holding the results of an earlier run. Only rank 0 owns."""

    def __init__(self) -> None:
        self._held: Any = None

    def _claim(self, folder: Path, results: tuple[str, ...], what: str, key: str) -> None:
        from sde_gen.cli.errors import exit_user_error
        from sde_gen.training.run_folder import own_output_folder

        if not _is_rank_zero():
            return
        try:
            self._held = own_output_folder(folder, results, what, key)
        except ValueError as e:  # Hydra would only warn: stop before it writes anything
            exit_user_error(e)

    def __getstate__(self) -> dict[str, Any]:
        """A launcher that pickles the callbacks (submitit) gets them without the held lock,
        which stays with the process that took it."""
        return {**self.__dict__, "_held": None}

    def _release(self) -> None:
        if self._held is not None:
            self._held.release()
        self._held = None


class OwnRunFolder(_OwnFolder):
    """The run folder of ``sde-gen-sample``/``-eval``/``-fit-grid`` has one owner: the lock for
    the run, and no fresh run where a glob pattern of ``results`` matches (e.g. summary.json)."""

    def __init__(self, results: list[str]) -> None:
        super().__init__()
        self.results = tuple(results)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(Path(config.hydra.run.dir), self.results, "run folder", "hydra.run.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release()


class OwnSweepFolder(_OwnFolder):
    """A ``-m`` sweep folder has one owner: the lock for the sweep (two sweeps into one
    ``hydra.sweep.dir`` never mix their jobs' files), and, when ``fresh``, no sweep into a folder
    that holds an earlier sweep (``SWEEP_RESULTS``). Training sweeps pass ``fresh=false``: a
    resubmitted sweep continues its jobs (``trainer.resume=auto``), each trainer guarding its own
    folder. List it before ``collect`` and ``latest``."""

    def __init__(self, fresh: bool = True) -> None:
        super().__init__()
        self.fresh = fresh

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        results = SWEEP_RESULTS if self.fresh else ()
        self._claim(folder, results, "sweep folder", "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release()


def _is_rank_zero() -> bool:
    """Under torchrun/srun only rank 0 owns the run folder and its link."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def _link(link: Path, target: Path) -> None:
    if not _is_rank_zero():
        return
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
