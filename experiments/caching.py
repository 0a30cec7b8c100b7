"""The experiments' caches, keyed once: by every setting that changes the cached numbers and by
the versions of the code that computed them (sde_gen's and torch's).

Every cache record carries its key and what went into it (``stamp``). A record whose key differs
from the present one is recomputed with one line saying which settings or versions changed; a
record without a key (made before keys existed) is recomputed too. Old numbers are never returned
under new settings.

    result = cached_json(path, {"steps": 2500, "seed": 0}, compute)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sde_gen.runtime.files import atomic_write

KEY_FILE = "cache_key.json"
"""The stamp of a cached folder (a trained arm): its key, settings and versions."""


def versions() -> dict[str, str]:
    """The versions a cached number depends on besides its settings."""
    return {"sde_gen": metadata.version("sde_gen"), "torch": torch.__version__}


def plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON values (paths, tuples and other objects by their ``str``)."""
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def cache_key(settings: Mapping[str, Any], versions: Mapping[str, str] | None = None) -> str:
    """SHA-256 (16 hex digits) of the settings and the versions (the installed ones by default)."""
    record = {"settings": plain(settings), "versions": dict(versions or globals()["versions"]())}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def stamp(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a cache record stores beside its result: key, settings, versions."""
    return {"key": cache_key(settings), "settings": plain(settings), "versions": versions()}


def stale_reason(stored: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> str | None:
    """None when ``stored`` (a record's stamp) has the present key; else why it is stale."""
    now = stamp(settings)
    if stored is None or "key" not in stored:
        return "no cache key stored (made before keys existed)"
    if stored["key"] == now["key"]:
        return None
    old_settings, old_versions = stored.get("settings", {}), stored.get("versions", {})
    changed = [k for k in sorted({*old_settings, *now["settings"]})
               if old_settings.get(k) != now["settings"].get(k)]  # fmt: skip
    moved = [f"{k} {old_versions.get(k)} → {v}" for k, v in now["versions"].items()
             if old_versions.get(k) != v]  # fmt: skip
    parts = ([f"settings changed: {', '.join(changed)}"] if changed else []) + (
        [f"versions changed: {', '.join(moved)}"] if moved else []
    )
    return "; ".join(parts) or f"key {stored['key']} ≠ {now['key']}"


def is_current(record: Any, settings: Mapping[str, Any], path: Path) -> bool:
    """Whether ``record`` (a dict loaded from ``path``) holds a ``"stamp"`` with the present key;
    if not, one line saying why ``path`` is recomputed."""
    reason = stale_reason(record.get("stamp") if isinstance(record, dict) else None, settings)
    if reason is not None:
        print(f"recomputing {path}: {reason}", flush=True)
    return reason is None


def file_digest(paths: list[Path]) -> str:
    """SHA-256 (16 hex digits) of the contents of ``paths``, in order: a cached number's input
    files (a checkpoint, a model's weights), by what they hold rather than where they lie."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, record: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))


def _read_torch(path: Path) -> Any:
    return torch.load(path, weights_only=False)


def _write_torch(path: Path, record: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(record, tmp))


def _cached(path: Path, settings: Mapping[str, Any], compute: Callable[[], Any], read, write):
    if path.is_file():
        record = read(path)
        if is_current(record, settings, path):
            return record["result"]
    result = compute()
    write(path, {"stamp": stamp(settings), "result": result})
    return result


def cached_json(path: Path, settings: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``, or the result stored at ``path`` (JSON) under the same key."""
    return _cached(Path(path), settings, compute, _read_json, _write_json)


def cached_torch(path: Path, settings: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``, or the result stored at ``path`` (``torch.save``) under the same key."""
    return _cached(Path(path), settings, compute, _read_torch, _write_torch)


def folder_is_current(folder: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``folder`` (a cached run) was made under the present key. A folder made under
    another key (or none) is moved aside to ``<folder>.stale-<time>``, kept, with a line saying
    why, so that the run starts afresh; the present stamp is then written into a new folder."""
    folder = Path(folder)
    stamp_file = folder / KEY_FILE
    if not folder.exists() or not any(folder.iterdir()):
        _write_json(stamp_file, stamp(settings))
        return False
    stored = _read_json(stamp_file) if stamp_file.is_file() else None
    reason = stale_reason(stored, settings)
    if reason is None:
        return True
    aside = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(folder), str(aside))
    print(f"recomputing {folder}: {reason}; the old run is kept in {aside}", flush=True)
    _write_json(stamp_file, stamp(settings))
    return False
