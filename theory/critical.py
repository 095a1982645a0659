"""The critical `k*` and the shape of the conflict set (SPEC section 4).

`k* = min{k >= 1 : I_k < 0}` with `I_k = sum_i mu_i w_k(p_i) a_i`. Writing `t = k - 1`,

    I_k / k = f(t) = sum_i c_i q_i^t,      c_i = mu_i a_i,   q_i = 1 - p_i,

an exponential sum in `t`. The search for the first integer `t` with `f(t) < 0` uses interval
bounds that hold for any signs of the `c_i`: on an integer interval `[t0, t1]` the positive terms
decrease and the negative terms shrink in magnitude, so

    f(t) >= F+(t1) - F-(t0)   and   f(t0) = F+(t0) - F-(t0),

with `F+ = sum_{c_i > 0} c_i q_i^t`, `F- = sum_{c_i < 0} |c_i| q_i^t`. A depth-first search over
halved intervals, leftmost first, prunes every interval whose lower bound is non-negative and stops
at the first integer where `f < 0`: it is exact (up to float rounding of `f` itself) however many
times `f` changes sign, and visits few intervals (about `log2(k_max)` per sign change of `f`).
All comparisons are between log-sum-exps, so nothing underflows at `k = 10^6`. The first 16
values of `t` are decided before the search by carrying the terms from `t` to `t + 1` with one
multiplication each, rescaled to keep the largest at 1 (no exponentials); most `k*` met in
practice are found there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from theory import validate as _validate
from theory.weights import log_one_minus_p_power

__all__ = [
    "critical_k",
    "critical_k_jax",
    "k_star_or_none",
    "conflict_sign_changes",
    "single_crossing",
    "asymptotic_conflict",
    "two_group_conflict_threshold",
    "two_group_critical_k",
]

# Largest k_max accepted: keeps t = k - 1 and the sentinel inside int32.
_K_MAX_LIMIT = 2**31 - 2
# A leftmost depth-first search holds at most one pending right sibling per level.
_STACK = 64
# The first `_WINDOW` values of `t` are decided before the search, with multiplications only:
# typical `k*` are small, and the whole window costs less than one search step.
_WINDOW = 16


def _separated(p, c):
    """Whether every prompt with `c < 0` is strictly harder than every prompt with `c > 0`, and
    the reverse.

    The first means the coefficients ordered by increasing `p` change sign at most once, negative
    on the hardest (SPEC's single-crossing condition); the second, at most once, positive on the
    hardest. `O(P)`: no sort.
    """
    big = jnp.asarray(2.0, p.dtype)
    neg_hardest = jnp.max(jnp.where(c < 0, p, -big)) < jnp.min(jnp.where(c > 0, p, big))
    pos_hardest = jnp.max(jnp.where(c > 0, p, -big)) < jnp.min(jnp.where(c < 0, p, big))
    return neg_hardest, pos_hardest


def _window_negative(p, c):
    """`f(t) < 0` for `t = 0, ..., _WINDOW - 1`, shape `(_WINDOW,)`, without exponentials.

    The terms `|c_i| q_i^t` are carried from one `t` to the next by one multiplication with `q_i`
    and rescaled so that the largest is 1: the sign of `f(t)` is that of `sum_i sign(c_i) y_i`.
    A term can underflow only below `1e-38` (float32) of the largest, far under the rounding
    of the sum.
    """
    q = 1 - p
    sign = jnp.sign(c)

    def step(y, _):
        top = jnp.max(y)
        y = y / jnp.where(top > 0, top, 1)
        return y * q, jnp.sum(sign * y) < 0

    return jax.lax.scan(step, jnp.abs(c), None, length=_WINDOW, unroll=True)[1]


def _first_negative_t(p, c, t_max):
    """Smallest integer `t` in `[0, t_max]` with `f(t) = sum_i c_i (1-p_i)^t < 0`, or -1 if none.

    Depth-first over halved integer intervals, leftmost first. For an interval `[a, b]` and any
    reference rate `rho`, `f(t) = rho^t sum_i c_i (q_i / rho)^t` and each term is monotone in `t`,
    so

        f(t) >= rho^t [ sum_{c_i>0} c_i min_{a,b} (q_i/rho)^t - sum_{c_i<0} |c_i| max_{a,b} (q_i/rho)^t ].

    `rho = 1` gives `F+(b) - F-(a)`; `rho` set to the decay rate of the term that dominates at
    `a` keeps the bound tight when rates are (nearly) equal, where the first bound cancels badly
    (tied `p` with opposite agreements). An interval is pruned when either bound is non-negative.

    When the coefficients ordered by increasing `p` change sign at most once (SPEC section 4),
    `f` has at most one zero, so the search is a bisection: with the hardest prompts negative,
    `f(b) >= 0` clears all of `[a, b]`; with them positive, only `t = 0` can be negative.

    Before the search, `t = 0, ..., _WINDOW - 1` are decided directly (:func:`_window_negative`);
    the search then covers `[_WINDOW, t_max]` only when none of them is negative.
    """
    pos = c > 0
    neg = c < 0
    log_abs_c = jnp.log(jnp.where(c != 0, jnp.abs(c), 1.0))
    log_q = jnp.log1p(-p)
    itype = t_max.dtype
    monotone, positive_first = _separated(p, c)
    # positive on the hardest, at most one change: f < 0 only on an initial range, so only t = 0
    t_max = jnp.where(positive_first & ~monotone, jnp.zeros_like(t_max), t_max)

    def exponent(t):  # t log q_i, with q^0 = 1 also at q = 0
        return log_one_minus_p_power(p, t.astype(p.dtype))

    def parts(x):  # log F+, log F- from per-term logs x_i = log |c_i| + t log q_i
        # log-sum-exp of an all -inf row is -inf (an empty sum), never NaN
        return logsumexp(jnp.where(pos, x, -jnp.inf), axis=-1), logsumexp(jnp.where(neg, x, -jnp.inf), axis=-1)

    window = jnp.arange(_WINDOW, dtype=itype)
    hits = _window_negative(p, c) & (window <= t_max)
    first = jnp.where(jnp.any(hits), jnp.argmax(hits).astype(itype), -jnp.ones((), itype))
    start = jnp.asarray(_WINDOW, itype)
    searching = (first < 0) & (t_max >= start)

    stack = jnp.zeros((_STACK, 2), itype).at[0].set(jnp.stack([start, jnp.maximum(t_max, start)]))

    def cond(state):
        _, sp, found = state
        return (sp > 0) & (found < 0)

    def body(state):
        stack, sp, found = state
        lo, hi = stack[sp - 1, 0], stack[sp - 1, 1]
        sp = sp - 1
        x_lo = log_abs_c + exponent(lo)  # log |c_i| q_i^lo
        x_hi = log_abs_c + exponent(hi)
        pos_lo, neg_lo = parts(x_lo)
        pos_hi, neg_hi = parts(x_hi)
        # reference rate: the decay of the term that dominates at the interval's start
        # (a masked max, not a gather: gathers batch badly under vmap)
        live_lo = jnp.where(c != 0, x_lo, -jnp.inf)
        rate = jnp.max(jnp.where(live_lo == jnp.max(live_lo), log_q, -jnp.inf))
        rate = jnp.where(jnp.isfinite(rate), rate, 0.0)
        shift_lo = x_lo - rate * lo.astype(p.dtype)
        shift_hi = x_hi - rate * hi.astype(p.dtype)
        prune = (
            (pos_hi >= neg_lo)  # rho = 1
            | (parts(jnp.minimum(shift_lo, shift_hi))[0] >= parts(jnp.maximum(shift_lo, shift_hi))[1])
            | (monotone & (pos_hi >= neg_hi))  # single crossing: f(hi) >= 0 clears [lo, hi]
        )
        negative_at_lo = neg_lo > pos_lo
        found = jnp.where(~prune & negative_at_lo, lo, found)
        split = ~prune & ~negative_at_lo & (lo < hi)
        mid = lo + (hi - lo) // 2
        # push the right half, then the left half on top (leftmost first)
        stack = jnp.where(split, stack.at[sp].set(jnp.stack([mid + 1, hi])), stack)
        stack = jnp.where(split, stack.at[sp + 1].set(jnp.stack([lo, mid])), stack)
        sp = jnp.where(split, sp + 2, sp)
        return stack, sp, found

    _, _, found = jax.lax.while_loop(cond, body, (stack, searching.astype(itype), first))
    return found


def _one_instance(p, agreement, mu):
    """Validate one unbatched instance: `p`, `agreement`, `mu` of shape `(P,)`."""
    p = _validate.probability("p", p)
    a = _validate.finite("agreement", agreement).astype(p.dtype)
    _validate.same_shape("p", p, "agreement", a)
    if p.ndim != 1:
        raise ValueError(f"p must have shape (P,) (vmap over regimes); got {p.shape}")
    return p, a, _validate.prompt_weights(mu, p.shape[0], p.dtype)


def critical_k_jax(p, agreement, mu=None, *, k_max):
    """`k* = min{k in [1, k_max] : I_k < 0}` as an integer, `k_max + 1` when there is none.

    The `jit`/`vmap`-compatible form of :func:`critical_k` (SPEC section 7): works on one
    unbatched instance (`p`, `agreement` of shape `(P,)`); callers `vmap` over regimes. `k_max` may
    be traced. Exact for any number of sign changes of `I_k` (see the module docstring).

    Args:
      p: `(P,)` per-prompt success in [0, 1].
      agreement: `(P,)` agreement scores.
      mu: `(P,)` prompt weights, uniform when None.
      k_max: largest `k` searched (`1 <= k_max <= 2^31 - 2`).

    Returns:
      An integer scalar: `k*`, or `k_max + 1` meaning no conflict up to `k_max`.
    """
    p, a, mu = _one_instance(p, agreement, mu)
    k_max = _validate.integer("k_max", k_max, minimum=1)
    if _validate.is_concrete(k_max) and int(k_max) > _K_MAX_LIMIT:
        raise ValueError(f"k_max must be <= {_K_MAX_LIMIT}; got {int(k_max)}")
    itype = jnp.int32
    k_max = k_max.astype(itype)
    t = _first_negative_t(p, mu * a, k_max - 1)
    return jnp.where(t >= 0, t + 1, k_max + 1)


_critical_k_compiled = jax.jit(critical_k_jax)


def k_star_or_none(k_star, k_max: int) -> int | None:
    """A concrete `k*` from compiled code as a Python int, its sentinel `k_max + 1` as None."""
    k_star = int(k_star)
    return None if k_star > k_max else k_star


def critical_k(p, agreement, mu=None, *, k_max=10**6):
    """The critical `k* = min{k >= 1 : I_k < 0}`, or None when there is no conflict up to `k_max`.

    `I_k = sum_i mu_i k (1-p_i)^(k-1) a_i`. Exact, also when `I_k` crosses zero more than once
    (then the conflict set is not `{k >= k*}`; see :func:`single_crossing`); no scan over all `k`;
    signs decided in log space, so `k` up to `k_max` never underflows.

    Args:
      p: `(P,)` per-prompt success in [0, 1].
      agreement: `(P,)` agreement scores `a_i`.
      mu: `(P,)` prompt weights, uniform when None.
      k_max: largest `k` searched.

    Returns:
      `k*` as a Python int, or None.

    Example:
      >>> import numpy as np
      >>> critical_k(np.array([0.1, 0.9]), np.array([-1.0, 3.0]))  # I_1 > 0, hard prompt wins later
      2
    """
    k_max = _validate.python_int("k_max", k_max, minimum=1)
    if k_max > _K_MAX_LIMIT:
        raise ValueError(f"k_max must be <= {_K_MAX_LIMIT}; got {k_max}")
    p, a, mu = _one_instance(p, agreement, mu)
    return k_star_or_none(_critical_k_compiled(p, a, mu, k_max=k_max), k_max)


def _merged_coefficients(p, agreement, mu):
    """Totals `sum_{i: p_i = p} mu_i a_i` per distinct `p`, by increasing `p`, zeros dropped."""
    p, a, mu = (np.asarray(x, dtype=np.float64) for x in _one_instance(p, agreement, mu))
    values, inverse = np.unique(p, return_inverse=True)
    totals = np.zeros(values.shape)
    np.add.at(totals, inverse, mu * a)
    keep = totals != 0
    return values[keep], totals[keep]


def conflict_sign_changes(p, agreement, mu=None) -> int:
    """Sign changes of the merged coefficients `c = mu a`, ordered by increasing `p`.

    Prompts of equal `p` are merged (their `mu a` summed) and zero totals dropped. By Descartes'
    rule for exponential sums, `I_k` (as a function of real `k`) has at most this many zeros.
    """
    _, totals = _merged_coefficients(p, agreement, mu)
    signs = np.sign(totals)
    return int(np.count_nonzero(signs[1:] != signs[:-1]))


def single_crossing(p, agreement, mu=None) -> bool:
    """True when the conflict set is guaranteed to be `{k >= k*}` (an upper interval, maybe empty).

    SPEC section 4: if the merged coefficients `mu a`, ordered by increasing `p`, change sign at
    most once and, when they do, are negative on the hardest prompts, then `I_k` changes sign at
    most once, from positive to negative. When this returns False, `I_k` may still cross once;
    it can also cross twice (conflict for a middle range of `k` only).
    """
    _, totals = _merged_coefficients(p, agreement, mu)
    if totals.size == 0:
        return True
    changes = int(np.count_nonzero(np.sign(totals[1:]) != np.sign(totals[:-1])))
    return changes == 0 or (changes == 1 and totals[0] < 0)


def asymptotic_conflict(p, agreement, mu=None):
    """Whether conflict holds for every large enough `k` (SPEC section 4, large `k`).

    Takes the smallest `p < 1` among distinct `p` values whose total agreement `sum mu_i a_i` is
    non-zero: negative means conflict for all large `k`, positive means it eventually disappears.
    Prompts at `p = 1` get zero weight for `k >= 2` and drop out.

    Returns:
      True, False, or None when every total below `p = 1` is zero (then `I_k = 0` for `k >= 2`).
    """
    values, totals = _merged_coefficients(p, agreement, mu)
    live = values < 1
    if not live.any():
        return None
    return bool(totals[live][0] < 0)


def _two_group_inputs(q, p_hard, a_hard, p_easy, a_easy):
    vals = {}
    for name, x in (("q", q), ("p_hard", p_hard), ("a_hard", a_hard), ("p_easy", p_easy), ("a_easy", a_easy)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            if not (np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.number)):
                raise TypeError(f"{name} must be a real number; got {x!r}")
        v = float(x)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite; got {v!r}")
        vals[name] = v
    if not 0 < vals["q"] < 1:
        raise ValueError(f"q (the hard share) must lie in (0, 1); got {vals['q']!r}")
    if not 0 <= vals["p_hard"] < vals["p_easy"] <= 1:
        raise ValueError(f"need 0 <= p_hard < p_easy <= 1; got p_hard={vals['p_hard']!r}, p_easy={vals['p_easy']!r}")
    if not vals["a_hard"] < 0:
        raise ValueError(f"a_hard must be negative (the hard group interferes); got {vals['a_hard']!r}")
    if not vals["a_easy"] > 0:
        raise ValueError(f"a_easy must be positive; got {vals['a_easy']!r}")
    return vals


def two_group_conflict_threshold(q, p_hard, a_hard, p_easy, a_easy) -> float:
    """The two-group threshold `x` with conflict iff `k > x` (SPEC section 4).

    Hard share `q`, success `p_hard`, agreement `a_hard < 0`; easy share `1-q`, `p_easy > p_hard`,
    `a_easy > 0`::

        x = 1 + log((1-q) a_easy / (q |a_hard|)) / log((1-p_hard) / (1-p_easy)),

    with `x = 1` when `p_easy = 1` and the easy group outweighs at `k = 1` (its weight is 0 for
    every `k >= 2`), and `x < 1` (conflict already at `k = 1`) when the hard group outweighs.
    """
    v = _two_group_inputs(q, p_hard, a_hard, p_easy, a_easy)
    log_ratio = math.log((1 - v["q"]) * v["a_easy"]) - math.log(v["q"] * -v["a_hard"])
    if v["p_easy"] == 1:
        return 1.0 if log_ratio >= 0 else -math.inf
    return 1 + log_ratio / (math.log1p(-v["p_hard"]) - math.log1p(-v["p_easy"]))


def two_group_critical_k(q, p_hard, a_hard, p_easy, a_easy) -> int:
    """`k*` of the two-group model: the smallest integer `k >= 1` strictly above the threshold.

    See :func:`two_group_conflict_threshold`. A negatively interfering hard group always wins
    eventually, so `k*` always exists.

    Example:
      >>> two_group_critical_k(0.3, 0.1, -1.0, 0.6, 1.0)
      2
    """
    x = two_group_conflict_threshold(q, p_hard, a_hard, p_easy, a_easy)
    if x < 1:
        return 1
    return int(math.floor(x)) + 1
