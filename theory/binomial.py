"""Ratios of binomial coefficients, the building block of every sampled estimator (SPEC sections 6, 10).

The chance that `k` answers drawn without replacement from `n`, of which `c` are correct, all
fail is the hypergeometric probability

    C(n-c, k) / C(n, k) = prod_{j<k} (n-c-j) / (n-j) = prod_{j<min(c,k)} (1 - max(c,k)/(n-j)),

(the second product uses the symmetry of the ratio in `c` and `k`, so at most `min(c,k)` factors
are formed). Its logarithm is a sum of terms :func:`log_factor`; the unbiased pass@k is
`rho(n,c,k) = 1 - C(n-c,k)/C(n,k) = -expm1(log ratio)` (Chen et al. 2021).

Ratios are never formed from factorials or `lgamma` differences (those lose about `1e-11`
relative at `n = 10^4`, and much more where `rho` is small): each term is a logarithm of an exactly
rounded quotient of integers, accurate to rounding, and the sum is compensated.

Functions here are unvalidated building blocks for `theory` (they take integer arrays and a float
dtype and trace under `jit`); the validated estimators are in :mod:`theory.estimators`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["log_factor", "log_binomial_ratio", "pass_at_k_from_counts"]

# Terms of a binomial log-ratio summed per loop iteration: vectorised inner sums keep the loop
# short (n / 64 trips at most) while shapes stay static under jit.
_CHUNK = 64


def log_factor(x, y):
    """`log(1 - x) = log(y)` for an exactly rounded quotient `x` and its complement `y = 1 - x`.

    `log1p(-x)` where `x < 1/4`, else `log(y)`. XLA's float64 `log1p` on CPU is off by up to about
    130 ulp for arguments in about `[-0.45, -0.35]`; below `1/4` in magnitude it is within 1 ulp,
    and at or above it `y <= 3/4`, where `log(y)` is accurate to a few ulp. Both inputs are
    exactly rounded quotients of integers (`x = M/(n-j)`, `y = (n-j-M)/(n-j)`), so every term is
    accurate to rounding. `y = 0` gives `-inf`.
    """
    return jnp.where(x < 0.25, jnp.log1p(-x), jnp.log(y))


def log_binomial_ratio(n, c, k, dtype):
    """`log(C(n-c,k) / C(n,k))` for integer arrays, `-inf` where `c + k > n` (ratio 0).

    Sums the `min(c,k)` terms :func:`log_factor` of `1 - max(c,k)/(n-j)` in a `while_loop` over
    chunks of 64 terms (trip count from the data, shapes static), with Kahan compensation
    across chunks (the terms share a sign, so the compensated sum is accurate to a few ulps).
    `k = 0` or `c = 0` give exactly 0.

    Args:
      n, c, k: integer arrays (broadcast together), `0 <= c <= n`, `k >= 0`.
      dtype: the float dtype of the result.

    Returns:
      The log-ratio, of the broadcast shape.
    """
    n, c, k = jnp.broadcast_arrays(n, c, k)
    feasible = c + k <= n
    m = jnp.where(feasible, jnp.minimum(c, k), 0)
    big = jnp.maximum(c, k).astype(dtype)[..., None]
    nf = n.astype(dtype)[..., None]
    m_col = m[..., None]
    offsets = jnp.arange(_CHUNK, dtype=m.dtype)
    trips = jnp.max(m, initial=0)

    def cond(state):
        return state[0] < trips

    def body(state):
        j0, total, comp = state
        j = j0 + offsets
        active = j < m_col
        rest = jnp.where(active, nf - j.astype(dtype), 1)  # n - j >= 1 on active terms
        x = jnp.where(active, big / rest, 0)
        y = jnp.where(active, (rest - big) / rest, 1)
        term = jnp.sum(log_factor(x, y), axis=-1)
        corrected = term - comp
        new_total = total + corrected
        comp = (new_total - total) - corrected
        return j0 + _CHUNK, new_total, comp

    zero = jnp.zeros(m.shape, dtype)
    _, total, _ = lax.while_loop(cond, body, (jnp.zeros((), m.dtype), zero, zero))
    return jnp.where(feasible, total, -jnp.inf)


def pass_at_k_from_counts(n, c, k, dtype):
    """Unbiased pass@k `rho(n,c,k) = 1 - C(n-c,k)/C(n,k)`, unvalidated; `rho(n,c,0) = 0`."""
    # `0 - expm1` rather than `-expm1`: gives +0.0, not -0.0, where rho vanishes.
    return 0.0 - jnp.expm1(log_binomial_ratio(n, c, k, dtype))
