"""Pass@k and its prompt weight (SPEC section 2).

The pass@k objective of one prompt with success probability `p` is `1 - (1-p)^k`; its derivative in
`p` is the prompt weight `w_k(p) = k (1-p)^(k-1)`, so that
`grad J_k = sum_i mu_i w_k(p_i) grad p_i`: pass@k ascent is pass@1 ascent with prompt `i`
reweighted by `w_k(p_i)`.

Numerics. `(1-p)^(k-1)` is computed as `exp((k-1) log1p(-p))`, accurate for `k` up to `10^6` and
`p` within `1e-12` of 0 or 1 in float64 wherever the result is a normal float; where it underflows
the result is 0 (never NaN) and :func:`log_pass_at_k_weight` carries the value. `w_1 = 1` exactly,
also at `p = 1`. In float32 the same formulas hold with float32 rounding: `p` is only
representable to about `6e-8` near 1 and results underflow below about `1e-38` (`1e-45` subnormal),
so large `k` should use the log-space forms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from theory import validate as _validate

__all__ = [
    "pass_at_k",
    "pass_at_k_weight",
    "log_pass_at_k_weight",
    "log_normalized_weights",
    "normalized_weights",
    "log_one_minus_p_power",
    "k_times_exp",
]


def _cast_k(k, like):
    return k.astype(like.dtype)


def log_one_minus_p_power(p, t):
    """`t log(1-p)`, the log of `(1-p)^t`, with `(1-p)^0 = 1` also at `p = 1`.

    Args:
      p: success probabilities in [0, 1] (not validated: internal building block).
      t: non-negative exponents, broadcast against `p`.

    Returns:
      `t * log1p(-p)`, and exactly 0 where `t == 0` (avoids `0 * -inf`).
    """
    t = jnp.asarray(t, dtype=p.dtype)
    return jnp.where(t == 0, jnp.zeros_like(p * t), t * jnp.log1p(-p))


def k_times_exp(kf, log_factor):
    """`k exp(x)` for `k >= 1`; `x = -inf` gives 0.

    XLA's CPU backend flushes subnormal results to zero: `k * exp(x)` would give 0 where `exp(x)`
    is subnormal but the product is a normal float (`w_k(p)` near `1e-303` at `k = 10^6`). There
    it is formed as `exp(log k + x)`; elsewhere as `k * exp(x)`, exact at `x = 0`.
    """
    tiny = jnp.finfo(jnp.result_type(log_factor)).tiny
    direct = kf * jnp.exp(log_factor)
    return jnp.where(log_factor > jnp.log(tiny), direct, jnp.exp(jnp.log(kf) + log_factor))


def _weight(p, kf):
    """`w_k(p) = k (1-p)^(k-1)` for validated `p` and `k` cast to `p`'s dtype (the one formula
    behind :func:`pass_at_k_weight` and the derivative of :func:`pass_at_k`)."""
    return k_times_exp(kf, log_one_minus_p_power(p, kf - 1))


@jax.custom_jvp
def _pass_at_k_core(p, kf):
    return -jnp.expm1(log_one_minus_p_power(p, kf))


@_pass_at_k_core.defjvp
def _pass_at_k_core_jvp(primals, tangents):
    # d/dp [1 - (1-p)^k] = w_k(p), written so that it stays finite at p = 1 (autodiff through
    # log1p(-p) would give 0 * inf there); k is an order, not a differentiable quantity.
    p, kf = primals
    dp, _ = tangents
    return _pass_at_k_core(p, kf), _weight(p, kf) * dp


def pass_at_k(p, k):
    """Pass@k of a prompt with per-sample success `p`: `1 - (1-p)^k`.

    Computed as `-expm1(k log1p(-p))`, accurate for `p` near 0 (no cancellation) and near 1. Its
    derivative in `p` (under `jax.grad`/`jvp`) is the prompt weight `w_k(p)` exactly, finite also
    at `p = 1`.

    Args:
      p: success probabilities in [0, 1], any shape.
      k: integer `>= 1`, broadcast against `p`.

    Returns:
      An array of the broadcast shape of `p` and `k`.

    Example:
      >>> float(pass_at_k(0.5, 2))
      0.75
    """
    p = _validate.probability("p", p)
    k = _validate.integer("k", k, minimum=1)
    kf = jnp.broadcast_to(_cast_k(k, p), jnp.broadcast_shapes(jnp.shape(p), jnp.shape(k)))
    return _pass_at_k_core(jnp.broadcast_to(p, kf.shape), kf)


def log_pass_at_k_weight(p, k):
    """`log w_k(p) = log k + (k-1) log(1-p)`; `-inf` at `p = 1` for `k >= 2`, 0 for `k = 1`.

    Never underflows: use it where `w_k` itself is below the smallest float.

    Args:
      p: success probabilities in [0, 1].
      k: integer `>= 1`, broadcast against `p`.
    """
    p = _validate.probability("p", p)
    k = _validate.integer("k", k, minimum=1)
    kf = _cast_k(k, p)
    return jnp.log(kf) + log_one_minus_p_power(p, kf - 1)


def pass_at_k_weight(p, k):
    """The pass@k prompt weight `w_k(p) = d/dp [1-(1-p)^k] = k (1-p)^(k-1)`.

    `w_1 = 1` exactly (also at `p = 1`); for `k >= 2`, `w_k` decreases from `w_k(0) = k` to
    `w_k(1) = 0`. Underflows to 0 (never NaN) where the true value is below the smallest float.

    Args:
      p: success probabilities in [0, 1].
      k: integer `>= 1`, broadcast against `p`.

    Returns:
      `k (1-p)^(k-1)`, computed as `k exp((k-1) log1p(-p))`, or as
      `exp(log k + (k-1) log1p(-p))` where the power alone would be subnormal (see
      :func:`k_times_exp`).

    Example:
      >>> float(pass_at_k_weight(0.5, 3))
      0.75
    """
    p = _validate.probability("p", p)
    k = _validate.integer("k", k, minimum=1)
    return _weight(p, _cast_k(k, p))


def _prompt_axis_k(k, p):
    """Reshape `k` so its axes lead those of `p`: results have shape `k.shape + batch`."""
    return jnp.reshape(k, jnp.shape(k) + (1,) * jnp.ndim(p))


def log_normalized_weights(p, k, mu=None):
    """Log of the normalised prompt weights `omega_i = mu_i w_k(p_i) / sum_j mu_j w_k(p_j)`.

    `omega` is the softmax over prompts of `(k-1) log(1-p_i) + log mu_i`; computed in log space it
    never underflows, whatever `k`.

    Documented choice for the undefined case: when every prompt with `mu_i > 0` has `p_i = 1` and
    `k >= 2`, all weights vanish; then `omega = mu` (the value it takes whenever all `p` are equal).

    Args:
      p: success probabilities, shape `(..., P)` (prompts on the last axis).
      k: integer or integer array `>= 1`; its axes lead the result.
      mu: prompt weights `(P,)` or broadcastable to `p`; uniform when None.

    Returns:
      `log omega` of shape `k.shape + p.shape`; `-inf` for prompts of zero weight.
    """
    p = _validate.probability("p", p)
    k = _validate.integer("k", k, minimum=1)
    if p.ndim == 0:
        raise ValueError(f"p must have a prompt axis (shape (..., P)); got a scalar {p!r}")
    mu = _validate.prompt_weights(mu, p.shape[-1], p.dtype)
    kk = _prompt_axis_k(k, p).astype(p.dtype)
    log_mu = jnp.where(mu > 0, jnp.log(jnp.where(mu > 0, mu, 1.0)), -jnp.inf)
    logits = log_mu + log_one_minus_p_power(p, kk - 1)
    logits = jnp.broadcast_to(logits, jnp.broadcast_shapes(logits.shape, log_mu.shape))
    degenerate = jnp.isneginf(jnp.max(logits, axis=-1, keepdims=True))
    # log_softmax subtracts the largest logit before the sum (logits near -3e4 at large k keep
    # their ulp); degenerate rows (every logit -inf) are replaced by log mu, and given finite
    # logits first so that no NaN reaches a gradient.
    log_omega = jax.nn.log_softmax(jnp.where(degenerate, 0.0, logits), axis=-1)
    return jnp.where(degenerate, jnp.broadcast_to(log_mu, logits.shape), log_omega)


def normalized_weights(p, k, mu=None):
    """Normalised prompt weights `omega_i = mu_i w_k(p_i) / sum_j mu_j w_k(p_j)`.

    A softmax of `(k-1) log(1-p_i) + log mu_i` over prompts: as `k` grows, `omega` concentrates on
    the prompts of smallest `p` (ratios `w_k(p)/w_k(p')` grow like `((1-p)/(1-p'))^(k-1)`).
    When every weighted prompt has `p = 1` and `k >= 2`, returns `mu` (see
    :func:`log_normalized_weights`).

    Args:
      p: success probabilities, shape `(..., P)`.
      k: integer or integer array `>= 1`; its axes lead the result.
      mu: prompt weights, uniform when None.

    Returns:
      `omega`, shape `k.shape + p.shape`, summing to 1 over the last axis.

    Example:
      >>> import numpy as np
      >>> np.round(np.asarray(normalized_weights(np.array([0.1, 0.9]), 3)), 4)
      array([0.9878, 0.0122])
    """
    return jnp.exp(log_normalized_weights(p, k, mu))
