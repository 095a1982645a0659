"""Intervals for the numbers the experiments report: Wilson for shares, normal for means."""

from __future__ import annotations

import math

import numpy as np

import theory

__all__ = ["wilson_interval", "mean_interval"]


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
    """A mean over independent repeats (seeds) with a normal interval: `{"value", "lower", "upper", "n", "sd"}`.

    `mean +- z sd / sqrt(n)` with the sample standard deviation (`ddof = 1`); `lower = upper = value`
    for a single value.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a non-empty array of finite numbers; got {values!r}")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = theory.normal_quantile(level) * sd / math.sqrt(x.size)
    return {"value": mean, "lower": mean - half, "upper": mean + half, "n": int(x.size), "sd": sd}
