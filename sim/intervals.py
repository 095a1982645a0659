"""Intervals for the numbers the experiments report: Wilson for shares, Student t for means over
seeds, order statistics for medians and quartiles."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

import theory

__all__ = ["wilson_interval", "mean_interval", "mean_half_width", "quantile_interval"]


def wilson_interval(successes, n, level: float = 0.95) -> dict:
    """A share with its Wilson score interval: `{"value", "lower", "upper", "n"}`.

    With `p_hat = s / n` and `z` the normal quantile of `(1 + level) / 2`:

        centre = (p_hat + z^2 / (2n)) / (1 + z^2 / n),
        half   = z sqrt(p_hat (1 - p_hat) / n + z^2 / (4 n^2)) / (1 + z^2 / n).

    Unlike `p_hat +- z se` it stays inside [0, 1] and does not collapse at `s = 0` or `s = n`.

    Args:
      successes: count `0 <= s <= n` (an integer).
      n: number of trials `>= 1`.
      level: nominal coverage.

    Returns:
      `{"value": p_hat, "lower", "upper", "n"}`.

    References:
      Wilson 1927, "Probable inference, the law of succession, and statistical inference".
    """
    if int(successes) != successes or int(n) != n or int(n) < 1 or not 0 <= int(successes) <= int(n):
        raise ValueError(f"need integers 0 <= successes <= n with n >= 1; got successes={successes!r}, n={n!r}")
    s, n = int(successes), int(n)
    z = theory.normal_quantile(level)
    p = s / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at s = 0 (s = n) the lower (upper) end is exactly 0 (1); the formula leaves a rounding error
    lower = 0.0 if s == 0 else max(0.0, centre - half)
    upper = 1.0 if s == n else min(1.0, centre + half)
    return {"value": p, "lower": lower, "upper": upper, "n": n}


def mean_interval(values, level: float = 0.95) -> dict:
    """A mean over independent repeats (seeds) with a Student t interval:
    `{"value", "lower", "upper", "n", "sd"}`.

        mean +- t_{n-1, (1 + level)/2} sd / sqrt(n),   sd with ddof = 1.

    The t quantile (not the normal one) keeps the coverage nominal for normal data at the few seeds
    a trajectory is run over (at `n = 3` the normal interval covers about 79%). A single value has
    no spread to measure: `lower = upper = value`, `sd = 0`.

    Args:
      values: the repeats (any shape; flattened), finite.
      level: nominal coverage in (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a non-empty array of finite numbers; got {values!r}")
    _check_level(level)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = float(mean_half_width(sd, x.size, level))
    return {"value": mean, "lower": mean - half, "upper": mean + half, "n": int(x.size), "sd": sd}


def mean_half_width(sd, n: int, level: float = 0.95):
    """Half-width `t_{n-1, (1 + level)/2} sd / sqrt(n)` of :func:`mean_interval` (0 for `n = 1`),
    elementwise over an array of standard deviations `sd` (`ddof = 1`)."""
    _check_level(level)
    if n < 2:
        return np.zeros_like(np.asarray(sd, np.float64))
    return float(stats.t.ppf((1 + level) / 2, n - 1)) * np.asarray(sd, np.float64) / math.sqrt(n)


def quantile_interval(values, q: float = 0.5, level: float = 0.95) -> dict:
    """A sample quantile with its distribution-free order-statistic interval:
    `{"value", "lower", "upper", "n"}`.

    With `x_(1) <= ... <= x_(n)` and `B ~ Binomial(n, q)` (the count of draws below the true
    quantile), `[x_(l), x_(u)]` with `l` the largest index with `P(B < l) <= (1 - level)/2` and `u`
    the smallest with `P(B >= u) <= (1 - level)/2` covers the true `q`-quantile of any continuous
    distribution with probability at least `level`. Where `n` is too small for that (`l < 1` or
    `u > n`) the end is the sample's minimum or maximum and the coverage is below `level`.
    `value` is `numpy.quantile(x, q)`. Infinite values are allowed (a censored draw above every
    finite one); NaN is not.

    Args:
      values: the draws (any shape; flattened).
      q: the quantile in (0, 1).
      level: nominal coverage in (0, 1).

    References:
      David and Nagaraja 2003, "Order Statistics", section 7.1.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size < 1 or np.any(np.isnan(x)):
        raise ValueError(f"values must be a non-empty array without NaN; got {values!r}")
    if not 0 < q < 1:
        raise ValueError(f"q must lie in (0, 1); got {q!r}")
    _check_level(level)
    n, alpha = x.size, (1 - level) / 2
    # P(B <= l - 1) <= alpha, l as large as possible; P(B >= u) <= alpha, u as small as possible
    lo = int(stats.binom.ppf(alpha, n, q))  # smallest j with P(B <= j) >= alpha
    lo = lo + 1 if stats.binom.cdf(lo, n, q) <= alpha else lo  # equality: one index further
    hi = int(stats.binom.isf(alpha, n, q)) + 1  # smallest u with P(B >= u) <= alpha
    value = float(np.quantile(x, q)) if np.all(np.isfinite(x)) else float(x[min(n - 1, int(q * n))])
    return {"value": value, "lower": float(x[max(lo, 1) - 1]), "upper": float(x[min(hi, n) - 1]), "n": int(n)}


def _check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
