"""Shared timing helpers: interleaved repeats, medians, compile counting, result rows."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import jax

__all__ = ["interleaved", "timed", "CompileCounter", "row"]


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of `fn`, waiting for every JAX result it returns."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


#: Untimed pause before each timed call of :func:`interleaved`, in seconds.
PAUSE_S = 0.2
#: A call of :func:`interleaved` that takes less than this is timed again at once, and the second
#: time is the one kept (seconds).
WARM_BELOW_S = 0.5


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    *,
    reduce=statistics.median,
    pause_s: float = PAUSE_S,
    warm_below_s: float = WARM_BELOW_S,
) -> dict[str, float]:
    """Median seconds (or `reduce` of the repeats) of each function, timed in turn (A, B, A, B, ...).

    Interleaving spreads the noise of a shared machine (other processes, frequency changes) over
    all candidates instead of letting it fall on whichever ran during a busy spell. Comparisons
    use the median; a lower bound on what a computation can take uses `reduce=min`.

    Each timed call follows an untimed pause of `pause_s`: worker threads of the previous call
    keep spinning for a while after it returns (numpy's OpenBLAS for about 0.1 s after a matrix
    product) and would otherwise take cores from the next candidate. On 2 cores,
    `theory.sampled_critical_k` measured 48 ms right after the numpy baseline of
    `passk/benchmarks/sampled.py`, 32 ms after a 0.1 s pause or with `OPENBLAS_NUM_THREADS=1`.

    After the pause the cores are idle, and a short call pays for waking them: on 2 cores
    `theory.pkpo_weights` (4096 groups of 64 continuous rewards) measured a median of 6.3-8.7 ms
    right after a 0.2 s pause, with a tail to 10-19 ms, against 5.3-5.5 ms back to back. So a call
    that takes less than `warm_below_s` is made twice in a row and the second is kept: the
    steady-state time of a call made in a loop. The rule reads only each call's own duration, so it
    treats every candidate alike; calls longer than `warm_below_s` (where waking costs under 1%)
    are timed once.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(pause_s)
            seconds = timed(fn)
            if seconds < warm_below_s:
                seconds = timed(fn)
            times[name].append(seconds)
    return {name: reduce(ts) for name, ts in times.items()}


_LOGGERS = ("jax._src.interpreters.pxla", "jax._src.dispatch")


class CompileCounter:
    """Counts XLA compilations while active (through JAX's `jax_log_compiles` log records).

    `with CompileCounter() as c: ...` then `c.count` (and `c.names`, the compiled functions).
    """

    def __init__(self):
        self.names: list[str] = []
        self._handler = _Handler(self.names)

    @property
    def count(self) -> int:
        return len(self.names)

    def __enter__(self):
        self._previous = jax.config.jax_log_compiles
        jax.config.update("jax_log_compiles", True)
        self._propagate = {}
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._handler)
            # Keep the compile log off the console: only the counter reads it.
            self._propagate[name] = logger.propagate
            logger.propagate = False
        return self

    def __exit__(self, *exc):
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self._handler)
            logger.propagate = self._propagate[name]
        jax.config.update("jax_log_compiles", self._previous)
        return False


class _Handler(logging.Handler):
    def __init__(self, names):
        super().__init__(level=logging.DEBUG)
        self._names = names

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self._names.append(msg.split()[1])


def row(name: str, ours_s: float, baseline_s: float, target: str, **extra) -> dict:
    """One JSON row: `{name, ours_s, baseline_s, ratio, target, ...extra}` (ratio = baseline/ours)."""
    return {
        "name": name,
        "ours_s": float(ours_s),
        "baseline_s": float(baseline_s),
        "ratio": float(baseline_s / ours_s) if ours_s > 0 else float("inf"),
        "target": target,
        **extra,
    }
