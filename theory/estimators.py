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

Numerics. The binomial ratios come from :mod:`theory.binomial` (sums of logarithms of exactly
rounded quotients, never factorials), so `rho` is accurate to about `1e-13` relative in float64
for `n` up to `10^4` and beyond, also where `rho` is tiny or within rounding of 1. The per-sample
weights (:mod:`theory.pkpo_engine`) use the ratios `C(t,k-1)/C(n,k)` as cumulative products of
the exactly rounded factors `(t-k+1)/t`, so each is accurate to about `n` ulps. In float32 (inputs
of that dtype) the same formulas hold to float32 rounding: expect relative errors of order `1e-6`
for groups of a few hundred answers and `n * 6e-8` in general, and values below about `1e-38`
underflow to 0.

Count forms. On binary rewards the advantages of a group depend only on its count `c` of correct
answers: :func:`grouped_count_advantages` and :func:`grpo_count_advantages` give the advantage of
a correct and of an incorrect answer for each `c`, the form the implied weights of
:mod:`theory.implied` sum over.

Validation. Every function checks concrete inputs (Python numbers, numpy arrays, concrete JAX
arrays) and raises `ValueError`/`TypeError` naming the argument and the offending value. Under
`jax.jit`/`vmap` the values are unknown at trace time: only static facts (dtypes, the group size
`n` of a rewards array, shapes) are checked there, and value checks (ranges, `c <= n`,
`k <= n`, binary rewards) are skipped; validate before entering compiled code.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from theory import validate as _validate
from theory.binomial import log_binomial_ratio, pass_at_k_from_counts
from theory.pkpo_engine import pkpo_count, pkpo_sorted
from theory.weights import k_times_exp

__all__ = [
    "pass_at_k_unbiased",
    "pass_at_k_weight_unbiased",
    "pkpo_weights",
    "grouped_passk_advantages",
    "grpo_advantages",
    "rloo_advantages",
]

_BASELINES = (None, "loo", "loo-1")


# --------------------------------------------------------------------------------------------
# pass@k and its weight from counts
# --------------------------------------------------------------------------------------------

_rho_jit = jax.jit(pass_at_k_from_counts, static_argnames=("dtype",))
_log_binom_ratio_jit = jax.jit(log_binomial_ratio, static_argnames=("dtype",))


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
        raise ValueError(f"n, c and k must broadcast together; got shapes {n.shape}, {c.shape}, {k.shape}") from err
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
                f"k must be <= {bound}; got k={int(bk[tuple(i)])} with n={int(bn[tuple(i)])}{_where(bk, bad)}"
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
    return k_times_exp(k.astype(dtype), log_ratio)


# --------------------------------------------------------------------------------------------
# Per-sample weights (PKPO)
# --------------------------------------------------------------------------------------------


def _group_rewards(rewards, who: str):
    """Rewards in [0,1] (no NaN) with a group axis last."""
    rewards = _validate.probability("rewards", rewards)
    if rewards.ndim == 0:
        raise ValueError(
            f"rewards must have a group axis (shape (..., n), one entry per sample); got a scalar {rewards!r} in {who}"
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
            f"k must be a scalar or broadcast against the batch axes {batch} of rewards; got shape {k.shape}"
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


def pkpo_weights(rewards, k, baseline=None, *, binary: bool | None = None):
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

    Two paths, no subset enumeration. Binary rewards (every reward 0 or 1) take a sort-free path:
    the weights of a group depend only on its count `c` of correct answers, so one table per `k`
    of the correct and the incorrect weight for each `c = 0..n` (cumulative products and suffix
    sums of `O(n)` coefficients, shared by all groups) is read at each group's `c`; cost `O(n)`
    per group. Other rewards sort each group (a sorting network, `O(n log^2 n)` comparisons
    vectorised across groups, for `n <= 4096`; XLA's `O(n log n)` sort above), then take
    cumulative sums and products and find each sample's tie run by counting the rewards below it
    (`n` comparisons per sample for `n <= 128`, a binary search above). The table
    entries are the values the sorting path computes on the sorted binary group, by the same
    operations, so both paths give the same numbers, bit for bit (inside an outer `jit` the
    `"loo"` weights may differ in the last bit: XLA may fuse a multiply and a subtraction into
    one rounding in one path and not the other). Tied rewards get bit-for-bit equal weights, and
    the output is permutation-equivariant.

    Args:
      rewards: rewards in [0, 1] (binary or continuous), shape `(..., n)`; the last axis is the
        group of `n` samples of one prompt. Float32 input computes in float32.
      k: integer `>= 1` (scalar, or an integer array broadcasting against `rewards.shape[:-1]`),
        `k <= n` (`k <= n-1` for `"loo"`).
      baseline: `None`, `"loo"` or `"loo-1"`.
      binary: which path to take. `None` (default): the binary path when `rewards` is concrete and
        every reward is 0 or 1, else the sorting path (always under `jit`/`vmap`, where the values
        are unknown). `True`: the binary path; concrete rewards must be 0 or 1, and under tracing
        a reward counts as correct exactly when it equals 1 (pass it inside compiled trainers
        with verifier rewards). `False`: the sorting path.

    Returns:
      The weights, same shape as `rewards`, in its float dtype.

    Raises:
      TypeError: non-integer `k`, non-numeric rewards, a `binary` that is not None or a bool.
      ValueError: rewards outside [0, 1] or NaN, `k < 1`, `k > n` (`k > n-1` for `"loo"`),
        unknown `baseline`, a scalar `rewards`, `"loo"` with `n < 2`, `binary=True` with a reward
        other than 0 or 1. Value checks on rewards and `k` are skipped under tracing; the group
        size is static and always checked.

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
    if binary is not None and not isinstance(binary, (bool, np.bool_)):
        raise TypeError(f"binary must be None, True or False; got {binary!r}")
    binary = None if binary is None else bool(binary)
    rewards = _group_rewards(rewards, "pkpo_weights")
    if binary is not False and _validate.is_concrete(rewards):
        host = np.asarray(rewards)
        bad = (host != 0) & (host != 1)
        if binary is None:
            binary = not bad.any()
        elif bad.any():
            raise ValueError(
                f"rewards must be binary (0 or 1) with binary=True; got "
                f"{float(host[tuple(np.argwhere(bad)[0])])!r}{_where(host, bad)}"
            )
    n = rewards.shape[-1]
    if baseline == "loo":
        if n < 2:
            raise ValueError(f"baseline='loo' needs groups of n >= 2 samples; got n = {n}")
        k = _group_k(k, rewards, limit=n - 1, what="n-1 (baseline='loo')")
    else:
        k = _group_k(k, rewards, limit=n, what="n")
    if binary:
        return pkpo_count(rewards, k, baseline)
    return pkpo_sorted(rewards, k, baseline)


# --------------------------------------------------------------------------------------------
# Group-normalised advantages
# --------------------------------------------------------------------------------------------


def grouped_count_advantages(n: int, c, k, dtype):
    """Group-normalised pass@k advantages for a group of `n` with `c` correct.

    Returns `(correct, incorrect, degenerate)`. With `q = C(n-c,k)/C(n,k) = 1 - R` and
    `q' = C(n-c-1,k-1)/C(n-1,k-1)`, `q = ((n-c)/n) q'`, so the incorrect advantage
    `(q - q')/sigma = -(c/n) q'/sigma` has no cancellation; both are formed in log space
    (`sigma = sqrt(R q)`). `degenerate` marks `sigma = 0` (`c = 0` or `c + k > n`), where both
    are 0.
    """
    log_q = log_binomial_ratio(n, c, k, dtype)
    log_qp = log_binomial_ratio(n - 1, c, k - 1, dtype)
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
    correct, incorrect, degenerate = grouped_count_advantages(n, c, k, rewards.dtype)
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
                f"rewards must be binary (0 or 1) for grouped_passk_advantages; got {float(first)!r}{_where(host, bad)}"
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


def grpo_count_advantages(n: int, c, dtype):
    """GRPO advantages `((1-c/n)/s, -(c/n)/s)`, `s = sqrt((c/n)(1-c/n))`, of a correct and an
    incorrect answer in a binary group of `n` with `c` correct (both 0 when `c` is 0 or `n`)."""
    mean = c.astype(dtype) / n
    degenerate = (c == 0) | (c == n)
    std = jnp.sqrt(jnp.where(degenerate, 1.0, mean * (1 - mean)))
    zero = jnp.zeros_like(std)
    return jnp.where(degenerate, zero, (1 - mean) / std), jnp.where(degenerate, zero, -mean / std)


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
        raise ValueError(f"rloo_advantages needs groups of n >= 2 samples; got rewards of shape {rewards.shape}")
    return _rloo_kernel(rewards)
