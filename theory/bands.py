"""Simultaneous confidence bands over `k`, and the `k*` interval read off them (SPEC sections 10, 11).

An interval for `k* = min{k : I_k < 0}` reads two ends off bounds on `I_k`:

- lower end: the first `k` whose lower bound `I_k_hat - q se_k` is below 0 (conflict cannot be
  excluded there);
- upper end: the first `k` whose upper bound `I_k_hat + q se_k` is below 0 (conflict established).

With the pointwise quantile `q = t_{(1+level)/2}` only the lower end holds its level: the upper end
is wrong as soon as *any* `k < k*` has its upper bound below 0, a union of `k* - 1` events whose
error can reach `(k* - 1) alpha / 2`. A simultaneous band replaces `q` by the quantile of
`max_k |T_k|`, where `T_k = (I_k_hat - I_k) / se_k`: then every bound holds at once with
probability `level`, and so do both ends.

The estimates of `I_k` at different `k` come from the same answers, so the `T_k` are strongly
correlated and the band is far narrower than Bonferroni's. The delete-one jackknife gives their
correlation: deleting one unit (a prompt, section 10; a fold, section 11) changes every `k`'s
estimate at once, and the correlation of those changes across `k` estimates the correlation of the
`T_k`. :func:`simultaneous_quantile` takes that quantile by simulation from the correlation (a
Gaussian vector, or a multivariate t with the jackknife's degrees of freedom) when given a key,
and Bonferroni's conservative `t_{1 - alpha / (2K)}` without one.

References: SPEC sections 10 and 11; Hothorn, Bretz and Westfall 2008, "Simultaneous inference in
general parametric models" (bands from the maximum of correlated t statistics).
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special as _special

from theory import validate as _validate

__all__ = [
    "CriticalKInterval",
    "t_quantile",
    "bonferroni_quantile",
    "simultaneous_quantile",
    "jackknife_correlation",
    "band_ends",
    "read_critical_k",
]

#: Default number of simulated draws for the quantile of `max_k |T_k|` (Monte Carlo error about 0.01 at 0.95).
DEFAULT_DRAWS = 50_000


class CriticalKInterval(NamedTuple):
    """`k*` read off estimates of `I_k` at `k = 1 .. k_max` with a band.

    Attributes:
      estimate: the first `k` with `I_k_hat < 0`, or None.
      lower: the first `k` whose lower bound is below 0, or None (no conflict plausible up to
        `k_max`).
      upper: the first `k` whose upper bound is below 0, or None (conflict not established up to
        `k_max`).
      k_max: the largest `k` estimated.
      level: the nominal level.
      quantile: the `q` of the bounds `I_k_hat +- q se_k`.
      band: `"max-t"` (simulated simultaneous quantile), `"bonferroni"` (simultaneous,
        conservative) or `"pointwise"` (only `lower` holds its level).
      signal: whether `I_1 = ||grad J_1||^2` is established positive (its pointwise lower bound
        above 0). When it is not, the answers carry no signal about `k*`, and `estimate`,
        `lower` and `upper` say nothing.
    """

    estimate: int | None
    lower: int | None
    upper: int | None
    k_max: int
    level: float
    quantile: float
    band: str
    signal: bool


def t_quantile(level, dof=None) -> float:
    """The two-sided quantile `t_{(1 + level)/2}` with `dof` degrees of freedom (normal when None).

    Args:
      level: nominal level in `(0, 1)`.
      dof: degrees of freedom `>= 1`, or None for the normal quantile (1.96 at 0.95).

    Returns:
      A Python float.
    """
    level = _validate.level("level", level)
    if dof is None:
        return statistics.NormalDist().inv_cdf(0.5 + level / 2)
    dof = _validate.python_int("dof", dof, minimum=1)
    return float(_special.stdtrit(dof, 0.5 + level / 2))


def bonferroni_quantile(n_orders, *, level=0.95, dof=None) -> float:
    """Bonferroni's simultaneous quantile `t_{1 - (1 - level) / (2K)}` over `K = n_orders` orders.

    Valid whatever the correlation across `k` and at least as wide as the max-t quantile; it
    needs only `K`, so it is the band of the `jit`-compiled readers.

    Args:
      n_orders: `K >= 1`, the number of orders `k` the band covers.
      level: nominal simultaneous level in `(0, 1)`.
      dof: degrees of freedom, or None (normal).

    Returns:
      A Python float (the pointwise :func:`t_quantile` at `K = 1`).
    """
    level = _validate.level("level", level)
    n_orders = _validate.python_int("n_orders", n_orders, minimum=1)
    return max(t_quantile(level, dof), t_quantile(1.0 - (1.0 - level) / n_orders, dof))


def jackknife_correlation(deleted) -> np.ndarray:
    """The correlation across `k` of delete-one jackknife values, `(K, K)`.

    Args:
      deleted: `(K, m)`: for each of `K` orders, the estimate with each of `m` units deleted
        (any positive rescaling per row leaves the correlation unchanged).

    Returns:
      The `(K, K)` correlation of the rows' deviations from their means; a row with no spread
      (an order no unit moves) is uncorrelated with the others and has a unit diagonal.
    """
    dev = np.asarray(deleted, dtype=np.float64)
    if dev.ndim != 2 or dev.shape[1] < 2:
        raise ValueError(f"deleted must have shape (K, m) with m >= 2 deleted units; got shape {dev.shape}")
    if not np.all(np.isfinite(dev)):
        raise ValueError("deleted must be finite")
    dev = dev - dev.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(dev * dev, axis=1))
    live = norm > 0
    unit = np.where(live[:, None], dev / np.where(live, norm, 1.0)[:, None], 0.0)
    corr = unit @ unit.T
    corr[np.diag_indices_from(corr)] = 1.0
    return corr


def simultaneous_quantile(corr, *, level=0.95, dof=None, key=None, draws: int = DEFAULT_DRAWS) -> float:
    """`q` with `P(max_k |T_k| <= q) = level` for `T` with correlation `corr`.

    `T = Z / sqrt(V / dof)` with `Z ~ N(0, corr)` and `V ~ chi^2_dof` shared across `k` (a
    multivariate t; Gaussian when `dof` is None), the joint law of jackknife t statistics.

    Args:
      corr: `(K, K)` correlation (e.g. :func:`jackknife_correlation`).
      level: nominal level in `(0, 1)`.
      dof: degrees of freedom of the standard errors, or None (normal).
      key: a `jax.random` key: the quantile is simulated from `draws` draws. None: Bonferroni's
        `t_{1 - (1 - level) / (2K)}`, valid whatever the correlation and always at least as wide.
      draws: simulated draws (with a key).

    Returns:
      A Python float, at least the pointwise :func:`t_quantile` (up to Monte Carlo error, which
      is removed by taking the larger of the two).
    """
    level = _validate.level("level", level)
    corr = np.asarray(corr, dtype=np.float64)
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1] or corr.shape[0] < 1:
        raise ValueError(f"corr must be a square (K, K) matrix with K >= 1; got shape {corr.shape}")
    if not np.all(np.isfinite(corr)):
        raise ValueError("corr must be finite")
    n_k = corr.shape[0]
    if key is None:
        return bonferroni_quantile(n_k, level=level, dof=dof)
    pointwise = t_quantile(level, dof)
    draws = _validate.python_int("draws", draws, minimum=100)
    eigval, eigvec = np.linalg.eigh((corr + corr.T) / 2)
    root = eigvec * np.sqrt(np.clip(eigval, 0.0, None))  # root @ root.T == corr
    k_normal, k_chi = jax.random.split(key)
    z = jax.random.normal(k_normal, (draws, n_k), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    z = np.asarray(z, dtype=np.float64) @ root.T
    if dof is not None:
        dof = _validate.python_int("dof", dof, minimum=1)
        chi = np.asarray(jax.random.chisquare(k_chi, dof, (draws,)), dtype=np.float64)
        z = z / np.sqrt(chi / dof)[:, None]
    top = np.max(np.abs(z), axis=1)
    return max(pointwise, float(np.quantile(top, level)))


def band_ends(scaled_estimate, scaled_stderr, quantile):
    """`(estimate, lower, upper)`: the first `k` where `I_k_hat`, `I_k_hat - q se_k` and
    `I_k_hat + q se_k` fall below 0, along the last axis; `k_max + 1` where none does.

    Traceable (`jit`, `vmap`; leading axes are batch axes): the one reading of a band, used by
    :func:`read_critical_k` and by the compiled readers.

    Args:
      scaled_estimate: `(..., k_max)` `I_k_hat` at `k = 1 .. k_max`, each `k` rescaled by a
        positive factor.
      scaled_stderr: standard errors of the same shape, on the same scales.
      quantile: the band's `q` (a scalar or an array broadcasting against the leading axes
        with a trailing axis of 1).

    Returns:
      Three integer arrays of the leading shape.
    """
    est = jnp.asarray(scaled_estimate)
    se = jnp.asarray(scaled_stderr)
    k_max = est.shape[-1]

    def first(hits):
        return jnp.where(jnp.any(hits, axis=-1), jnp.argmax(hits, axis=-1) + 1, k_max + 1)

    return first(est < 0), first(est - quantile * se < 0), first(est + quantile * se < 0)


def _or_none(k: int, k_max: int) -> int | None:
    return k if k <= k_max else None


def read_critical_k(
    scaled_estimate, scaled_stderr, *, quantile: float, level: float, band: str, signal_quantile: float
) -> CriticalKInterval:
    """:class:`CriticalKInterval` from estimates at `k = 1 .. k_max` and a quantile.

    Signs are read off the scaled estimates and standard errors (each `k`'s pair shares one
    positive scale), so nothing underflows.

    Args:
      scaled_estimate: `(k_max,)` `I_k_hat`, each rescaled by a positive factor.
      scaled_stderr: `(k_max,)` standard errors on the same scales.
      quantile: the band's `q` (:func:`simultaneous_quantile`, :func:`bonferroni_quantile`; the
        pointwise :func:`t_quantile` only to compare against, `band="pointwise"`).
      level, band: recorded in the result (`band` one of `"max-t"`, `"bonferroni"`, `"pointwise"`).
      signal_quantile: the pointwise quantile of the test that `I_1 > 0`.
    """
    if band not in ("max-t", "bonferroni", "pointwise"):
        raise ValueError(f'band must be "max-t", "bonferroni" or "pointwise"; got {band!r}')
    est = np.asarray(scaled_estimate, dtype=np.float64)
    se = np.asarray(scaled_stderr, dtype=np.float64)
    if est.ndim != 1 or est.shape != se.shape or est.size < 1:
        raise ValueError(
            f"scaled_estimate and scaled_stderr must be (k_max,) arrays of one shape; got {est.shape} and {se.shape}"
        )
    k_max = int(est.size)
    with jax.enable_x64(True):
        ends = [int(v) for v in band_ends(est, se, float(quantile))]
    estimate, lower, upper = (_or_none(k, k_max) for k in ends)
    return CriticalKInterval(
        estimate=estimate,
        lower=lower,
        upper=upper,
        k_max=k_max,
        level=float(level),
        quantile=float(quantile),
        band=band,
        signal=bool(est[0] - signal_quantile * se[0] > 0),
    )
