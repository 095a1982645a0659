"""Per-prompt statistics of sampled answers: what the estimators of :mod:`theory.sampled` read of a
run's rewards and score vectors (SPEC section 10).

Per prompt `i`, from `n` answers with rewards `r_ij` in `{0, 1}` and score vectors `s_ij` in `R^D`:

    c_i = sum_j r_ij,    g_i = (1/n) sum_j r_ij s_ij,    pair_i = (||G_i||^2 - Q_i) / (n (n-1)),

with `G_i = n g_i` and `Q_i = sum_j r_ij ||s_ij||^2`; `pair_i` is the average of `<s_ij, s_ij'>`
over ordered pairs of distinct correct answers (0 when `c_i < 2`), unbiased for
`||grad p_i||^2` up to the factor `P(both correct)`.

`G_i` and `Q_i` are summed in one read of the scores, by the compiled kernel of
:mod:`theory.native` where it is usable and by XLA otherwise; :func:`statistics_from_sums` takes
them accumulated elsewhere (over chunks of answers of a model too large to hold every score).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import native
from theory import validate as _validate

__all__ = ["AnswerStatistics", "answer_statistics", "statistics_from_sums"]


class AnswerStatistics(NamedTuple):
    """What the estimators read of one run's answers (shapes for `P` prompts).

    Attributes:
      correct: `(P,)` number of correct answers `c_i`, as floats.
      mean_score: `(P, D)` `g_i = (1/n) sum_j r_ij s_ij`.
      pair: `(P,)` `(||G_i||^2 - Q_i) / (n (n-1))`, exactly 0 where `c_i < 2`.
      n: the number of answers per prompt (static).
    """

    correct: jax.Array
    mean_score: jax.Array
    pair: jax.Array
    n: int


def stats_tree(stats: AnswerStatistics):
    """The array fields, for passing through `jit` with `n` static."""
    return stats.correct, stats.mean_score, stats.pair


# ---------------------------------------------------------------------------------------------
# Validation


def first_index(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _scores(scores, shape, dtype):
    """`(P, n, D)` scores (trailing axes flattened); shapes only (values: :func:`_check_finite`)."""
    arr = _validate.as_float_array("scores", scores)
    if arr.ndim < 3 or arr.shape[:2] != shape:
        raise ValueError(
            f"scores must have shape (P, n, D) = {shape + ('D',)} matching rewards; got shape {arr.shape}"
        )
    arr = arr.reshape(shape + (-1,))
    if arr.shape[-1] < 1:
        raise ValueError(f"scores must have at least one coordinate (D >= 1); got shape {arr.shape}")
    return arr.astype(jnp.result_type(arr.dtype, dtype))


def _all_finite(stats: AnswerStatistics):
    return jnp.all(jnp.isfinite(stats.mean_score)) & jnp.all(jnp.isfinite(stats.pair))


def _check_finite(scores, finite) -> None:
    """Raise, naming the first offending prompt, when concrete `scores` hold NaN or inf.

    A non-finite score makes `G_i` or `Q_i` non-finite (`0 * inf` is NaN, so the scores of wrong
    answers count too): the statistics decide (`finite`, :func:`_all_finite`, computed with them),
    and only a failure is located on the host, so that valid inputs are read once.
    """
    if not _validate.is_concrete(scores) or bool(finite):
        return
    host = np.asarray(scores)
    bad = ~np.isfinite(host)
    if bad.any():
        i, j, d = first_index(bad)
        raise ValueError(
            f"scores must be finite; got {host[i, j, d].item()!r} at prompt {i} (answer {j}, coordinate {d})"
        )



# ---------------------------------------------------------------------------------------------
# Statistics of the answers


def _from_sums(c, big_g, q, n: int) -> AnswerStatistics:
    pair = jnp.where(c >= 2, (jnp.sum(big_g * big_g, axis=-1) - q) / (n * (n - 1)), 0.0)
    return AnswerStatistics(correct=c, mean_score=big_g / n, pair=pair, n=n)


# The public entry points run their few operations as one compiled program, not one per operation
# (each costs a trace and a lowering at every start, `benchmarks/start.py`).
_from_sums_jit = jax.jit(lambda c, big_g, q, *, n: stats_tree(_from_sums(c, big_g, q, n)), static_argnames="n")


# Up to this many answers, `G` is summed answer by answer in one elementwise pass.
_UNROLL_ANSWERS = 128


def _statistics(r, s) -> AnswerStatistics:
    r = r.astype(s.dtype)
    n = r.shape[-1]
    if native.usable(s.dtype):
        # Both sums in one pass over the scores (`theory/native.py`); the same numbers as below.
        big_g, q = native.answer_sums_native(r, s)
        return _from_sums(jnp.sum(r, axis=-1), big_g, q, n)
    if n <= _UNROLL_ANSWERS:
        # G_i = sum_j r_ij s_ij as n multiply-adds over (P, D) in one pass over the scores: XLA's
        # CPU backend runs the einsum below as a batched matrix-vector product at about half the
        # memory bandwidth (`benchmarks/sampled.py`).
        big_g = functools.reduce(jnp.add, [r[:, j, None] * s[:, j, :] for j in range(n)])
    else:
        big_g = jnp.einsum("pn,pnd->pd", r, s)
    q = jnp.sum(r * jnp.sum(s * s, axis=-1), axis=-1)  # Q_i = sum_j r_ij ||s_ij||^2
    return _from_sums(jnp.sum(r, axis=-1), big_g, q, n)


def _statistics_checked(r, s):
    stats = _statistics(r, s)
    return stats_tree(stats), _all_finite(stats)


_statistics_jit = jax.jit(_statistics_checked)


def answer_statistics(rewards, scores) -> AnswerStatistics:
    """The per-prompt statistics `c_i`, `g_i`, `pair_i` of sampled answers (see the module docstring).

    Args:
      rewards: `(P, n)` rewards in `{0, 1}` (bool, int or float), `n >= 2`.
      scores: `(P, n, ...)` score vectors `grad log pi(y_ij | x_i)` (trailing axes flattened).

    Returns:
      :class:`AnswerStatistics`.
    """
    return read_answers(rewards, scores)[2]


def statistics_from_sums(correct, score_sum, score_sq_sum, *, n: int) -> AnswerStatistics:
    """:class:`AnswerStatistics` from sums accumulated elsewhere (for example over chunks of answers).

    For models too large to hold every score vector at once: accumulate, per prompt,
    `c_i = sum_j r_ij`, `G_i = sum_j r_ij s_ij` and `Q_i = sum_j r_ij ||s_ij||^2` over the answers
    (only correct answers contribute), then pass them here.

    Args:
      correct: `(P,)` counts `c_i`, integers in `[0, n]` (any numeric dtype).
      score_sum: `(P, ...)` `G_i` (trailing axes flattened).
      score_sq_sum: `(P,)` `Q_i`.
      n: answers per prompt, `>= 2`.

    Returns:
      :class:`AnswerStatistics`, the same as :func:`answer_statistics` of the answers themselves.
    """
    n = _validate.python_int("n", n, minimum=2)
    big_g = _validate.finite("score_sum", score_sum)
    if big_g.ndim < 2:
        raise ValueError(f"score_sum must have shape (P, D); got shape {big_g.shape}")
    big_g = big_g.reshape(big_g.shape[0], -1)
    q = _validate.finite("score_sq_sum", score_sq_sum).astype(big_g.dtype)
    c = _validate.finite("correct", correct).astype(big_g.dtype)
    for name, arr in (("correct", c), ("score_sq_sum", q)):
        if arr.shape != big_g.shape[:1]:
            raise ValueError(f"{name} must have shape (P,) = ({big_g.shape[0]},) matching score_sum; got {arr.shape}")
    if _validate.is_concrete(c):
        host = np.asarray(c)
        bad = (host != np.round(host)) | (host < 0) | (host > n)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise ValueError(f"correct must be integer counts in [0, n = {n}]; got {host[i].item()!r} at prompt {i}")
    return AnswerStatistics(*_from_sums_jit(c, big_g, q, n=n), n=n)


def checked_statistics(stats) -> AnswerStatistics:
    if not isinstance(stats, AnswerStatistics):
        raise TypeError(
            f"stats must be an AnswerStatistics (from answer_statistics or statistics_from_sums); got {type(stats).__name__}"
        )
    return stats



def read_answers(rewards, scores):
    """Validated rewards and scores, and their statistics (computed once, also to check the scores)."""
    r = _validate.binary_rewards("rewards", rewards)
    s = _scores(scores, r.shape, jnp.result_type(float))
    tree, finite = _statistics_jit(r, s)
    stats = AnswerStatistics(*tree, n=r.shape[1])
    _check_finite(s, finite)
    return r, s, stats
