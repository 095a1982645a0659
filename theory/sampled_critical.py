"""`k*` from sampled answers, with an interval from a simultaneous band (SPEC section 10).

The unbiased `I_k_hat` of :mod:`theory.sampled`, evaluated at every `k = 1 .. k_max = n - 1`
with its jackknife standard error `se_k`, is read off as

    estimate = min{k : I_k_hat < 0},   lower = min{k : I_k_hat - q se_k < 0},
    upper = min{k : I_k_hat + q se_k < 0},

signs decided on the underflow-free scaled fields (:func:`theory.bands.band_ends`). `q` is a
simultaneous quantile over `k = 1 .. k_max`, so that every bound, and with them both ends of the
interval, hold their level together (with the pointwise quantile the upper end is a union over
every `k < k*`, :mod:`theory.bands`):

- with a `key`: the quantile of `max_k |T_k|` simulated from the jackknife's correlation of the
  estimates across `k` (`band="max-t"`);
- without one, and always under `jit` (:func:`sampled_critical_k_jax`): Bonferroni's normal
  quantile `z_{1 - (1 - level) / (2 k_max)}` (`band="bonferroni"`, conservative).

`lower <= estimate <= upper` wherever they exist. Beyond `k = n - 1` no unbiased estimate exists,
so none of the three goes past it. The plug-in `k*` (:func:`plugin_critical_k`, biased; for
comparison) is :func:`theory.critical_k` at the observed shares.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory import bands as _bands
from theory import validate as _validate
from theory.answers import AnswerStatistics, answer_statistics, checked_statistics, read_answers, stats_tree
from theory.critical import critical_k
from theory.sampled import (
    SampledInner,
    _agreement,
    _inner_answers_jit,
    _inner_core,
    _inputs,
    _positive_prompts,
    _stderr_kind,
    inner_product_from_statistics,
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

#: The result of :func:`sampled_critical_k`: :class:`theory.bands.CriticalKInterval` (`k_max = n - 1`,
#: `band` `"max-t"` or `"bonferroni"`, `signal` from the pointwise test that `I_1 > 0`).
SampledCriticalK = _bands.CriticalKInterval


def normal_quantile(level=0.95) -> float:
    """`z` of a two-sided pointwise normal interval of nominal `level` (1.96 at 0.95), `level` validated.

    The quantile of one `I_k`'s interval; the `k*` interval uses a band (module docstring).
    """
    return _bands.t_quantile(level)


def _critical_core(stats: AnswerStatistics, mu, q):
    k_max = stats.n - 1
    inner = _inner_core(stats, mu, jnp.arange(1, k_max + 1))
    return _bands.band_ends(inner.scaled_estimate, inner.scaled_stderr, q)


@jax.jit
def _critical_answers_jit(r, s, stats_tree, mu, q):
    k_max = r.shape[1] - 1
    inner = _inner_answers_jit(r, s, stats_tree, mu, jnp.arange(1, k_max + 1))
    return _bands.band_ends(inner.scaled_estimate, inner.scaled_stderr, q)


def critical_k_from_inner(inner: SampledInner, *, level=0.95, key=None) -> SampledCriticalK:
    """:class:`SampledCriticalK` read off a :class:`SampledInner` evaluated at `k = 1 .. k_max`.

    The rule of :func:`sampled_critical_k` (module docstring), for callers that need the
    estimates at every `k` anyway: the band's quantile comes from the correlation of
    `inner.deleted` across `k` (:func:`theory.bands.jackknife_correlation`) with a `key`, from
    Bonferroni over `k_max` orders without one. `inner`'s fields must be concrete, with
    `k = 1 .. k_max` on the first axis.

    Args:
      inner: :class:`SampledInner` at `ks = 1 .. k_max`.
      level: nominal simultaneous level of the band, in `(0, 1)`.
      key: a `jax.random` key for the simulated max-t quantile, or None (Bonferroni).

    Returns:
      :class:`SampledCriticalK`.
    """
    if not isinstance(inner, SampledInner):
        raise TypeError(f"inner must be a SampledInner (from sampled_inner_product); got {type(inner).__name__}")
    level = _validate.level("level", level)
    k_max = int(np.shape(inner.scaled_estimate)[0]) if np.ndim(inner.scaled_estimate) == 1 else 0
    if k_max < 1:
        raise ValueError(f"inner must hold k = 1 .. k_max (one axis); got shape {np.shape(inner.scaled_estimate)}")
    if key is None:
        q = _bands.bonferroni_quantile(k_max, level=level)
    else:
        corr = _bands.jackknife_correlation(np.asarray(inner.deleted, np.float64))
        q = _bands.simultaneous_quantile(corr, level=level, key=key)
    return _bands.read_critical_k(
        np.asarray(inner.scaled_estimate, np.float64),
        np.asarray(inner.scaled_stderr, np.float64),
        quantile=q,
        level=level,
        band="bonferroni" if key is None else "max-t",
        signal_quantile=_bands.t_quantile(level),
    )


def sampled_critical_k_jax(rewards, scores, *, mu=None, level=0.95, stderr: str = "prompts"):
    """`(estimate, lower, upper)` of :func:`sampled_critical_k` without a key, as integers, `n`
    meaning none.

    The `jit`/`vmap`-compatible form, with the sentinel `k_max + 1 = n` of
    :func:`theory.critical_k_jax`. The band is Bonferroni's over `k = 1 .. n - 1`
    (`z_{1 - (1 - level) / (2 (n - 1))}`): the simulated max-t quantile is not taken under
    `jit`. `level` and `stderr` must be concrete Python values.
    """
    level = _validate.level("level", level)
    _stderr_kind(stderr)
    if stderr == "answers":
        r, s, stats = read_answers(rewards, scores)
        q = _bands.bonferroni_quantile(stats.n - 1, level=level)
        return _critical_answers_jit(r, s, stats_tree(stats), _validate.prompt_weights(mu, r.shape[0], s.dtype), q)
    stats, mu = _inputs(rewards, scores, mu)
    _positive_prompts(mu, stats.correct.shape[0])
    return _critical_core(stats, mu, _bands.bonferroni_quantile(stats.n - 1, level=level))


def sampled_critical_k(rewards, scores, *, mu=None, level=0.95, stderr: str = "prompts", key=None) -> SampledCriticalK:
    """`k*` from sampled answers, and an interval for it from a simultaneous band (SPEC section 10).

    Evaluates :func:`theory.sampled.sampled_inner_product` at every `k = 1 .. n - 1` and reads off
    `estimate = min{k : I_k_hat < 0}`, `lower = min{k : I_k_hat - q se_k < 0}` and
    `upper = min{k : I_k_hat + q se_k < 0}`, `se_k` the jackknife standard error and `q` the
    band's simultaneous quantile over `k = 1 .. n - 1` (max-t from the jackknife correlation
    with a `key`, Bonferroni without), so that `[lower, upper]` covers `k*` with probability
    `level` (up to the jackknife's normal approximation). Signs come from the scaled sums (no
    underflow). `lower <= estimate <= upper` wherever they exist.

    Args:
      rewards: `(P, n)` rewards in `{0, 1}`, `n >= 2`.
      scores: `(P, n, ...)` score vectors.
      mu: `(P,)` prompt weights, uniform when None.
      level: nominal simultaneous level of the band, in `(0, 1)`.
      stderr: `"prompts"` or `"answers"`, as in :func:`theory.sampled.sampled_inner_product` (with `"answers"`
        the bound at `k = n - 1` is unbounded: `upper` is at most `n - 2`).
      key: a `jax.random` key for the simulated max-t quantile (`band="max-t"`, narrower), or
        None for Bonferroni's (`band="bonferroni"`, what :func:`sampled_critical_k_jax` reads).

    Returns:
      :class:`SampledCriticalK` with Python ints or None, and `k_max = n - 1`.
    """
    _stderr_kind(stderr)
    if stderr == "prompts":
        return critical_k_from_statistics(answer_statistics(rewards, scores), mu=mu, level=level, key=key)
    level = _validate.level("level", level)
    r, s, stats = read_answers(rewards, scores)
    mu = _validate.prompt_weights(mu, r.shape[0], s.dtype)
    inner = _inner_answers_jit(r, s, stats_tree(stats), mu, jnp.arange(1, r.shape[1]))
    return critical_k_from_inner(inner, level=level, key=key)


def critical_k_from_statistics(stats: AnswerStatistics, *, mu=None, level=0.95, key=None) -> SampledCriticalK:
    """:func:`sampled_critical_k` from :class:`AnswerStatistics` (see :func:`theory.answers.statistics_from_sums`)."""
    level = _validate.level("level", level)
    stats = checked_statistics(stats)
    inner = inner_product_from_statistics(stats, np.arange(1, stats.n), mu=mu)
    return critical_k_from_inner(inner, level=level, key=key)


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
