"""Step-size windows, smoothness constants and conflict-safe updates (SPEC sections 5 and 8).

Descent lemma: if `J_1` is `L_1`-smooth along the step `theta+ = theta + eta grad J_k`, then

    J_1(theta+) <= J_1(theta) + eta I_k + (L_1 eta^2 / 2) ||grad J_k||^2,

so when `I_k < 0` pass@1 strictly falls for `0 < eta < 2 |I_k| / (L_1 ||grad J_k||^2)`, while
`J_k` strictly rises for `0 < eta < 2 / L_k`.

For the multinomial-logistic policy `logits = Theta psi(x)` with `||psi(x)|| <= B`:
`||hess p|| <= B^2 / 2` (`L_1`), `||grad p|| <= B / (2 sqrt 2)` (`G`, tight), and
`L_k <= k L_1 + k (k-1) G^2`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from theory import validate as _validate

__all__ = [
    "pass1_decrease_window",
    "passk_increase_window",
    "softmax_smoothness_bound",
    "softmax_gradient_bound",
    "passk_smoothness_bound",
    "project_conflict",
    "project_step_safe",
    "mixture_coefficient",
    "safe_k",
]


def _positive(name, x):
    arr = _validate.finite(name, x)
    if _validate.is_concrete(arr) and bool(jnp.any(arr <= 0)):
        raise ValueError(f"{name} must be positive; got {_describe(arr)}")
    return arr


def _nonnegative(name, x):
    arr = _validate.finite(name, x)
    if _validate.is_concrete(arr) and bool(jnp.any(arr < 0)):
        raise ValueError(f"{name} must be non-negative; got {_describe(arr)}")
    return arr


def _describe(arr):
    return repr(float(arr)) if arr.size == 1 else f"an array with min {float(jnp.min(arr))!r}"


def pass1_decrease_window(inner, grad_k_sq_norm, smoothness):
    """Largest step `eta` below which one pass@k step strictly lowers pass@1.

    `eta_1 = 2 |I_k| / (L_1 ||grad J_k||^2)` when `I_k < 0`, else 0 (no conflict, no window).

    Args:
      inner: `I_k = <grad J_k, grad J_1>`.
      grad_k_sq_norm: `||grad J_k||^2 > 0` (positive whenever `I_k != 0`).
      smoothness: `L_1 > 0`, a smoothness constant of `J_1` along the step.

    Returns:
      The window, broadcast over the inputs.
    """
    inner = _validate.finite("inner", inner)
    sq = _nonnegative("grad_k_sq_norm", grad_k_sq_norm)
    smooth = _positive("smoothness", smoothness)
    conflict = inner < 0
    safe_sq = jnp.where(conflict & (sq > 0), sq, 1.0)
    return jnp.where(conflict, 2.0 * -inner / (smooth * safe_sq), 0.0)


def passk_increase_window(smoothness_k):
    """Largest step below which one gradient step on `J_k` strictly raises `J_k`: `2 / L_k`."""
    return 2.0 / _positive("smoothness_k", smoothness_k)


def softmax_smoothness_bound(feature_norm):
    """`L_1 = B^2 / 2`, a bound on `||hess p||` for `logits = Theta psi(x)`, `||psi|| <= B`.

    From `hess p = E_pi[(r - p)(phi - phi_bar)(phi - phi_bar)^T]` and
    `lambda_max(Cov_pi(phi)) <= B^2 / 2`. Tabular softmax: `B = 1`, bound `1/2`.
    """
    b = _nonnegative("feature_norm", feature_norm)
    return b * b / 2.0


def softmax_gradient_bound(feature_norm):
    """`G = B / (2 sqrt 2)`, a tight bound on `||grad p||` for `||psi|| <= B`."""
    return _nonnegative("feature_norm", feature_norm) / (2.0 * math.sqrt(2.0))


def passk_smoothness_bound(feature_norm, k):
    """`L_k <= k L_1 + k (k-1) G^2` with `L_1 = B^2/2`, `G^2 = B^2/8`.

    From `hess [1-(1-p)^k] = w_k(p) hess p - w_k'(p) grad p grad p^T`, with `w_k <= k` and
    `|w_k'| <= k (k-1)`.
    """
    k = _validate.integer("k", k, minimum=1).astype(jnp.result_type(float))
    l1 = softmax_smoothness_bound(feature_norm)
    g = softmax_gradient_bound(feature_norm)
    return k * l1 + k * (k - 1) * g * g


def _vector_pair(g_k, g_1):
    a = _validate.finite("g_k", g_k)
    b = _validate.finite("g_1", g_1).astype(a.dtype)
    _validate.same_shape("g_k", a, "g_1", b)
    return a, b


def project_conflict(g_k, g_1):
    """The closest vector to `g_k` with `<g, g_1> >= 0`:

        g = g_k - min(0, <g_k, g_1>) g_1 / ||g_1||^2.

    Pass@1 cannot fall to first order along `g`, and `<g, g_k> >= 0`. Returns `g_k` unchanged when
    `g_1 = 0`. Flat vectors (ravel pytrees first).
    """
    a, b = _vector_pair(g_k, g_1)
    sq = jnp.vdot(b, b)
    inner = jnp.vdot(a, b)
    coef = jnp.where(sq > 0, jnp.minimum(0.0, inner) / jnp.where(sq > 0, sq, 1.0), 0.0)
    return a - coef * b


def project_step_safe(g_k, g_1, *, step_size, smoothness):
    """The closest `g` to `g_k` with `<g, g_1> >= (L_1 eta / 2) ||g||^2` (SPEC section 8).

    By the descent lemma, a step `eta g` then cannot lower pass@1 even at second order. The set is
    the ball centred at `g_1 / (L_1 eta)` with radius `||g_1|| / (L_1 eta)`; the projection is
    `g_k` if inside, else the nearest point of the sphere.

    Args:
      g_k: flat pass@k gradient.
      g_1: flat pass@1 gradient.
      step_size: `eta > 0`.
      smoothness: `L_1 > 0`.
    """
    a, b = _vector_pair(g_k, g_1)
    c = _positive("step_size", step_size) * _positive("smoothness", smoothness)
    centre = b / c
    radius = jnp.linalg.norm(b) / c
    offset = a - centre
    dist = jnp.linalg.norm(offset)
    inside = dist <= radius
    return jnp.where(inside, a, centre + radius * offset / jnp.where(dist > 0, dist, 1.0))


def mixture_coefficient(g_k, g_1):
    """Smallest `lambda >= 0` with `<g_k + lambda g_1, g_1> >= 0`: `max(0, -<g_k,g_1>/||g_1||^2)`.

    With this `lambda`, recomputed every step, the mixture `g_k + lambda g_1` is the projection
    :func:`project_conflict`. A fixed `lambda` instead ascends `J_k + lambda J_1`.
    """
    a, b = _vector_pair(g_k, g_1)
    sq = jnp.vdot(b, b)
    return jnp.where(sq > 0, jnp.maximum(0.0, -jnp.vdot(a, b)) / jnp.where(sq > 0, sq, 1.0), 0.0)


def safe_k(k_star, k_max):
    """The largest `k < k*` (SPEC section 8): `k* - 1`; `k_max` when there is no `k*`; 0 if `k* = 1`.

    Args:
      k_star: a `critical_k` result (int or None).
      k_max: the search bound used for it.
    """
    k_max = _validate.python_int("k_max", k_max, minimum=1)
    if k_star is None:
        return k_max
    return _validate.python_int("k_star", k_star, minimum=1) - 1
