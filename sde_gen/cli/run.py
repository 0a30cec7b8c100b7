"""The end every command line shares: its work in Hydra's output folder, the process group
closed whatever happens, and the summary's one line logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from sde_gen.runtime.distributed import close_world

__all__ = ["run_in_output_dir"]

Summary = dict[str, Any]


def run_in_output_dir(
    work: Callable[[Any, Path], Summary | None],
    summary_line: Callable[[Summary, Path], str],
    log: logging.Logger,
) -> None:
    """``work(hydra_config, out_dir)`` in the run's output folder, then ``close_world()`` (also
    on an error); a returned summary is logged as ``summary_line(summary, out_dir)``."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir).resolve()
    try:
        summary = work(hc, out_dir)
    finally:
        close_world()
    if summary is not None:
        log.info(summary_line(summary, out_dir))
