"""A persistent compilation cache for the `passk` command and the notebooks.

JAX compiles every jitted program on first use in a process; on 2 CPU cores that is most of the
few seconds `passk toy` or `passk diagnose` take. With the cache on, XLA's compiled programs are
written to a folder and read back by the next process that traces the same program on the same
shapes, so only tracing and lowering are paid again.

Where: ``$PASSK_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/passk-interference/jax``, else
``~/.cache/passk-interference/jax``; inside it one subfolder per CPU kind (machine and the hash of
its instruction-set flags), because XLA builds CPU code for the host's instruction set and a
folder shared between different machines must not hand one's code to the other.
Off: ``PASSK_NO_COMPILE_CACHE=1`` (any value other than empty or ``0``).

The folder is trusted: JAX runs what it reads from it (do not point it at a folder others can
write to). Delete it at any time to reclaim space; it is rebuilt on the next run.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

__all__ = ["CACHE_DIR_ENV", "DISABLE_ENV", "cache_dir", "cpu_tag", "enable_compile_cache"]

CACHE_DIR_ENV = "PASSK_CACHE_DIR"
DISABLE_ENV = "PASSK_NO_COMPILE_CACHE"


def cpu_tag() -> str:
    """`<machine>-<8 hex digits of the CPU flags>` (Linux), or the machine alone elsewhere.

    Compiled programs are kept in one folder per tag, so that a cache folder shared between
    different machines never hands one machine's code to another.
    """
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[-1].strip()
                    break
    except OSError:
        pass
    machine = platform.machine() or "unknown"
    return f"{machine}-{hashlib.sha256(flags.encode()).hexdigest()[:8]}" if flags else machine


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip() not in ("", "0")


def cache_dir() -> Path:
    """The folder the cache uses in this environment (whether or not it is turned off)."""
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "passk-interference" / "jax"
    return root / cpu_tag()


def enable_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in :func:`cache_dir`; return the folder.

    Call it before the first compilation (the command does, first thing; a notebook does in its
    first cell). Every program is cached, however small or quick to compile: the thresholds
    `jax_persistent_cache_min_compile_time_secs` and `..._min_entry_size_bytes` are lowered to
    nothing, since on CPU most of this project's programs compile in well under JAX's default
    second and together make up the start-up time.

    Returns None, changing nothing, when ``PASSK_NO_COMPILE_CACHE`` is set, when the folder
    cannot be created (a read-only home), or when JAX's own ``jax_compilation_cache_dir`` was
    already set (by ``JAX_COMPILATION_CACHE_DIR`` or the caller): that setting is kept.
    """
    if _disabled():
        return None
    import jax

    if jax.config.jax_compilation_cache_dir and not os.environ.get(CACHE_DIR_ENV):
        return None
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
