"""`k*` from sampled answers, with an interval (SPEC section 10).

The unbiased `I_k_hat` of :mod:`theory.sampled`, evaluated at every `k = 1 .. n - 1` with its
jackknife standard error `se_k`, is read off as

    estimate = min{k : I_k_hat < 0},   lower = min{k : I_k_hat - z se_k < 0},
    upper = min{k : I_k_hat + z se_k < 0},

`z` the normal quantile of `(1 + level) / 2`, signs decided on the underflow-free scaled fields.
`lower <= estimate <= upper` wherever they exist. Beyond `k = n - 1` no unbiased estimate exists,
so none of the three goes past it. The plug-in `k*` (:func:`plugin_critical_k`, biased; for
comparison) is :func:`theory.critical_k` at the observed shares.
"""

from __future__ import annotations

import functools
import statistics
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import validate as _validate
from theory.answers import AnswerStatistics, answer_statistics, checked_statistics, read_answers, stats_tree
from theory.critical import critical_k, k_star_or_none
from theory.sampled import (
    SampledInner,
    _agreement,
    _inner_answers_jit,
    _inner_core,
    _inputs,
    _positive_prompts,
    _stderr_kind,
    _weights,
)

__all__ = [
    "SampledCriticalK",
    "critical_k_from_inner",
    "critical_k_from_statistics",
    "normal_quantile",
    "plugin_critical_k",
    "sampled_critical_k",
    "sampled_critical_k_jax",
]


class SampledCriticalK(NamedTuple):
    """`k*` from sampled answers, with an interval (SPEC section 10).

    Attributes:
      estimate: the first `k <= k_max` with `I_k_hat < 0`, or None.
      lower: the first `k` whose lower confidence bound is below 0 (conflict cannot be excluded
        there), or None (no conflict is plausible up to `k_max`).
      upper: the first `k` whose upper confidence bound is below 0 (conflict established), or
        None (not established up to `k_max`).
      k_max: `n - 1`, the largest `k` with an unbiased estimate.
      level: the nominal level of the pointwise intervals.

    The interval for `k*` is `[lower, upper]`, read as `[k_max + 1, inf]` when `lower` is None
    and as unbounded above when `upper` is None.
    """

    estimate: int | None
    lower: int | None
    upper: int | None
    k_max: int
    level: float


def _first_true(hits, k_max):
    """First `k` (1-based position) where `hits` holds along the last axis, `k_max + 1` if none."""
    return jnp.where(jnp.any(hits, axis=-1), jnp.argmax(hits, axis=-1) + 1, k_max + 1)


def _bounds(inner: SampledInner, z, k_max: int):
    """First `k` with the estimate, its lower and its upper bound below 0 (sentinel `k_max + 1`)."""
    est, se = inner.scaled_estimate, inner.scaled_stderr
    return (
        _first_true(est < 0, k_max),
        _first_true(est - z * se < 0, k_max),
        _first_true(est + z * se < 0, k_max),
    )


_bounds_jit = jax.jit(_bounds, static_argnames="k_max")


def _critical_core(stats: AnswerStatistics, mu, z):
    k_max = stats.n - 1
    return _bounds(_inner_core(stats, mu, jnp.arange(1, k_max + 1)), z, k_max)


@jax.jit
def _critical_answers_jit(r, s, stats_tree, mu, z):
    k_max = r.shape[1] - 1
    return _bounds(_inner_answers_jit(r, s, stats_tree, mu, jnp.arange(1, k_max + 1)), z, k_max)


@functools.partial(jax.jit, static_argnames=("n",))
def _critical_jit(correct, mean_score, pair, mu, z, *, n):
    return _critical_core(AnswerStatistics(correct, mean_score, pair, n), mu, z)


def _z(level):
    return statistics.NormalDist().inv_cdf(0.5 + level / 2)


def normal_quantile(level=0.95) -> float:
    """`z` of a two-sided normal interval of nominal `level` (1.96 at 0.95), `level` validated."""
    return _z(_validate.level("level", level))


def _result(est: int, lo: int, hi: int, k_max: int, level: float) -> SampledCriticalK:
    """:class:`SampledCriticalK` from the compiled rule's integers (`k_max + 1` meaning none)."""
    return SampledCriticalK(
        estimate=k_star_or_none(est, k_max),
        lower=k_star_or_none(lo, k_max),
        upper=k_star_or_none(hi, k_max),
        k_max=k_max,
        level=level,
    )


def critical_k_from_inner(inner: SampledInner, *, level=0.95) -> SampledCriticalK:
    """:class:`SampledCriticalK` read off a :class:`SampledInner` evaluated at `k = 1 .. k_max`.

    The rule of :func:`sampled_critical_k` (first `k` where `I_k_hat`, `I_k_hat - z se`,
    `I_k_hat + z se` fall below 0, on the scaled fields), for callers that need the estimates
    at every `k` anyway. `inner`'s fields must be concrete and one-dimensional.
    """
    if not isinstance(inner, SampledInner):
        raise TypeError(f"inner must be a SampledInner (from sampled_inner_product); got {type(inner).__name__}")
    level = _validate.level("level", level)
    k_max = int(np.shape(inner.scaled_estimate)[0]) if np.ndim(inner.scaled_estimate) == 1 else 0
    if k_max < 1:
        raise ValueError(f"inner must hold k = 1 .. k_max (one axis); got shape {np.shape(inner.scaled_estimate)}")
    est, lo, hi = (int(v) for v in _bounds_jit(inner, _z(level), k_max=k_max))
    return _result(est, lo, hi, k_max, level)


def sampled_critical_k_jax(rewards, scores, *, mu=None, level=0.95, stderr: str = "prompts"):
    """`(estimate, lower, upper)` of :func:`sampled_critical_k` as integers, `n` meaning none.

    The `jit`/`vmap`-compatible form, with the sentinel `k_max + 1 = n` of
    :func:`theory.critical_k_jax`. `level` and `stderr` must be concrete Python values.
    """
    level = _validate.level("level", level)
    _stderr_kind(stderr)
    if stderr == "answers":
        r, s, stats = read_answers(rewards, scores)
        return _critical_answers_jit(
            r, s, stats_tree(stats), _validate.prompt_weights(mu, r.shape[0], s.dtype), _z(level)
        )
    stats, mu = _inputs(rewards, scores, mu)
    _positive_prompts(mu, stats.correct.shape[0])
    return _critical_core(stats, mu, _z(level))


def sampled_critical_k(rewards, scores, *, mu=None, level=0.95, stderr: str = "prompts") -> SampledCriticalK:
    """`k*` from sampled answers, and an interval for it (SPEC section 10).

    Evaluates :func:`theory.sampled.sampled_inner_product` at every `k = 1 .. n - 1` and reads off
    `estimate = min{k : I_k_hat < 0}`, `lower = min{k : I_k_hat - z se_k < 0}` and
    `upper = min{k : I_k_hat + z se_k < 0}`, with `z` the normal quantile of `(1 + level) / 2`
    and `se_k` the jackknife standard error. Signs come from the scaled sums (no underflow).
    `lower <= estimate <= upper` wherever they exist.

    Args:
      rewards: `(P, n)` rewards in `{0, 1}`, `n >= 2`.
      scores: `(P, n, ...)` score vectors.
      mu: `(P,)` prompt weights, uniform when None.
      level: nominal level of the pointwise intervals, in `(0, 1)`.
      stderr: `"prompts"` or `"answers"`, as in :func:`theory.sampled.sampled_inner_product` (with `"answers"`
        the bound at `k = n - 1` is unbounded: `upper` is at most `n - 2`).

    Returns:
      :class:`SampledCriticalK` with Python ints or None, and `k_max = n - 1`.
    """
    _stderr_kind(stderr)
    if stderr == "prompts":
        return critical_k_from_statistics(answer_statistics(rewards, scores), mu=mu, level=level)
    level = _validate.level("level", level)
    r, s, stats = read_answers(rewards, scores)
    mu = _validate.prompt_weights(mu, r.shape[0], s.dtype)
    k_max = r.shape[1] - 1
    est, lo, hi = (int(v) for v in _critical_answers_jit(r, s, stats_tree(stats), mu, _z(level)))
    return _result(est, lo, hi, k_max, level)


def critical_k_from_statistics(stats: AnswerStatistics, *, mu=None, level=0.95) -> SampledCriticalK:
    """:func:`sampled_critical_k` from :class:`AnswerStatistics` (see :func:`theory.answers.statistics_from_sums`)."""
    level = _validate.level("level", level)
    stats = checked_statistics(stats)
    mu = _weights(stats, mu)
    _positive_prompts(mu, stats.correct.shape[0])
    k_max = stats.n - 1
    est, lo, hi = (int(v) for v in _critical_jit(*stats_tree(stats), mu, _z(level), n=stats.n))
    return _result(est, lo, hi, k_max, level)


def plugin_critical_k(rewards, scores, *, mu=None, k_max: int = 10**6):
    """The plug-in `k*`: :func:`theory.critical_k` at `p = c / n` and `a = a_hat` (biased).

    One call on each side of the comparison with :func:`sampled_critical_k`. Searches up to
    `k_max` (beyond `n - 1`, where no unbiased estimate exists).

    Returns:
      A Python int, or None when the plug-in shows no conflict up to `k_max`.
    """
    stats, mu = _inputs(rewards, scores, mu)
    a_hat = _agreement(stats, mu)
    return critical_k(stats.correct / stats.n, a_hat, mu, k_max=k_max)
