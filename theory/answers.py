"""Per-prompt statistics of sampled answers: what the estimators of :mod:`theory.sampled` read of a
run's rewards and score vectors (SPEC section 10).

Per prompt `i`, from `n` answers with rewards `r_ij` in `{0, 1}` and score vectors `s_ij` in `R^D`:

    c_i = sum_j r_ij,    g_i = (1/n) sum_j r_ij s_ij,    pair_i = (||G_i||^2 - Q_i) / (n (n-1)),

with `G_i = n g_i` and `Q_i = sum_j r_ij ||s_ij||^2`; `pair_i` is the average of `<s_ij, s_ij'>`
over ordered pairs of distinct correct answers (0 when `c_i < 2`), unbiased for
`||grad p_i||^2` up to the factor `P(both correct)`.

`c_i`, `G_i` and `Q_i` are formed in one place, :func:`answer_sums`, for every caller: the
estimators here, and the readers that accumulate them over chunks of answers (a file read line by
line, the gradients of a model too large to hold every score), which pass them to
:func:`statistics_from_sums`.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import validate as _validate

__all__ = ["AnswerSums", "answer_sums", "AnswerStatistics", "answer_statistics", "statistics_from_sums"]


class AnswerSums(NamedTuple):
    """Per-prompt sums over answers (shapes for rewards `(..., n)` and scores `(..., n, D)`).

    Sums over disjoint chunks of a prompt's answers add up to the sums over all of them.

    Attributes:
      correct: `(...)` `c_i = sum_j r_ij`.
      score_sum: `(..., D)` `G_i = sum_j r_ij s_ij`.
      score_sq_sum: `(...)` `Q_i = sum_j r_ij ||s_ij||^2`.
    """

    correct: jax.Array
    score_sum: jax.Array
    score_sq_sum: jax.Array


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
        raise ValueError(f"scores must have shape (P, n, D) = {shape + ('D',)} matching rewards; got shape {arr.shape}")
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
# Sums over answers


# Up to this many answers, and always on the host, the sums run answer by answer.
_UNROLL_ANSWERS = 128


def _answer_sums(r, s) -> AnswerSums:
    """:func:`answer_sums` without the checks: array operators, so numpy or JAX arrays alike."""
    r = r.astype(s.dtype)
    n = r.shape[-1]
    sq = (s * s).sum(axis=-1)  # ||s_ij||^2
    if n <= _UNROLL_ANSWERS or isinstance(s, np.ndarray):
        # In the order j = 0, 1, ..., n - 1, the order in which a file read line by line adds the
        # same terms. Under `jit` the n multiply-adds over (..., D) are one pass over the scores:
        # XLA's CPU backend runs the einsum below as a batched matrix-vector product at about
        # half the memory bandwidth (`passk/benchmarks/sampled.py`).
        big_g = functools.reduce(operator.add, [r[..., j, None] * s[..., j, :] for j in range(n)])
        q = functools.reduce(operator.add, [r[..., j] * sq[..., j] for j in range(n)])
    else:
        big_g = jnp.einsum("...n,...nd->...d", r, s)
        q = jnp.sum(r * sq, axis=-1)
    return AnswerSums(correct=r.sum(axis=-1), score_sum=big_g, score_sq_sum=q)


_answer_sums_jit = jax.jit(_answer_sums)


def answer_sums(rewards, scores) -> AnswerSums:
    """The per-prompt sums of sampled answers (SPEC section 10), for every caller of the project:

        c_i = sum_j r_ij,    G_i = sum_j r_ij s_ij,    Q_i = sum_j r_ij ||s_ij||^2.

    Sums over consecutive chunks of a prompt's answers add up to the sums over all of them. Up to
    128 answers per prompt, and always for numpy arrays, the answers are added in their order
    `j = 0, 1, ...`: for numpy arrays the sums of single answers, added in that order (a file
    read line by line), are the same numbers bit for bit; longer chunks, and JAX arrays (XLA may
    sum a squared norm in another order for another shape), agree within rounding.

    Args:
      rewards: `(..., n)` rewards (bool, integer or float; the statistics need them in `{0, 1}`),
        `n >= 1`.
      scores: `(..., n, D)` floating-point score vectors, leading axes those of `rewards`.

    Returns:
      :class:`AnswerSums` in the scores' dtype: numpy arrays for numpy inputs (summed on the host,
      whatever JAX's precision setting), else JAX arrays (this works under `jit` and `vmap`).

    Raises:
      TypeError: non-numeric rewards, scores not floating point.
      ValueError: shapes that do not match, `n < 1`.
    """
    host = isinstance(rewards, np.ndarray) and isinstance(scores, np.ndarray)
    r, s = (rewards, scores) if host else (jnp.asarray(rewards), jnp.asarray(scores))
    if not (r.dtype == np.bool_ or jnp.issubdtype(r.dtype, jnp.number)):
        raise TypeError(f"rewards must be bool, integer or float; got dtype {r.dtype}")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"scores must be floating point; got dtype {s.dtype}")
    if r.ndim < 1 or r.shape[-1] < 1 or s.shape[:-1] != r.shape:
        raise ValueError(
            f"scores must have shape (..., n, D) = {r.shape + ('D',)} matching rewards of shape (..., n) with "
            f"n >= 1; got rewards {r.shape}, scores {s.shape}"
        )
    return _answer_sums(r, s) if host else _answer_sums_jit(r, s)


# ---------------------------------------------------------------------------------------------
# Statistics of the answers


def _from_sums(c, big_g, q, n: int) -> AnswerStatistics:
    pair = jnp.where(c >= 2, (jnp.sum(big_g * big_g, axis=-1) - q) / (n * (n - 1)), 0.0)
    return AnswerStatistics(correct=c, mean_score=big_g / n, pair=pair, n=n)


# The public entry points run their few operations as one compiled program, not one per operation
# (each costs a trace and a lowering at every start, `passk/benchmarks/start.py`).
_from_sums_jit = jax.jit(lambda c, big_g, q, *, n: stats_tree(_from_sums(c, big_g, q, n)), static_argnames="n")


def _statistics(r, s) -> AnswerStatistics:
    sums = _answer_sums(r, s)
    return _from_sums(sums.correct, sums.score_sum, sums.score_sq_sum, r.shape[-1])


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

    For models too large to hold every score vector at once: accumulate, per prompt, the
    :func:`answer_sums` `c_i`, `G_i` and `Q_i` of chunks of answers (only correct answers
    contribute), then pass their totals here.

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
            "stats must be an AnswerStatistics (from answer_statistics or statistics_from_sums); "
            f"got {type(stats).__name__}"
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
