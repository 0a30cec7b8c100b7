"""Progress bars (tqdm) for long work."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def progress_bar(enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar: live on a terminal; written to a file or job log at most every 30 s."""
    if enabled and not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(disable=not enabled, **kwargs)


__all__ = ["progress_bar"]
