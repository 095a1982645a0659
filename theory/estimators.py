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

from theory import validate as _validate
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
    `log1p(-M/(n-j))` when `M/(n-j) < 1/4` and `log((n-j-M)/(n-j))` otherwise: both arguments
    are exactly rounded quotients of integers, so every term is accurate to rounding. (XLA's
    float64 `log1p` on CPU is off by up to about 130 ulp for arguments in about `[-0.45, -0.35]`;
    below `1/4` in magnitude it is within 1 ulp, and above it the quotient `(n-j-M)/(n-j)` is at
    most `3/4`, where `log` of it is accurate to a few ulp.) The sum runs
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
        term = jnp.sum(jnp.where(x < 0.25, jnp.log1p(-x), jnp.log(y)), axis=-1)
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
    return k_times_exp(k.astype(dtype), log_ratio)


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


def _pad_last(x, value=0):
    """`x` with one `value` appended along the last axis."""
    return jnp.concatenate([x, jnp.full(x.shape[:-1] + (1,), value, x.dtype)], axis=-1)


def _loo_cumulative(alpha, k, dtype):
    """`F[u] = C(u+1, k)/C(n-1, k) = alpha[u] (u+1)/k`: the partial sums of `alpha`, closed form."""
    u = jnp.arange(alpha.shape[-1], dtype=dtype)
    return alpha * (u + 1) / k.astype(dtype)[..., None]


def _suffix_by_parts(coef, r_next):
    """`out[t] = sum_{t <= u < m} coef[u] r_next[u]` for ascending `r_next` (length `m`).

    Summation by parts, `out[t] = G[t] r_next[t] + sum_{u>t} G[u] (r_next[u] - r_next[u-1])` with
    `G[u] = sum_{v>=u} coef[v]`: every term is non-negative (no cancellation), the cumulative sum
    over the data only adds the differences, which vanish inside tie runs, and `G` is a cumulative
    sum of the coefficients alone.
    """
    g = lax.cumsum(coef, axis=coef.ndim - 1, reverse=True)
    jumps = g[..., 1:] * (r_next[..., 1:] - r_next[..., :-1])
    return g * r_next + _pad_last(lax.cumsum(jumps, axis=jumps.ndim - 1, reverse=True))


def _sorted_pkpo(r, k, baseline):
    """PKPO weights at the positions of the ascending rewards `r` (shape `(..., n)`).

    Returns `(weights, others)`: for `"loo"` the plain weights and the max@k estimates `M` of the
    other `n-1` rewards (combined by :func:`_loo_finish`), else the weights and None.

    Valid where they are read: at the last position of each tie run (`None`, `"loo"`) or at the
    first (`"loo-1"`). Cumulative sums and products run over coefficient vectors of shape
    `k.shape + (n,)` only; the cumulative sums over the data add terms that vanish inside tie
    runs or below the read position. On binary rewards every value read is then a single
    coefficient (or a fixed combination of two), whatever order the cumulative sums add in, and
    :func:`_count_tables` computes the same numbers from the count of correct answers.
    """
    n = r.shape[-1]
    dtype = r.dtype
    a, b = _max_at_k_coefficients(n, k, dtype)
    if baseline == "loo-1":
        # s_(t) = (1/C(n,k)) sum_{(k-1)-subsets T below r_(t)} (r_(t) - max T)
        #       = A[L] r_(t) - sum_{u<L} B[u+1] r_(u),  L = #{rewards < r_(t)}, read at t = L
        # (the sum only holds rewards strictly below the read position's tie run).
        shifted_b = _pad_last(b[..., 1:])
        return a * r - _exclusive_prefix_sum(shifted_b * r), None
    # s_(t) = (C(t,k-1) r_(t) + sum_{u>t} C(u-1,k-2) r_(u)) / C(n,k) (0-based positions).
    weights = a * r + _pad_last(_suffix_by_parts(b[..., 1:], r[..., 1:]))
    if baseline == "loo":
        # Mean of the weights recomputed without sample t = (k/(n-1)) M_t, M_t the max@k estimate
        # of the other n-1 rewards: positions below t keep their rank, positions above drop by one,
        #   M_t = sum_{u<t} alpha[u] r_(u) + sum_{u>=t} alpha[u] r_(u+1),
        # alpha the coefficients of n-1 samples. The part below t is summed by parts too,
        #   sum_{u<t} alpha[u] r_(u) = F[t-1] r_(t-1) - sum_{u<t-1} F[u] (r_(u+1) - r_(u)),
        # with F[u] = sum_{v<=u} alpha[v] in closed form (its error is at the scale k/n of the
        # weights, like the final subtraction's).
        alpha, _ = _max_at_k_coefficients(n - 1, k, dtype)
        cum = _loo_cumulative(alpha, k, dtype)
        steps = cum * (r[..., 1:] - r[..., :-1])
        below = jnp.concatenate(
            [jnp.zeros_like(r[..., :1]), cum * r[..., :-1] - _exclusive_prefix_sum(steps)], axis=-1)
        above = _pad_last(_suffix_by_parts(alpha, r[..., 1:]))
        return weights, below + above
    return weights, None


def _loo_finish(weights, others, k):
    """`"loo"` weights `s_i - (k/(n-1)) M_i` from the plain weights and the others' estimates.

    Compiled on its own and called by both paths on per-sample arrays: XLA on CPU contracts a
    multiply feeding a subtraction into one fused multiply-add or not depending on the fusion
    around it, which would make the paths differ in the last bit.
    """
    n = weights.shape[-1]
    return weights - k.astype(weights.dtype)[..., None] / (n - 1) * others


_loo_finish_jit = jax.jit(_loo_finish)


# Groups up to this size are sorted by a sorting network, larger ones by XLA's sort.
_NETWORK_MAX_N = 4096


def _bitonic_sort_axis0(x):
    """Sort along the leading axis (a power of two long) with a bitonic sorting network.

    `log2(n) (log2(n) + 1) / 2` rounds of elementwise min/max between the two halves of blocks,
    with the trailing axes (the groups) as the vector axis: branch-free passes over contiguous
    memory, faster on CPU than sorting each short row with a comparator. Each round first merges
    blocks of `size` by comparing mirror positions (so every block sorts ascending, no direction
    flags), then half-cleans at strides `size/4, ..., 1`.
    """
    n, rest = x.shape[0], x.shape[1:]
    size = 2
    while size <= n:
        block = x.reshape((n // size, 2, size // 2) + rest)
        low, high = block[:, 0], jnp.flip(block[:, 1], axis=1)
        x = jnp.concatenate(
            [jnp.minimum(low, high), jnp.flip(jnp.maximum(low, high), axis=1)], axis=1
        ).reshape(x.shape)
        stride = size // 4
        while stride:
            block = x.reshape((n // (2 * stride), 2, stride) + rest)
            low, high = block[:, 0], block[:, 1]
            x = jnp.stack([jnp.minimum(low, high), jnp.maximum(low, high)], axis=1).reshape(x.shape)
            stride //= 2
        size *= 2
    return x


def _sort_rewards(rewards):
    """Rewards (no NaN) sorted ascending along the last axis.

    Groups of up to `_NETWORK_MAX_N` go through a sorting network with the group axis moved to
    the front (padded to a power of two with `+inf`, which sorts last and is cut off): on CPU
    about 3x faster than XLA's sort of the bit patterns below at `n = 64`, still 2x at
    `n = 4096`, and 12x faster than XLA's float sort at `n = 64`, although it makes
    `O(n log^2 n)` comparisons. Larger groups are sorted by XLA through their bit patterns:
    non-negative floats order as their bit patterns read as integers, and a single integer
    operand sorts several times faster than floats (whose comparator orders NaN and -0.0); the
    sign bit is cleared, so -0.0 sorts as +0.0.
    """
    n = rewards.shape[-1]
    if n <= _NETWORK_MAX_N:
        width = 1 << (n - 1).bit_length()
        x = jnp.moveaxis(rewards, -1, 0)
        if width > n:
            x = jnp.concatenate([x, jnp.full((width - n,) + x.shape[1:], jnp.inf, x.dtype)])
        return jnp.moveaxis(_bitonic_sort_axis0(x)[:n], 0, -1)
    itype = jnp.int64 if rewards.dtype == jnp.float64 else jnp.int32
    bits = lax.bitcast_convert_type(rewards, itype) & jnp.iinfo(itype).max
    return lax.bitcast_convert_type(lax.sort(bits, dimension=rewards.ndim - 1), rewards.dtype)


def _take_rows(values, idx):
    """`out[..., j] = values[..., idx[..., j]]` for in-range `idx`: a gather batched over groups.

    Written as a batched row lookup rather than `take_along_axis`, whose gather carries a full
    index array (and bounds clamping) and runs about 1.5x slower on CPU.
    """
    lookup = lambda row, i: row.at[i].get(mode="promise_in_bounds")  # noqa: E731
    for _ in range(values.ndim - 1):
        lookup = jax.vmap(lookup)
    return lookup(values, idx)


def _count_sorted(sorted_r, x, *, strict: bool):
    """Per sample, the number of entries of its sorted group `< x` (`strict`) or `<= x`.

    A branch-free binary search: `log2(n) + 1` gathers, no sort and no permutation.
    """
    n = sorted_r.shape[-1]
    pos = jnp.zeros(x.shape, jnp.int32)
    step = 1 << (n.bit_length() - 1)  # largest power of two <= n, so pos can reach n
    while step:
        cand = pos + step
        probe = _take_rows(sorted_r, jnp.minimum(cand, n) - 1)
        below = probe < x if strict else probe <= x
        pos = jnp.where((cand <= n) & below, cand, pos)
        step >>= 1
    return pos


_sort_rewards_jit = jax.jit(_sort_rewards)


@functools.partial(jax.jit, static_argnames=("baseline",))
def _sorted_weights_and_reads(rewards, r, k, baseline):
    """Weights (and `"loo"` estimates) at the sorted positions `r`, and where each sample reads."""
    weights, others = _sorted_pkpo(r, k, baseline)
    # Every sample reads at one position of its tie run (the first for "loo-1", else the last),
    # found by binary search on its own value: tied samples read the same entry, so their weights
    # are equal bit for bit and the output is permutation-equivariant.
    if baseline == "loo-1":
        read = _count_sorted(r, rewards, strict=True)
    else:
        read = _count_sorted(r, rewards, strict=False) - 1
    return weights, others, read


_take_rows_jit = jax.jit(_take_rows)


def _pkpo_sorted(rewards, k, baseline):
    """General rewards: sort, weights at sorted positions, each sample reads its tie run's value.

    Three compiled stages rather than one: compiled together, XLA on CPU fuses the sort's
    transposed output and the final gather into their consumers and the whole runs 2-3x slower.
    Under an outer `jit` the stages are inlined (same numbers).
    """
    r = _sort_rewards_jit(rewards)
    weights, others, read = _sorted_weights_and_reads(rewards, r, k, baseline)
    if others is None:
        return _take_rows_jit(weights, read)
    return _loo_finish_jit(_take_rows_jit(weights, read), _take_rows_jit(others, read), k)


def _count_tables(n: int, k, baseline, dtype):
    """Weights of a correct and of an incorrect answer for each count `c = 0..n` of correct ones.

    The values of :func:`_sorted_pkpo` on the sorted binary group `[0]*(n-c) + [1]*c`, read where
    the general path reads them (positions `n-1` and `n-c-1`; `n-c` and `0` for `"loo-1"`), from
    the same coefficient vectors by the same operations: the two paths give the same numbers.
    Returns `(correct, incorrect, others)`, `others` the pair of the `"loo"` estimates `M` for
    a correct and an incorrect answer (None for the other baselines); shapes `k.shape + (n+1,)`;
    entries for a count without such answers are unused.
    """
    a, b = _max_at_k_coefficients(n, k, dtype)
    c = jnp.arange(n + 1)
    shape = k.shape + (n + 1,)
    incorrect_at = jnp.maximum(n - c - 1, 0)
    if baseline == "loo-1":
        # correct C(n-c,k-1)/C(n,k) = A[n-c]; incorrect exactly 0
        correct = jnp.take(a, jnp.minimum(n - c, n - 1), axis=-1)
        return correct, jnp.zeros_like(correct), None
    # correct k/n = A[n-1]; incorrect sum_{u>=n-c} B[u] = (k/n) rho(n-1, c, k-1), 0 when c = 0
    correct = jnp.broadcast_to(a[..., n - 1:], shape)
    suffix_b = _pad_last(lax.cumsum(b[..., 1:], axis=b.ndim - 1, reverse=True))
    incorrect = jnp.take(suffix_b, incorrect_at, axis=-1)
    if baseline == "loo":
        alpha, _ = _max_at_k_coefficients(n - 1, k, dtype)
        cum = _loo_cumulative(alpha, k, dtype)
        # correct (t = n-1): below = F[n-2] [c >= 2] - F[n-c-1] [2 <= c <= n-1], above = 0
        top = jnp.where(c >= 2, cum[..., n - 2:], 0)
        inner = (c >= 2) & (c <= n - 1)
        step = jnp.where(inner, jnp.take(cum, jnp.clip(n - c - 1, 0, n - 2), axis=-1), 0)
        # `+ 0` and `0 +` mirror the vanishing `above` and `below` terms of the sorted path.
        others_correct = (top - step) + 0
        # incorrect (t = n-c-1): below = 0, above = sum_{u >= n-c-1} alpha[u] (0 when c = 0)
        suffix_alpha = _pad_last(lax.cumsum(alpha, axis=alpha.ndim - 1, reverse=True))
        others_incorrect = 0 + jnp.take(suffix_alpha, incorrect_at, axis=-1)
        return correct, incorrect, (others_correct, others_incorrect)
    return correct, incorrect, None


@functools.partial(jax.jit, static_argnames=("baseline",))
def _pkpo_count_kernel(rewards, k, baseline):
    """Binary rewards: the weights depend only on the count of correct answers of each group.

    Returns `(weights, others)` like :func:`_sorted_pkpo`, per sample.
    """
    n = rewards.shape[-1]
    batch = rewards.shape[:-1]
    is_correct = rewards == 1
    c = jnp.sum(is_correct, axis=-1, dtype=jnp.int32)
    correct, incorrect, others = _count_tables(n, k, baseline, rewards.dtype)

    def per_sample(if_correct, if_incorrect):
        if k.ndim == 0:
            if_correct, if_incorrect = if_correct[c], if_incorrect[c]
        else:
            idx = c[..., None]
            if_correct = jnp.take_along_axis(
                jnp.broadcast_to(if_correct, batch + (n + 1,)), idx, -1)[..., 0]
            if_incorrect = jnp.take_along_axis(
                jnp.broadcast_to(if_incorrect, batch + (n + 1,)), idx, -1)[..., 0]
        return jnp.where(is_correct, if_correct[..., None], if_incorrect[..., None])

    return per_sample(correct, incorrect), None if others is None else per_sample(*others)


def _pkpo_count(rewards, k, baseline):
    """The binary path: count kernel, then the `"loo"` step shared with the sorting path."""
    weights, others = _pkpo_count_kernel(rewards, k, baseline)
    if others is None:
        return weights
    return _loo_finish_jit(weights, others, k)


def _group_rewards(rewards, who: str):
    """Rewards in [0,1] (no NaN) with a group axis last."""
    arr = _validate.as_float_array("rewards", rewards)
    host = _host(arr)
    if host is not None and np.all((host >= 0) & (host <= 1)):
        # Already in [0, 1]: nothing to report or move onto it (the full check dispatches several
        # array operations, a large share of the cost of a call on a few thousand groups).
        rewards = arr
    else:
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
    cumulative sums and products and find each sample's tie run by binary search. The table
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
        return _pkpo_count(rewards, k, baseline)
    return _pkpo_sorted(rewards, k, baseline)


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
