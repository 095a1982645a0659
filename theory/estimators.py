"""Sampled estimators of pass@k and of its policy gradient (SPEC section 6).

With `n` answers to one prompt of which `c` are correct, trainers estimate pass@k and weight each
answer's score `grad log pi(y_i|x)` by a per-sample coefficient. This module gives:

- :func:`pass_at_k_unbiased`: the unbiased pass@k `rho(n,c,k) = 1 - C(n-c,k)/C(n,k)`
  (Chen et al. 2021);
- :func:`pass_at_k_weight_unbiased`: the unbiased estimate `k C(n-c,k-1)/C(n,k-1)` of the prompt
  weight `w_k(p) = k (1-p)^(k-1)` of :func:`theory.weights.pass_at_k_weight`;
- :func:`pkpo_weights`: the per-sample weights of Pass@K Policy Optimization (Walder & Karkhanis
  2025) for binary or continuous rewards, without baseline, with the leave-one-out baseline, or
  with the `k-1`-subset baseline;
- :func:`grouped_passk_advantages`: the group-normalised analytic pass@k advantage;
- :func:`grpo_advantages` and :func:`rloo_advantages`, the `k`-free references.

Numerics. Ratios of binomial coefficients are never formed from factorials or `lgamma`
differences (those lose about `1e-11` relative at `n = 10^4` and much more where `rho` is small).
`log(C(n-c,k)/C(n,k)) = sum_{j<min(c,k)} log(1 - max(c,k)/(n-j))` is summed term by term (each
term accurate to rounding, compensated summation across chunks), so `rho = -expm1(.)` is accurate
to about `1e-13` relative in float64 for `n` up to `10^4` and beyond, also where `rho` is tiny or
within rounding of 1. The per-sample weights use the ratios `C(t,k-1)/C(n,k)` as cumulative
products of the exactly rounded factors `(t-k+1)/t`, so each is accurate to about `n` ulps.
In float32 (inputs of that dtype) the same formulas hold to float32 rounding: expect relative
errors of order `1e-6` for groups of a few hundred answers and `n * 6e-8` in general, and values
below about `1e-38` underflow to 0.

Validation. Every function checks concrete inputs (Python numbers, numpy arrays, concrete JAX
arrays) and raises `ValueError`/`TypeError` naming the argument and the offending value. Under
`jax.jit`/`vmap` the values are unknown at trace time: only static facts (dtypes, the group size
`n` of a rewards array, shapes) are checked there, and value checks (ranges, `c <= n`,
`k <= n`, binary rewards) are skipped; validate before entering compiled code.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from theory import _validate

__all__ = [
    "pass_at_k_unbiased",
    "pass_at_k_weight_unbiased",
    "pkpo_weights",
    "grouped_passk_advantages",
    "grpo_advantages",
    "rloo_advantages",
]

_BASELINES = (None, "loo", "loo-1")
# Terms of a binomial log-ratio summed per loop iteration: vectorised inner sums keep the loop
# short (n / 64 trips at most) while shapes stay static under jit.
_CHUNK = 64


# --------------------------------------------------------------------------------------------
# Binomial ratios
# --------------------------------------------------------------------------------------------


def _log_binom_ratio_core(n, c, k, dtype):
    """`log(C(n-c,k) / C(n,k))` for integer arrays, `-inf` where `c + k > n` (ratio 0).

    Uses `C(n-c,k)/C(n,k) = prod_{j<m} (n-j-M)/(n-j)` with `m = min(c,k)`, `M = max(c,k)` (the
    ratio is symmetric in `c` and `k`), so at most `min(c,k)` terms are summed. Each term is
    `log1p(-M/(n-j))` when `M/(n-j) < 1/2` and `log((n-j-M)/(n-j))` otherwise: both arguments
    are exactly rounded quotients of integers, so every term is accurate to rounding. The sum runs
    in a `while_loop` over chunks of `_CHUNK` terms (trip count from the data, shapes static),
    with Kahan compensation across chunks. `k = 0` or `c = 0` give exactly 0.
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
        term = jnp.sum(jnp.where(x < 0.5, jnp.log1p(-x), jnp.log(y)), axis=-1)
        # Kahan: the terms share a sign, so the compensated sum is accurate to a few ulps.
        corrected = term - comp
        new_total = total + corrected
        comp = (new_total - total) - corrected
        return j0 + _CHUNK, new_total, comp

    zero = jnp.zeros(m.shape, dtype)
    _, total, _ = lax.while_loop(cond, body, (jnp.zeros((), m.dtype), zero, zero))
    return jnp.where(feasible, total, -jnp.inf)


def _rho_core(n, c, k, dtype):
    """Unbiased pass@k `1 - C(n-c,k)/C(n,k)` without validation; `rho(n,c,0) = 0`."""
    # `0 - expm1` rather than `-expm1`: gives +0.0, not -0.0, where rho vanishes.
    return 0.0 - jnp.expm1(_log_binom_ratio_core(n, c, k, dtype))


_rho_jit = jax.jit(_rho_core, static_argnames=("dtype",))
_log_binom_ratio_jit = jax.jit(_log_binom_ratio_core, static_argnames=("dtype",))


def _default_float():
    return jnp.result_type(float)


def _host(x):
    return np.asarray(x) if _validate.is_concrete(x) else None


def _where(arr: np.ndarray, bad: np.ndarray) -> str:
    if arr.ndim == 0:
        return ""
    return f" at index {tuple(int(i) for i in np.argwhere(bad)[0])}"


def _counts(n, c, k, *, k_offset: int):
    """Validate integer counts `n, c, k` (`0 <= c <= n`, `1 <= k`, `k - k_offset <= n`)."""
    n = _validate.integer("n", n, minimum=0)
    c = _validate.integer("c", c, minimum=0)
    k = _validate.integer("k", k, minimum=1)
    try:
        jnp.broadcast_shapes(n.shape, c.shape, k.shape)
    except ValueError as err:
        raise ValueError(
            f"n, c and k must broadcast together; got shapes {n.shape}, {c.shape}, {k.shape}"
        ) from err
    hn, hc, hk = _host(n), _host(c), _host(k)
    if hn is not None and hc is not None:
        bn, bc = np.broadcast_arrays(hn, hc)
        bad = bc > bn
        if bad.any():
            i = np.argwhere(bad)[0] if bad.ndim else ()
            raise ValueError(
                f"c must be <= n (a count of correct answers among n); got c={int(bc[tuple(i)])} "
                f"with n={int(bn[tuple(i)])}{_where(bc, bad)}"
            )
    if hn is not None and hk is not None:
        bn, bk = np.broadcast_arrays(hn, hk)
        bad = bk - k_offset > bn
        if bad.any():
            i = np.argwhere(bad)[0] if bad.ndim else ()
            bound = "n" if k_offset == 0 else f"n + {k_offset}"
            raise ValueError(
                f"k must be <= {bound}; got k={int(bk[tuple(i)])} with n={int(bn[tuple(i)])}"
                f"{_where(bk, bad)}"
            )
    return n, c, k


def pass_at_k_unbiased(n, c, k):
    """Unbiased pass@k from `n` samples with `c` correct (Chen et al. 2021).

    `rho(n, c, k) = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i)`,
    exactly 1 when `n - c < k`. When `c ~ Binomial(n, p)`, `E[rho] = 1 - (1-p)^k`.

    Computed as `-expm1(sum log(1 - max(c,k)/(n-j)))` over the `min(c,k)` factors of the
    symmetric product form: accurate to about `1e-13` relative in float64 for `n` up to `10^4` and
    beyond, including `rho` near 0 and near 1 (see the module docstring).

    Args:
      n: number of samples, integer array-like `>= k`.
      c: number of correct samples, integer array-like with `0 <= c <= n`.
      k: integer array-like `>= 1`, `<= n`; `n`, `c`, `k` broadcast together.

    Returns:
      `rho` of the broadcast shape, in the default float dtype (float64 when x64 is enabled).

    Raises:
      TypeError: non-integer `n`, `c` or `k` (floats are refused even when integral).
      ValueError: `k < 1`, `c < 0`, `c > n` or `k > n` (concrete inputs; skipped under tracing).

    Example:
      >>> round(float(pass_at_k_unbiased(4, 2, 2)), 12)  # 1 - C(2,2)/C(4,2) = 5/6
      0.833333333333

    References:
      Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. (1).
    """
    n, c, k = _counts(n, c, k, k_offset=0)
    return _rho_jit(n, c, k, dtype=_default_float())


def pass_at_k_weight_unbiased(n, c, k):
    """Unbiased estimate of the prompt weight `w_k(p) = k (1-p)^(k-1)` from `n` samples.

    `k C(n-c, k-1) / C(n, k-1) = k (1 - rho(n, c, k-1))`: `C(n-c,k-1)/C(n,k-1)` is the chance that
    `k-1` answers drawn without replacement are all incorrect, unbiased for `(1-p)^(k-1)` when
    `c ~ Binomial(n, p)`. It is 0 when `n - c < k - 1`, and exactly 1 at `k = 1`.

    Args:
      n: number of samples, integer array-like `>= k - 1`.
      c: number of correct samples, `0 <= c <= n`.
      k: integer array-like `>= 1` with `k - 1 <= n`; `n`, `c`, `k` broadcast together.

    Returns:
      The estimate, of the broadcast shape, in the default float dtype.

    Raises:
      TypeError: non-integer counts.
      ValueError: `k < 1`, `c < 0`, `c > n`, `k - 1 > n` (concrete inputs only).

    Example:
      >>> float(pass_at_k_weight_unbiased(4, 1, 3))  # 3 C(3,2)/C(4,2)
      1.5

    References:
      Chen et al. 2021 (the estimator of `(1-p)^m`); Walder & Karkhanis 2025, "Pass@K Policy
      Optimization".
    """
    n, c, k = _counts(n, c, k, k_offset=1)
    dtype = _default_float()
    log_ratio = _log_binom_ratio_jit(n, c, k - 1, dtype=dtype)
    return k.astype(dtype) * jnp.exp(log_ratio)


# --------------------------------------------------------------------------------------------
# Per-sample weights (PKPO)
# --------------------------------------------------------------------------------------------


def _max_at_k_coefficients(n: int, k, dtype):
    """`A[t] = C(t, k-1)/C(n,k)` and `B[t] = C(t-1, k-2)/C(n,k)` (`B[0] = 0`), `t = 0..n-1`.

    `A[n-1] = k/n` and `A[t-1] = A[t] (t-k+1)/t`: a reverse cumulative product of exactly rounded
    factors (clamped at 0 below `t = k-1`, where the binomial vanishes, so no sign flips).
    `B[t] = A[t] (k-1)/t`. Shapes `k.shape + (n,)`.
    """
    kf = k.astype(dtype)[..., None]
    t = jnp.arange(n, dtype=dtype)
    m = t + 1
    factors = jnp.where(t < n - 1, jnp.maximum(m - (kf - 1), 0) / m, 1)
    a = (kf / n) * lax.cumprod(factors, axis=factors.ndim - 1, reverse=True)
    b = jnp.where(t >= 1, a * (kf - 1) / jnp.maximum(t, 1), 0)
    return a, b


def _exclusive_suffix_sum(x):
    """`out[t] = sum_{u > t} x[u]` along the last axis."""
    total = lax.cumsum(x, axis=x.ndim - 1, reverse=True)
    return jnp.concatenate([total[..., 1:], jnp.zeros_like(x[..., :1])], axis=-1)


def _exclusive_prefix_sum(x):
    """`out[t] = sum_{u < t} x[u]` along the last axis."""
    total = jnp.cumsum(x, axis=-1)
    return jnp.concatenate([jnp.zeros_like(x[..., :1]), total[..., :-1]], axis=-1)


@functools.partial(jax.jit, static_argnames=("baseline",))
def _pkpo_kernel(rewards, k, baseline):
    n = rewards.shape[-1]
    dtype = rewards.dtype
    axis = rewards.ndim - 1
    k = jnp.broadcast_to(k, rewards.shape[:-1])
    order = jnp.argsort(rewards, axis=-1)
    r = jnp.take_along_axis(rewards, order, axis=-1)
    idx = jnp.broadcast_to(jnp.arange(n), r.shape)
    # Tie runs of the sorted rewards: `run_start[t]` = number of rewards strictly below r[t];
    # `run_end[t]` = last position holding r[t]. Reading every tied sample's weight at one position
    # makes tied weights bit-for-bit equal whatever order the sort left them in.
    new_run = jnp.concatenate([jnp.ones_like(r[..., :1], bool), r[..., 1:] != r[..., :-1]], -1)
    ends_run = jnp.concatenate([r[..., :-1] != r[..., 1:], jnp.ones_like(r[..., :1], bool)], -1)
    run_start = lax.cummax(jnp.where(new_run, idx, 0), axis=axis)
    run_end = lax.cummin(jnp.where(ends_run, idx, n - 1), axis=axis, reverse=True)

    a, b = _max_at_k_coefficients(n, k, dtype)
    a = jnp.broadcast_to(a, r.shape)
    b = jnp.broadcast_to(b, r.shape)
    kf = k.astype(dtype)[..., None]
    if baseline == "loo-1":
        # s_(t) = (1/C(n,k)) sum_{(k-1)-subsets T below r_(t)} (r_(t) - max T)
        #       = A[L] r_(t) - sum_{u<L} B[u+1] r_(u),  L = #{rewards < r_(t)}.
        shifted_b = jnp.concatenate([b[..., 1:], jnp.zeros_like(b[..., :1])], axis=-1)
        below = _exclusive_prefix_sum(shifted_b * r)
        weights = (
            jnp.take_along_axis(a, run_start, axis=-1) * r
            - jnp.take_along_axis(below, run_start, axis=-1)
        )
    else:
        # s_(t) = (C(t,k-1) r_(t) + sum_{u>t} C(u-1,k-2) r_(u)) / C(n,k) (0-based positions).
        weights = a * r + _exclusive_suffix_sum(b * r)
        if baseline == "loo":
            # Mean of the weights recomputed without sample t = (k/(n-1)) * max@k estimate of the
            # other n-1: positions below t keep their rank, positions above drop by one.
            alpha, _ = _max_at_k_coefficients(n - 1, k, dtype)
            alpha = jnp.broadcast_to(alpha, r.shape[:-1] + (n - 1,))
            below = _exclusive_prefix_sum(jnp.concatenate(
                [alpha * r[..., :-1], jnp.zeros_like(r[..., :1])], axis=-1))
            above = lax.cumsum(alpha * r[..., 1:], axis=axis, reverse=True)
            above = jnp.concatenate([above, jnp.zeros_like(r[..., :1])], axis=-1)
            weights = weights - kf / (n - 1) * (below + above)
        weights = jnp.take_along_axis(weights, run_end, axis=-1)
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(weights, inverse, axis=-1)


def _group_rewards(rewards, who: str):
    """Rewards in [0,1] (no NaN) with a group axis last."""
    rewards = _validate.probability("rewards", rewards)
    if rewards.ndim == 0:
        raise ValueError(
            f"rewards must have a group axis (shape (..., n), one entry per sample); got a scalar "
            f"{rewards!r} in {who}"
        )
    return rewards


def _group_k(k, rewards, *, limit: int, what: str):
    """`k` as an integer array broadcasting against the batch axes of `rewards`; `k <= limit`."""
    k = _validate.integer("k", k, minimum=1)
    batch = rewards.shape[:-1]
    try:
        ok = jnp.broadcast_shapes(k.shape, batch) == batch
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"k must be a scalar or broadcast against the batch axes {batch} of rewards; "
            f"got shape {k.shape}"
        )
    hk = _host(k)
    if hk is not None:
        bad = hk > limit
        if bad.any():
            raise ValueError(
                f"k must be <= {what} = {limit} for a group of n = {rewards.shape[-1]} samples; "
                f"got k={int(hk[tuple(np.argwhere(bad)[0])] if hk.ndim else hk)}"
            )
    return k


def pkpo_weights(rewards, k, baseline=None):
    """Per-sample PKPO weights `s_i` for the update `sum_i s_i grad log pi(y_i|x)`.

    Without baseline, `s_i = (1/C(n,k)) sum_{k-subsets S containing i} max_{j in S} r_j`: each
    `k`-subset is a draw of `k` answers, so `sum_i s_i grad log pi(y_i)` is unbiased for
    `grad E[max of k rewards]` (`grad (1-(1-p)^k) = w_k(p) grad p` for binary rewards). With
    rewards sorted ascending, `r_(1) <= ... <= r_(n)`,

      `s_(i) = (C(i-1,k-1) r_(i) + sum_{j>i} C(j-2,k-2) r_(j)) / C(n,k)`,

    which on binary rewards is `k/n` for a correct sample and `(k/n) rho(n-1, c, k-1)` for an
    incorrect one. Baselines (both leave the expectation unchanged: they do not depend on `y_i`):

    - `"loo"` (`k <= n-1`): `s_i - (1/(n-1)) sum_{j != i} s_j^{(-i)}`, where `s^{(-i)}` are the
      weights recomputed on the group without sample `i`; the subtracted mean equals
      `(k/(n-1))` times the max@k estimate of the other `n-1` rewards.
    - `"loo-1"` (the `k-1`-subset baseline): replace, in every subset `S = {i} + T`, `max S` by
      `max T`, i.e. subtract `b_i = (1/C(n,k)) sum_{(k-1)-subsets T of the others} max T`
      (`max` of the empty set is 0, so `k = 1` has no baseline). Then
      `s_i - b_i = (1/C(n,k)) sum_T (r_i - max T)_+`, which only involves subsets of the rewards
      strictly below `r_i`; binary: correct `C(n-c,k-1)/C(n,k)`, incorrect exactly 0.

    Reference values, `n=4`, rewards `[1,1,0,0]`, `k=2`: plain `[1/2,1/2,1/3,1/3]`, loo
    `[1/18,1/18,-1/3,-1/3]`, loo-1 `[1/3,1/3,0,0]`.

    Cost `O(n log n)` per group (one sort, cumulative sums and products; no subset enumeration).
    Tied rewards get bit-for-bit equal weights, and the output is permutation-equivariant.

    Args:
      rewards: rewards in [0, 1] (binary or continuous), shape `(..., n)`; the last axis is the
        group of `n` samples of one prompt. Float32 input computes in float32.
      k: integer `>= 1` (scalar, or an integer array broadcasting against `rewards.shape[:-1]`),
        `k <= n` (`k <= n-1` for `"loo"`).
      baseline: `None`, `"loo"` or `"loo-1"`.

    Returns:
      The weights, same shape as `rewards`, in its float dtype.

    Raises:
      TypeError: non-integer `k`, non-numeric rewards.
      ValueError: rewards outside [0, 1] or NaN, `k < 1`, `k > n` (`k > n-1` for `"loo"`),
        unknown `baseline`, a scalar `rewards`, `"loo"` with `n < 2`. Value checks on rewards and
        `k` are skipped under tracing; the group size is static and always checked.

    Example:
      >>> import numpy as np
      >>> np.asarray(pkpo_weights(np.array([1.0, 1.0, 0.0, 0.0]), 2, baseline="loo-1"))
      array([0.33333333, 0.33333333, 0.        , 0.        ])

    References:
      Walder & Karkhanis 2025, "Pass@K Policy Optimization: Solving Harder Reinforcement Learning
      Problems" (the max@k estimator and its `loo`/`loo-1` baselines).
    """
    if baseline not in _BASELINES:
        raise ValueError(f"baseline must be one of {_BASELINES}; got {baseline!r}")
    rewards = _group_rewards(rewards, "pkpo_weights")
    n = rewards.shape[-1]
    if baseline == "loo":
        if n < 2:
            raise ValueError(f"baseline='loo' needs groups of n >= 2 samples; got n = {n}")
        k = _group_k(k, rewards, limit=n - 1, what="n-1 (baseline='loo')")
    else:
        k = _group_k(k, rewards, limit=n, what="n")
    return _pkpo_kernel(rewards, k, baseline)


# --------------------------------------------------------------------------------------------
# Group-normalised advantages
# --------------------------------------------------------------------------------------------


def _grouped_count_advantages(n: int, c, k, dtype):
    """Group-normalised pass@k advantages for a group of `n` with `c` correct.

    Returns `(correct, incorrect, degenerate)`. With `q = C(n-c,k)/C(n,k) = 1 - R` and
    `q' = C(n-c-1,k-1)/C(n-1,k-1)`, `q = ((n-c)/n) q'`, so the incorrect advantage
    `(q - q')/sigma = -(c/n) q'/sigma` has no cancellation; both are formed in log space
    (`sigma = sqrt(R q)`). `degenerate` marks `sigma = 0` (`c = 0` or `c + k > n`), where both
    are 0.
    """
    log_q = _log_binom_ratio_core(n, c, k, dtype)
    log_qp = _log_binom_ratio_core(n - 1, c, k - 1, dtype)
    degenerate = (c == 0) | (c + k > n)
    safe_log_q = jnp.where(degenerate, -1.0, log_q)
    safe_log_qp = jnp.where(degenerate, 0.0, log_qp)
    log_r = jnp.log(-jnp.expm1(safe_log_q))
    correct = jnp.exp(0.5 * (safe_log_q - log_r))
    incorrect = -(c.astype(dtype) / n) * jnp.exp(safe_log_qp - 0.5 * (log_r + safe_log_q))
    zero = jnp.zeros_like(correct)
    return jnp.where(degenerate, zero, correct), jnp.where(degenerate, zero, incorrect), degenerate


@jax.jit
def _grouped_kernel(rewards, k):
    n = rewards.shape[-1]
    is_correct = rewards == 1
    c = jnp.sum(is_correct, axis=-1)
    k = jnp.broadcast_to(k, c.shape).astype(c.dtype)
    correct, incorrect, degenerate = _grouped_count_advantages(n, c, k, rewards.dtype)
    adv = jnp.where(is_correct, correct[..., None], incorrect[..., None])
    return adv, degenerate


def grouped_passk_advantages(rewards, k):
    """Group-normalised analytic pass@k advantages for binary rewards.

    For a group of `N` answers with `N_neg` incorrect, `R = rho(N, N - N_neg, k)` and
    `sigma = sqrt(R (1-R))`: a correct answer gets `(1 - R)/sigma`, an incorrect one
    `(1 - R - C(N_neg-1,k-1)/C(N-1,k-1))/sigma`. These are the group-mean-centred, std-normalised
    pass@k rewards of all `k`-subsets, averaged over the subsets holding each answer.

    When `R` is 0 or 1 (`N_neg = N`, or `N_neg < k`, hence always when `N = k`) `sigma = 0`: every
    advantage of that group is defined as 0, and a `RuntimeWarning` names how many groups were
    affected (only for concrete inputs; under `jit` the zeros are returned silently).

    Args:
      rewards: binary rewards (0 or 1), shape `(..., N)`, group last.
      k: integer `>= 1`, `<= N`, scalar or broadcasting against `rewards.shape[:-1]`.

    Returns:
      Advantages of the same shape and float dtype as `rewards`.

    Raises:
      TypeError / ValueError: non-integer `k`, `k < 1`, `k > N`, rewards outside {0, 1}. Under
      tracing the values are not checked and a reward counts as correct exactly when it equals 1.

    Example:
      >>> import numpy as np
      >>> np.round(np.asarray(grouped_passk_advantages(np.array([1.0, 0, 0, 0]), 2)), 4)
      array([ 1.    , -0.3333, -0.3333, -0.3333])

    References:
      Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration and Exploitation of
      Large Reasoning Models" (the analytic group-normalised pass@k advantage).
    """
    rewards = _group_rewards(rewards, "grouped_passk_advantages")
    if _validate.is_concrete(rewards):
        host = np.asarray(rewards)
        bad = (host != 0) & (host != 1)
        if bad.any():
            first = host[tuple(np.argwhere(bad)[0])] if host.ndim else host
            raise ValueError(
                f"rewards must be binary (0 or 1) for grouped_passk_advantages; got "
                f"{float(first)!r}{_where(host, bad)}"
            )
    n = rewards.shape[-1]
    k = _group_k(k, rewards, limit=n, what="N")
    adv, degenerate = _grouped_kernel(rewards, k)
    if _validate.is_concrete(degenerate) and _validate.is_concrete(k):
        count = int(np.sum(np.asarray(degenerate)))
        if count:
            warnings.warn(
                f"grouped_passk_advantages: {count} of {np.asarray(degenerate).size} groups have "
                f"sigma = 0 (all answers incorrect, or fewer than k incorrect); their advantages "
                f"are set to 0",
                RuntimeWarning,
                stacklevel=2,
            )
    return adv


@jax.jit
def _grpo_kernel(rewards):
    mean = jnp.mean(rewards, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.mean(jnp.square(rewards - mean), axis=-1, keepdims=True))
    # Constant groups are detected by equality, not by `std == 0`: the rounded mean of equal
    # rewards can differ from them by an ulp, and dividing that residue by its own std would give
    # advantages of +-1 instead of 0.
    constant = jnp.all(rewards == rewards[..., :1], axis=-1, keepdims=True)
    safe_std = jnp.where(constant, 1, std)
    return jnp.where(constant, jnp.zeros_like(rewards), (rewards - mean) / safe_std)


def grpo_advantages(rewards):
    """GRPO advantages `(r_i - mean(r)) / std(r)` within each group.

    `std` is the population standard deviation (divide by `n`). Groups whose rewards are all equal
    (`std = 0`) get zero advantages.

    Args:
      rewards: rewards in [0, 1], shape `(..., n)`, group last.

    Returns:
      Advantages, same shape and float dtype as `rewards`.

    Raises:
      ValueError: rewards outside [0, 1] or NaN (concrete inputs), scalar `rewards`.

    Example:
      >>> import numpy as np
      >>> np.asarray(grpo_advantages(np.array([1.0, 0.0, 0.0, 0.0])))
      array([ 1.73205081, -0.57735027, -0.57735027, -0.57735027])

    References:
      Shao et al. 2024, "DeepSeekMath" (group relative policy optimisation).
    """
    rewards = _group_rewards(rewards, "grpo_advantages")
    return _grpo_kernel(rewards)


@jax.jit
def _rloo_kernel(rewards):
    n = rewards.shape[-1]
    others = jnp.sum(rewards, axis=-1, keepdims=True) - rewards
    return rewards - others / (n - 1)


def rloo_advantages(rewards):
    """REINFORCE leave-one-out advantages `r_i - (1/(n-1)) sum_{j != i} r_j`.

    Args:
      rewards: rewards in [0, 1], shape `(..., n)` with `n >= 2`, group last.

    Returns:
      Advantages, same shape and float dtype as `rewards`.

    Raises:
      ValueError: rewards outside [0, 1] or NaN (concrete inputs), groups of fewer than 2.

    Example:
      >>> import numpy as np
      >>> np.asarray(rloo_advantages(np.array([1.0, 0.0, 0.0])))
      array([ 1. , -0.5, -0.5])

    References:
      Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!";
      Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization".
    """
    rewards = _group_rewards(rewards, "rloo_advantages")
    if rewards.shape[-1] < 2:
        raise ValueError(
            f"rloo_advantages needs groups of n >= 2 samples; got rewards of shape {rewards.shape}"
        )
    return _rloo_kernel(rewards)
