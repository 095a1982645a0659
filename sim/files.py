"""Atomic file writes (results, figures, checkpoints): a temporary file in the target folder, then `os.replace`.

An interrupted run never leaves a half-written file: readers see the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path, write: Callable[[Any], None], *, mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path, obj, *, indent: int = 2) -> Path:
    """Write `obj` as JSON to `path` atomically (keys in insertion order)."""
    text = json.dumps(obj, indent=indent, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")
