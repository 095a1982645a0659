"""Atomic file writes (results, figures, checkpoints): a temporary file in the target folder, then `os.replace`.

An interrupted run never leaves a half-written file: readers see the old file or the new one.
The file written has the permissions `open(path, "w")` would leave: an existing file keeps its
own, a new one gets `0o666` less the process umask.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

# O_NOFOLLOW: never write through a link planted at the temporary name; O_BINARY: Windows.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """Create a new, empty file in `path`'s folder; return its descriptor and path.

    Created with mode `0o666`, which the operating system reduces by the umask (and the folder's
    default ACL) exactly as for `open(path, "w")`; `tempfile.mkstemp` would give `0o600`.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def check_writable(path, *, name: str = "path") -> Path:
    """Check, before any work, that a file can be written at `path` (raises `ValueError`, naming `name`).

    `path` must not be a folder, and its nearest existing ancestor must be a folder in which a file
    can be created: a probe file is created there and removed (`os.access` answers yes to root
    everywhere, `/proc` included). Folders still missing are created later by the writer.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a directory; name a file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name} {str(path)!r}: {str(parent)!r} is not a directory")
    try:
        fd, probe = _temporary_beside(parent / ".passk-probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{name} {str(path)!r}: cannot write in {str(parent)!r} ({err.strerror or err})") from None
    return path


def atomic_write(path, write: Callable[[Any], None], *, mode: str = "wb", encoding: str | None = None) -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, then rename it onto `path`.

    Args:
      path: the file to write; its folder is created if missing.
      write: called once with the open temporary file.
      mode: `"wb"` (bytes) or `"w"` (text).
      encoding: the text encoding for `mode="w"` (default: the locale's, as `open`).

    Returns:
      `path`, as a :class:`pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        try:
            handle = os.fdopen(fd, mode, encoding=encoding)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            try:
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) & 0o777)  # an existing file keeps its mode
            except FileNotFoundError:
                pass
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically, encoded with `encoding` (default UTF-8)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj, *, indent: int = 2) -> Path:
    """Write `obj` as JSON to `path` atomically (keys in insertion order)."""
    text = json.dumps(obj, indent=indent, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")
