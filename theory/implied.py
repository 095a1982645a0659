"""Implied prompt weights: what each trainer does to `grad p` in expectation (SPEC section 6).

A trainer that draws `n` answers to a prompt of success probability `p` and applies advantages
`A_i` as `sum_i A_i grad log pi(y_i|x)` moves, in expectation, along `grad p` only. With binary
rewards, the advantage of answer 1 depends on its own reward `r_1` and on the number `c'` of
correct answers among the other `n-1` (`c' ~ Binomial(n-1, p)`, independent of `y_1`), and
`E[A_1 grad log pi(y_1)] = E[A_1 | r_1=1] grad p + E[A_1 | r_1=0] grad (1-p)`, so that

  `E[sum_i A_i grad log pi(y_i)] = n (E[A_1 | r_1=1] - E[A_1 | r_1=0]) grad p`
  `                            = n sum_{c'} Binom(c'; n-1, p) (A_1(c'+1) - A_0(c')) grad p`,

with `A_1(c)` (`A_0(c)`) the advantage of a correct (incorrect) answer in a group with `c`
correct. :func:`implied_prompt_weight` evaluates this sum exactly; it is the weight `w(p)` such
that the expected update is `w(p) grad p`, the analogue of `w_k(p)` in
`grad J_k = sum_i mu_i w_k(p_i) grad p_i`.

Normalisation (the `summed` field of each :data:`theory.estimator_table.ESTIMATOR_TABLE` entry,
which also holds each method's contrast `h(c') = scale (A_1(c'+1) - A_0(c'))` and limit; each
normalisation differs from the sum above by a factor free of `p`):

- `"pkpo"`, `"pkpo-loo"`, `"pkpo-loo-1"`: the update summed over the group, as written above.
  PKPO is unbiased, so this is `w_k(p) = k (1-p)^(k-1)` at every `n` and in the limit.
- `"reinforce"`, `"rloo"`, `"grpo"`, `"grouped-passk"`: the update averaged over the group (the
  sum above divided by `n`), i.e. `E[A_1 | r_1=1] - E[A_1 | r_1=0]`. Then REINFORCE and RLOO give
  exactly 1 at every `n`; GRPO tends to `1/sqrt(p(1-p))`; the group-normalised pass@k advantage
  tends to `(1-p)^(k-1) / sqrt(P_k (1-P_k))`, `P_k = 1-(1-p)^k` (at `p = 0.05`, `k = 4`:
  0.889 at `n = 8` against the limit 2.206).

Extremes. At finite `n` the weight is a polynomial in `p` and is finite on all of [0, 1]
(at `p = 0` it is the weight of a group whose only correct answer is answer 1). The limits
`n = None` are: GRPO `+inf` at `p = 0` and `p = 1`; group-normalised pass@k `+inf` at `p = 0`,
and at `p = 1` the limit of `(1-p)^(k/2-1)`: `+inf` for `k = 1`, `1` for `k = 2`, `0` for
`k >= 3`; the others are finite. No value is NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlog1py, xlogy

from theory import validate as _validate
from theory.estimator_table import ESTIMATOR_TABLE, gradient_estimator

__all__ = ["implied_prompt_weight", "implied_weight_unbiased", "IMPLIED_METHODS"]

#: The trainers of :data:`theory.estimator_table.ESTIMATOR_TABLE`, in its order.
IMPLIED_METHODS = tuple(ESTIMATOR_TABLE)


@functools.partial(jax.jit, static_argnames=("method", "n"))
def _finite_weight(p, k, method, n):
    """`sum_{c'} Binom(c'; n-1, p) h(c')` with the table's contrast `h`."""
    dtype = p.dtype
    others = jnp.arange(n)  # c', the correct answers among the other n - 1
    pe = p[..., None]
    # Binomial(n-1, p) law of c'; xlogy/xlog1py make 0 log 0 = 0 at p = 0 and p = 1.
    log_pmf = (
        gammaln(jnp.asarray(n, dtype))
        - gammaln(others + 1.0)
        - gammaln(n - others.astype(dtype))
        + xlogy(others.astype(dtype), pe)
        + xlog1py((n - 1 - others).astype(dtype), -pe)
    )
    contrast = ESTIMATOR_TABLE[method].contrast(others, k[..., None], n, dtype)
    return jnp.sum(jnp.exp(log_pmf) * contrast, axis=-1)


def _checked_k(entry, k, n):
    """Validate `k` for `entry` (required when it needs an order; `k <= max_k(n)` when concrete)."""
    if k is None:
        if entry.needs_k:
            raise ValueError(f"k is required for method={entry.name!r}; got k=None")
        return None
    k = _validate.integer("k", k, minimum=1)
    if n is not None and entry.needs_k and _validate.is_concrete(k):
        entry.check_k(int(np.max(np.asarray(k))), n)
    return k


def implied_prompt_weight(method, p, *, k=None, n=None):
    """The expected weight `w(p)` on `grad p` of a trainer's update, at `n` samples or `n -> inf`.

    `w(p) = scale * sum_{c'=0}^{n-1} C(n-1,c') p^c' (1-p)^(n-1-c') (A_1(c'+1) - A_0(c'))`, where
    `A_1(c)`, `A_0(c)` are the advantages a method gives a correct and an incorrect answer in a
    binary group of `n` with `c` correct, and `scale` is `n` for the PKPO variants (update summed
    over the group) and 1 for the others (update averaged over the group); see the module
    docstring for the derivation. Limits (`n = None`): REINFORCE and RLOO `1`; GRPO
    `1/sqrt(p(1-p))`; PKPO variants `w_k(p) = k(1-p)^(k-1)` (equal at every finite `n`: PKPO is
    unbiased); `"grouped-passk"` `(1-p)^(k-1)/sqrt(P_k(1-P_k))`, `P_k = 1-(1-p)^k`.

    Args:
      method: one of `"reinforce"`, `"rloo"`, `"grpo"`, `"pkpo"`, `"pkpo-loo"`, `"pkpo-loo-1"`,
        `"grouped-passk"` (the advantages of :func:`theory.estimators.pkpo_weights` with baseline
        None/"loo"/"loo-1", :func:`~theory.estimators.grpo_advantages`,
        :func:`~theory.estimators.rloo_advantages`,
        :func:`~theory.estimators.grouped_passk_advantages`; REINFORCE is `A_i = r_i`).
      p: success probabilities in [0, 1], any shape.
      k: integer (array) `>= 1`, broadcast against `p`; required for the PKPO variants and
        `"grouped-passk"`, validated but unused by the `k`-free methods (whose result has the shape
        of `p`). At finite `n`, `k <= n` (`k <= n-1` for `"pkpo-loo"`).
      n: group size (a Python integer, `>= 1`; `>= 2` for `"rloo"`), or None for the
        `n -> infinity` limit. GRPO at `n = 1` has weight 0 (a lone answer has zero advantage).

    Returns:
      `w(p)` of the broadcast shape of `p` and `k`. Finite on [0, 1] at finite `n`; the limits may
      be `+inf` at `p = 0` or `p = 1` (module docstring), never NaN.

    Raises:
      ValueError: unknown `method`, `p` outside [0, 1] or NaN, missing `k`, `k < 1`, `k > n`,
        `n` too small. TypeError: non-integer `k` or `n`. Value checks on `p` and `k` are skipped
        under tracing (`method` and `n` are static and always checked).

    Example:
      >>> round(float(implied_prompt_weight("grouped-passk", 0.05, k=4, n=8)), 3)
      0.889
      >>> round(float(implied_prompt_weight("grouped-passk", 0.05, k=4)), 3)
      2.206

    References:
      Walder & Karkhanis 2025, "Pass@K Policy Optimization"; Chen et al. 2025, "Pass@k Training
      for Adaptively Balancing Exploration and Exploitation of Large Reasoning Models".
    """
    entry = gradient_estimator(method)
    p = _validate.probability("p", p)
    if n is not None:
        n = _validate.python_int("n", n, minimum=entry.min_n)
    k = _checked_k(entry, k, n)
    if k is not None:
        try:
            jnp.broadcast_shapes(k.shape, p.shape)
        except ValueError as err:
            raise ValueError(f"k must broadcast against p; got shapes {k.shape} and {p.shape}") from err
    if n is None or entry.contrast is None:
        # contrast None: h(c') = 1 for every c', so the binomial sum is exactly 1 at every n.
        return entry.limit(p, k)
    if not entry.needs_k:
        return _finite_weight(p, jnp.ones((), jnp.int32), method, n)
    p, k = jnp.broadcast_arrays(p, k)
    return _finite_weight(p, k, method, n)


def implied_weight_unbiased(n, c, method, k=None):
    """Unbiased estimate, from the counts of one group, of the finite-`n` implied weight `v_n(p)`.

    `v_n(p) = implied_prompt_weight(method, p, k=k, n=n) = sum_{c'} Binom(c'; n-1, p) h(c')` is an
    average over `c'`, the correct answers among the other `n-1` answers, of the contrast
    `h(c') = scale (A_1(c'+1) - A_0(c'))` (module docstring). From `c ~ Binomial(n, p)` correct
    answers among all `n`, drop one answer at random: the other `n-1` are iid, with `c-1` correct
    if the dropped one was correct (chance `c/n`) and `c` otherwise, so

        T(c) = (c/n) h(c-1) + (1 - c/n) h(c),    E[T(c)] = v_n(p)  exactly, for every p.

    (`h(-1)` and `h(n)` never matter: their factors are 0.) For the PKPO variants `T(c)` is the
    unbiased `w_k` estimate `k C(n-c, k-1)/C(n, k-1)` (:func:`theory.pass_at_k_weight_unbiased`;
    unbiased estimators of a polynomial in `p` from `c` are unique); for REINFORCE and RLOO it is 1.
    Unlike the plug-in `v_n(c/n)`, it gives a prompt with `c = 0` the weight `h(0)`, not `v_n(0)`
    evaluated at a guess.

    Args:
      n: group size, a Python integer `>= 1` (`>= 2` for `"rloo"`).
      c: counts of correct answers, integers in `[0, n]`, any shape.
      method: one of :data:`IMPLIED_METHODS`.
      k: Python integer `>= 1` for the PKPO variants and `"grouped-passk"` (`k <= n`, `k <= n-1`
        for `"pkpo-loo"`); ignored (but validated when given) for the `k`-free methods.

    Returns:
      `T(c)`, float array of the shape of `c` (default float dtype).

    Raises:
      ValueError: unknown `method`, counts outside `[0, n]`, `k` out of range or missing.
      TypeError: non-integer `n`, `c` or `k`.

    Example:
      >>> float(implied_weight_unbiased(4, 1, "pkpo", 3))  # 3 C(3,2)/C(4,2)
      1.5
    """
    entry = gradient_estimator(method)
    n = _validate.python_int("n", n, minimum=entry.min_n)
    counts = _validate.integer("c", c, minimum=0)
    if _validate.is_concrete(counts):
        host = np.asarray(counts)
        if (host > n).any():
            raise ValueError(f"c must be <= n = {n}; got c={int(host.max())}")
    if k is not None:
        k = _validate.python_int("k", k, minimum=1)
    _checked_k(entry, k, n)
    dtype = jnp.result_type(float)
    if entry.contrast is None:
        return jnp.ones(jnp.shape(counts), dtype)
    return _unbiased_jit(counts, np.int32(1 if k is None else k), method=method, n=n, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("method", "n", "dtype"))
def _unbiased_jit(counts, k, *, method, n, dtype):
    others = jnp.arange(n)
    h = ESTIMATOR_TABLE[method].contrast(others, k[None], n, dtype)  # (n,) h(c') for c' = 0..n-1
    h = jnp.broadcast_to(h, (n,))
    cf = counts.astype(dtype)
    below = h[jnp.clip(counts - 1, 0, n - 1)]  # h(c-1), weight c/n (0 when c = 0)
    same = h[jnp.clip(counts, 0, n - 1)]  # h(c), weight 1 - c/n (0 when c = n)
    return jnp.where(counts > 0, cf / n * below, 0.0) + jnp.where(counts < n, (1 - cf / n) * same, 0.0)
