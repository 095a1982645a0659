"""Prompt interference and gradient conflict (SPEC sections 3 and 4).

With per-prompt gradients `grad p_i` (rows of the Jacobian `J = dp/dtheta`) and prompt weights
`mu`:

- kernel `kappa(x_i, x_j) = <grad p_i, grad p_j>`;
- agreement `a_i = <grad p_i, grad J_1> = sum_j mu_j kappa(x_i, x_j)`, computed as `J (J^T mu)` in
  `O(P d)`, never forming the `P x P` kernel; `sum_i mu_i a_i = ||grad J_1||^2`;
- conflict inner product `I_k = <grad J_k, grad J_1> = sum_i mu_i w_k(p_i) a_i`;
- weighted mean agreement `A_k = sum_i omega_i a_i = I_k / sum_j mu_j w_k(p_j)`, the sign of `I_k`
  without underflow;
- cosine `cos_k = I_k / (||grad J_k|| ||grad J_1||)`.

Functions here take explicit per-prompt gradients (small models). `sim` computes the same
quantities for large models from one reverse and one forward pass.
"""

from __future__ import annotations

import jax.numpy as jnp

from theory import validate as _validate
from theory.weights import (
    _prompt_axis_k,
    normalized_weights,
    pass_at_k_weight,
)

__all__ = [
    "agreement_scores",
    "conflict_inner_product",
    "weighted_mean_agreement",
    "gradient_cosine",
    "safe_cosine",
]


def _flat_grads(per_prompt_grads):
    g = _validate.finite("per_prompt_grads", per_prompt_grads)
    if g.ndim == 0:
        raise ValueError("per_prompt_grads must have shape (P, ...); got a scalar")
    return g.reshape(g.shape[0], -1)


def agreement_scores(per_prompt_grads, mu=None):
    """Agreement scores `a_i = <grad p_i, grad J_1> = sum_j mu_j <grad p_i, grad p_j>`.

    Computed as `J (J^T mu)` with `J` the `(P, D)` matrix of flattened per-prompt gradients:
    `O(P D)` time and memory, the `P x P` kernel is never formed. A prompt with `a_i < 0` is
    negatively interfering: a step along its gradient alone lowers population pass@1.

    Args:
      per_prompt_grads: `(P, ...)`, the gradient of each prompt's success (trailing axes
        flattened).
      mu: prompt weights `(P,)`, uniform when None.

    Returns:
      `(P,)` agreements, with `sum_i mu_i a_i = ||grad J_1||^2 >= 0`.

    Example:
      >>> import numpy as np
      >>> agreement_scores(np.array([[1.0, 0.0], [-1.0, 0.5]]))  # grad J_1 = [0, 0.25]
      Array([0.   , 0.125], dtype=float32)
    """
    g = _flat_grads(per_prompt_grads)
    mu = _validate.prompt_weights(mu, g.shape[0], g.dtype)
    return g @ (mu @ g)


def _per_prompt(p, agreement):
    p = _validate.probability("p", p)
    a = _validate.finite("agreement", agreement).astype(p.dtype)
    _validate.same_shape("p", p, "agreement", a)
    if p.ndim == 0:
        raise ValueError("p and agreement must have a prompt axis (shape (..., P)); got scalars")
    return p, a


def conflict_inner_product(p, agreement, k, mu=None):
    """`I_k = <grad J_k, grad J_1> = sum_i mu_i w_k(p_i) a_i`.

    Equals `E_mu[w_k] ||grad J_1||^2 + Cov_mu(w_k(p), a)`. Conflict (an obtuse angle between the
    pass@k and pass@1 gradients) is `I_k < 0`.

    Underflow: `w_k(p)` underflows at moderate `k` when every `p` is large (all `p >= 0.6` at
    `k = 800`), and then `I_k` reads 0. Decide signs with :func:`weighted_mean_agreement`.

    Args:
      p: per-prompt success `(..., P)`.
      agreement: agreement scores, same shape as `p`.
      k: integer or integer array `>= 1`; its axes lead the result.
      mu: prompt weights, uniform when None.

    Returns:
      `I_k` of shape `k.shape + p.shape[:-1]`.
    """
    p, a = _per_prompt(p, agreement)
    mu = _validate.prompt_weights(mu, p.shape[-1], p.dtype)
    k = _validate.integer("k", k, minimum=1)
    w = pass_at_k_weight(p, _prompt_axis_k(k, p))
    return jnp.sum(mu * w * a, axis=-1)


def weighted_mean_agreement(p, agreement, k, mu=None):
    """`A_k = sum_i omega_i a_i = I_k / sum_j mu_j w_k(p_j)`, with `omega` the normalised weights.

    Has the sign of `I_k` and never underflows: `omega` is computed in log space. Conflict holds
    iff `A_k < 0`.

    Args:
      p: per-prompt success `(..., P)`.
      agreement: agreement scores, same shape as `p`.
      k: integer or integer array `>= 1`; its axes lead the result.
      mu: prompt weights, uniform when None.

    Returns:
      `A_k` of shape `k.shape + p.shape[:-1]`.
    """
    p, a = _per_prompt(p, agreement)
    omega = normalized_weights(p, k, mu)
    return jnp.sum(omega * a, axis=-1)


def gradient_cosine(per_prompt_grads, p, k, mu=None):
    """Cosine between the pass@k and pass@1 gradients, `cos_k = I_k / (||grad J_k|| ||grad J_1||)`.

    `grad J_k = sum_i mu_i w_k(p_i) grad p_i`. The cosine does not change when `grad J_k` is
    rescaled, so it is computed with the normalised weights `omega` (log space): it never
    underflows, whatever `k`. When either gradient is zero the angle is undefined and the cosine
    is reported as 0.

    Args:
      per_prompt_grads: `(P, ...)` per-prompt gradients of success.
      p: `(P,)` per-prompt success.
      k: integer or integer array `>= 1`; its axes lead the result.
      mu: prompt weights, uniform when None.

    Returns:
      `cos_k` of shape `k.shape`.
    """
    g = _flat_grads(per_prompt_grads)
    p = _validate.probability("p", p).astype(g.dtype)
    _validate.leading_axis("p", p, g.shape[0], "per_prompt_grads")
    if p.ndim != 1:
        raise ValueError(f"p must have shape (P,); got {p.shape}")
    mu = _validate.prompt_weights(mu, g.shape[0], g.dtype)
    omega = normalized_weights(p, k, mu)  # (..k, P)
    g1 = mu @ g
    gk = omega @ g  # proportional to grad J_k
    inner = gk @ g1
    return safe_cosine(inner, jnp.linalg.norm(gk, axis=-1) * jnp.linalg.norm(g1))


def safe_cosine(inner, norm_product):
    """`cos = <a, b> / (||a|| ||b||)` from its parts, 0 where a norm is 0 (the angle is undefined).

    Never NaN, and its gradient is finite also where `norm_product` is 0 (the division is
    evaluated on a safe denominator).
    """
    norm_product = jnp.asarray(norm_product)
    positive = norm_product > 0
    return jnp.where(positive, inner / jnp.where(positive, norm_product, 1.0), 0.0)
