"""One owner a run folder: its lock, the fresh-run guard and the resume check.

While a run lives it holds the folder's lock (``.run.lock``); a fresh run is refused in a folder
that holds an earlier run (metrics, summary or checkpoints; Hydra's own ``.hydra/`` and
``<job>.log`` do not count); a resume must continue the newest checkpoint of the folder it writes
into (an older one is refused: resume it into a new folder instead). Under torchrun only rank 0
owns the folder. The other commands (sampling, evaluation, fit-grid, a sweep) follow the same
rule through :func:`own_output_folder`: the lock for the whole run, and no fresh run into a
folder that already holds their results.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sde_gen.runtime.files import (
    SUMMARY_FILE,
    FolderLockedError,
    check_writable,
    lock_folder,
    remove_orphans,
)
from sde_gen.training import checkpoint as ckpt
from sde_gen.training.report import CSV_FILE, METRICS_FILE, TENSORBOARD_DIR

log = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "RunFolderError", "RunFolder", "check_run_folder", "own_output_folder"]

RUN_FILES = (METRICS_FILE, CSV_FILE, TENSORBOARD_DIR, SUMMARY_FILE, "loss.png", "samples.png")
"""Files whose presence means that a folder already holds a training run."""


class RunFolderError(ValueError):
    """The run folder belongs to another run, or the resume would overwrite later checkpoints."""


class RunFolder:
    """The run folder ``out_dir`` and its checkpoint folder; ``checkpoint_key`` names the setting
    that moved the checkpoints elsewhere (for messages), empty when they live in the run folder."""

    def __init__(self, out_dir: Path, checkpoint_dir: Path, checkpoint_key: str = ""):
        self.out_dir, self.checkpoint_dir, self.checkpoint_key = (
            out_dir,
            checkpoint_dir,
            checkpoint_key,
        )
        self._locks: dict[Path, Any] = {}  # folder -> its held lock

    def lock(self) -> None:
        """Hold the lock of the run folder (and of a checkpoint folder outside it) that exists."""
        folders, own = [self.out_dir], self.checkpoint_dir.resolve()
        if own != self.out_dir.resolve() and self.out_dir.resolve() not in own.parents:
            folders.append(self.checkpoint_dir)
        for folder in folders:
            if folder.is_dir() and folder.resolve() not in self._locks:
                self._locks[folder.resolve()] = lock_folder(folder)

    def claim(self, resume: Path | None) -> None:
        """Preflight the folders, take their locks, check ownership, clear killed writes."""
        check_run_folder(self.out_dir, self.checkpoint_dir, resume)  # before creating anything
        check_writable(self.out_dir, "run folder")
        check_writable(self.checkpoint_dir, self.checkpoint_key or "checkpoint folder")
        self.lock()
        check_run_folder(self.out_dir, self.checkpoint_dir, resume)  # again, under the lock
        removed = remove_orphans(self.checkpoint_dir) + remove_orphans(self.out_dir)
        if removed:
            names = ", ".join(p.name for p in removed[:3]) + (" …" if len(removed) > 3 else "")
            log.warning("removed %d unfinished file(s) of killed writes: %s", len(removed), names)

    def earlier_checkpoints(self, resume: Path | None) -> list[Path]:
        """The checkpoints of the earlier runs a resume continues in place, oldest first: the
        regular ``step_*.pt`` files of the checkpoint folder up to ``resume`` when ``resume`` lies
        there (:meth:`claim` checked that it is the newest); none for a fresh run or a resume
        from elsewhere. Pruning counts them, so ``keep_checkpoints`` bounds the folder."""
        if resume is None or resume.resolve().parent != self.checkpoint_dir.resolve():
            return []
        saved = ckpt.list_checkpoints(self.checkpoint_dir)
        same = [k for k, p in enumerate(saved) if p.resolve() == resume.resolve()]
        upto = saved[: same[0] + 1] if same else []
        return [p for p in upto if p.is_file() and not p.is_symlink()]

    def release(self) -> None:
        """Give every held lock back."""
        for held in self._locks.values():
            held.release()
        self._locks = {}


def check_run_folder(out_dir: Path, checkpoint_dir: Path, resume: Path | None) -> None:
    """One run a folder: a fresh run (``resume`` None) needs a folder without an earlier run
    (``RUN_FILES`` or checkpoints); a resume must continue the newest checkpoint of
    ``checkpoint_dir``, or write into a folder of its own. Otherwise a :class:`RunFolderError`."""
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    saved = ckpt.list_checkpoints(checkpoint_dir)
    if saved:
        found.append(f"{len(saved)} checkpoint(s) in {str(checkpoint_dir)!r}")
    if not found:
        return
    where = f"run folder {str(out_dir)!r} already holds a run ({', '.join(found)})"
    if resume is None:
        raise RunFolderError(
            f"{where}: continue it with trainer.resume=latest, or start a new folder "
            "(hydra.run.dir=<new folder>)"
        )
    same = [p for p in saved if p.resolve() == resume.resolve()]
    if same and same[0] == saved[-1]:
        return
    if same:
        raise RunFolderError(
            f"trainer.resume={str(resume)!r} is not the newest checkpoint of "
            f"{str(checkpoint_dir)!r} (newest: {saved[-1].name}); resuming it there would "
            "replace later checkpoints. Resume it into a new folder (leave hydra.run.dir unset), "
            "or continue the newest with trainer.resume=latest"
        )
    raise RunFolderError(
        f"{where}, not the run of trainer.resume={str(resume)!r}: resume it into a new folder "
        "(leave hydra.run.dir unset)"
    )


def own_output_folder(folder: Path, results: tuple[str, ...], what: str, key: str) -> Any:
    """Take ``folder``'s lock (held by another run: :class:`FolderLockedError`) and return it;
    a folder in which a glob pattern of ``results`` matches holds an earlier run's results: a
    :class:`RunFolderError` naming the folder, what it holds and ``key`` (the setting that picks
    another folder). Nothing in the folder is touched but its lock and killed writes."""
    check_writable(folder, what)
    try:
        held = lock_folder(folder, key)
    except FolderLockedError as e:
        raise FolderLockedError(str(e).replace("run folder", what, 1)) from None
    found = sorted({str(p.relative_to(folder)) for pat in results for p in folder.glob(pat)})
    if found:
        held.release()
        listed = ", ".join(found[:4]) + (" …" if len(found) > 4 else "")
        raise RunFolderError(
            f"{what} {str(folder)!r} already holds the results of an earlier run ({listed}): "
            f"pick a new folder ({key}=<new folder>)"
        )
    remove_orphans(folder)
    return held
