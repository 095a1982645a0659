"""The PKPO engine: per-sample max@k weights for many groups at once, tuned for CPU and GPU.

:func:`theory.estimators.pkpo_weights` validates its inputs and calls one of two paths here:

- :func:`pkpo_count` for binary rewards: the weights of a group depend only on its count `c` of
  correct answers, so one table per `k` (for `c = 0..n`) is read at each group's count, `O(n)`;
- :func:`pkpo_sorted` for any rewards in [0, 1]: sort each group (:func:`sort_rewards`, a
  bitonic network for `n <= 4096`), form the weights at the sorted positions from the
  coefficients :func:`max_at_k_coefficients` by cumulative sums and products, and let every sample
  read its tie run's value (at the count of rewards below it), so ties get equal weights bit for
  bit.

Both paths compute the same numbers by the same operations (the count tables are the sorted
path's values on the sorted binary group). The formulas are in :func:`theory.estimators.pkpo_weights`;
why the kernels are shaped as they are is measured in `passk/benchmarks/README.md`. Nothing here
validates: inputs are a float rewards array with the group last, an integer `k` array and a
baseline in `(None, "loo", "loo-1")`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["pkpo_count", "pkpo_sorted", "sort_rewards", "max_at_k_coefficients"]


def max_at_k_coefficients(n: int, k, dtype):
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


# Cumulative sums of per-sample data along groups of up to this many samples are one product with a
# triangular matrix of ones: XLA's CPU backend runs `cumsum` as a reduce-window, which measured
# 0.66 ms against 0.44 ms for the product on 4096 groups of 64 (and slower again once fused with
# its operands); from 256 samples on the product's `O(n^2)` work is slower.
_TRIANGLE_MAX_N = 128


def _data_cumsum(x, *, reverse: bool = False):
    """`out[t] = sum_{u <= t} x[u]` (`sum_{u >= t}` when `reverse`) along the last axis of data.

    The order of the additions differs from `lax.cumsum`'s; the sums it is used for add terms that
    vanish inside tie runs (exact zeros), so on binary rewards every value read is still one
    coefficient, bit for bit (see :func:`_sorted_pkpo`).
    """
    m = x.shape[-1]
    if m > _TRIANGLE_MAX_N:
        return lax.cumsum(x, axis=x.ndim - 1, reverse=reverse)
    u = jnp.arange(m)
    ones = (u[:, None] >= u[None, :]) if reverse else (u[:, None] <= u[None, :])  # ones[v, t]: v adds to t
    return jnp.matmul(x, ones.astype(x.dtype), precision=lax.Precision.HIGHEST)


def _exclusive_prefix_sum(x):
    """`out[t] = sum_{u < t} x[u]` along the last axis (of data)."""
    total = _data_cumsum(x)
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
    return g * r_next + _pad_last(_data_cumsum(jumps, reverse=True))


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
    a, b = max_at_k_coefficients(n, k, dtype)
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
        alpha, _ = max_at_k_coefficients(n - 1, k, dtype)
        cum = _loo_cumulative(alpha, k, dtype)
        steps = cum * (r[..., 1:] - r[..., :-1])
        below = jnp.concatenate([jnp.zeros_like(r[..., :1]), cum * r[..., :-1] - _exclusive_prefix_sum(steps)], axis=-1)
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
        x = jnp.concatenate([jnp.minimum(low, high), jnp.flip(jnp.maximum(low, high), axis=1)], axis=1).reshape(x.shape)
        stride = size // 4
        while stride:
            block = x.reshape((n // (2 * stride), 2, stride) + rest)
            low, high = block[:, 0], block[:, 1]
            x = jnp.stack([jnp.minimum(low, high), jnp.maximum(low, high)], axis=1).reshape(x.shape)
            stride //= 2
        size *= 2
    return x


def sort_rewards(rewards):
    """Rewards (no NaN) sorted ascending along the last axis.

    Groups of up to `_NETWORK_MAX_N` go through a sorting network with the group axis moved to
    the front (padded to a power of two with `+inf`, which sorts last and is cut off): on CPU
    faster than XLA's sorts although it makes `O(n log^2 n)` comparisons (measured in
    `passk/benchmarks/README.md`). Larger groups are sorted by XLA through their bit patterns:
    non-negative floats order as their bit patterns read as integers, and a single integer
    operand sorts faster than floats (whose comparator orders NaN and -0.0); the sign bit is
    cleared, so -0.0 sorts as +0.0.
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
    index array (and bounds clamping) and runs slower on CPU (`passk/benchmarks/README.md`).
    """
    lookup = lambda row, i: row.at[i].get(mode="promise_in_bounds")  # noqa: E731
    for _ in range(values.ndim - 1):
        lookup = jax.vmap(lookup)
    return lookup(values, idx)


# Groups up to this size count each sample's position by comparing it with every member of its
# group (`n` comparisons unrolled in one elementwise pass): on 4096 groups of 64 that took 0.59 ms
# against 1.67 ms for the binary search's gathers, 0.66 ms against 2.0 ms on 2048 groups of 128;
# at 512 the `O(n^2)` comparisons are slower.
_COUNT_MAX_N = 128


def _count_sorted(sorted_r, x, *, strict: bool):
    """Per sample, the number of entries of its sorted group `< x` (`strict`) or `<= x`.

    Small groups: the sum of `n` comparisons. Larger groups: a branch-free binary search,
    `log2(n) + 1` gathers. Integer counts, so both give the same read positions exactly.
    """
    n = sorted_r.shape[-1]
    if n <= _COUNT_MAX_N:
        below = (lambda v: v < x) if strict else (lambda v: v <= x)
        return functools.reduce(jnp.add, [below(sorted_r[..., j, None]).astype(jnp.int32) for j in range(n)])
    pos = jnp.zeros(x.shape, jnp.int32)
    step = 1 << (n.bit_length() - 1)  # largest power of two <= n, so pos can reach n
    while step:
        cand = pos + step
        probe = _take_rows(sorted_r, jnp.minimum(cand, n) - 1)
        below = probe < x if strict else probe <= x
        pos = jnp.where((cand <= n) & below, cand, pos)
        step >>= 1
    return pos


_sort_rewards_jit = jax.jit(sort_rewards)


@functools.partial(jax.jit, static_argnames=("baseline",))
def _sorted_weights_and_reads(rewards, r, k, baseline):
    """Weights (and `"loo"` estimates) at the sorted positions `r`, and where each sample reads."""
    weights, others = _sorted_pkpo(r, k, baseline)
    # Every sample reads at one position of its tie run (the first for "loo-1", else the last),
    # found by counting its group's rewards below its own value (or up to it): tied samples read
    # the same entry, so their weights are equal bit for bit and the output is
    # permutation-equivariant.
    if baseline == "loo-1":
        read = _count_sorted(r, rewards, strict=True)
    else:
        read = _count_sorted(r, rewards, strict=False) - 1
    return weights, others, read


_take_rows_jit = jax.jit(_take_rows)


def pkpo_sorted(rewards, k, baseline):
    """General rewards: sort, weights at sorted positions, each sample reads its tie run's value.

    Three compiled stages rather than one: compiled together, XLA on CPU fuses the sort's
    transposed output and the final gather into their consumers and the whole runs slower
    (`passk/benchmarks/README.md`).
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
    a, b = max_at_k_coefficients(n, k, dtype)
    c = jnp.arange(n + 1)
    shape = k.shape + (n + 1,)
    incorrect_at = jnp.maximum(n - c - 1, 0)
    if baseline == "loo-1":
        # correct C(n-c,k-1)/C(n,k) = A[n-c]; incorrect exactly 0
        correct = jnp.take(a, jnp.minimum(n - c, n - 1), axis=-1)
        return correct, jnp.zeros_like(correct), None
    # correct k/n = A[n-1]; incorrect sum_{u>=n-c} B[u] = (k/n) rho(n-1, c, k-1), 0 when c = 0
    correct = jnp.broadcast_to(a[..., n - 1 :], shape)
    suffix_b = _pad_last(lax.cumsum(b[..., 1:], axis=b.ndim - 1, reverse=True))
    incorrect = jnp.take(suffix_b, incorrect_at, axis=-1)
    if baseline == "loo":
        alpha, _ = max_at_k_coefficients(n - 1, k, dtype)
        cum = _loo_cumulative(alpha, k, dtype)
        # correct (t = n-1): below = F[n-2] [c >= 2] - F[n-c-1] [2 <= c <= n-1], above = 0
        top = jnp.where(c >= 2, cum[..., n - 2 :], 0)
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
            if_correct = jnp.take_along_axis(jnp.broadcast_to(if_correct, batch + (n + 1,)), idx, -1)[..., 0]
            if_incorrect = jnp.take_along_axis(jnp.broadcast_to(if_incorrect, batch + (n + 1,)), idx, -1)[..., 0]
        return jnp.where(is_correct, if_correct[..., None], if_incorrect[..., None])

    return per_sample(correct, incorrect), None if others is None else per_sample(*others)


def pkpo_count(rewards, k, baseline):
    """The binary path: count kernel, then the `"loo"` step shared with the sorting path."""
    weights, others = _pkpo_count_kernel(rewards, k, baseline)
    if others is None:
        return weights
    return _loo_finish_jit(weights, others, k)
