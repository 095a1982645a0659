"""Interference from sampled answers: what a real run can measure (SPEC section 10).

A run never sees `p_i` or `grad p_i`. Per prompt `i` it has `n` answers with rewards `r_ij` in
`{0, 1}` (`c_i` correct, `f_i = n - c_i` wrong) and, if it asks autodiff, score vectors
`s_ij = grad log pi(y_ij | x_i)` in `R^D`: all parameters, one layer, or a random sketch `S s_ij`
with `E[S^T S] = I`. Two facts make unbiased estimates possible: `E[r_ij s_ij] = grad p_i`, and for
`m` answers other than those already used, `E[prod (1 - r)] = (1 - p_i)^m`.

Per prompt the estimators read the statistics `c_i`, `g_i` and `pair_i` of its answers, defined
and computed in one read of the scores by :mod:`theory.answers`. Only prompts with `c_i >= 1`
carry gradient.

- :func:`sampled_agreement_scores`: `a_hat_i = <g_i, H - mu_i g_i> + mu_i pair_i`, `H = sum_l mu_l g_l`,
  unbiased for `a_i = <grad p_i, grad J_1>`.
- :func:`sampled_inner_product`: the U-statistic

      I_k_hat = sum_i mu_i [ c1_i <g_i, H - mu_i g_i> + mu_i c2_i pair_i ],
      c1_i = k C(f_i, k-1) / C(n-1, k-1),    c2_i = k C(f_i, k-1) / C(n-2, k-1),

  exactly unbiased for `I_k = <grad J_k, grad J_1>` for `1 <= k <= n - 1` (a correct answer's
  score times the chance that `k - 1` of the other answers all failed, averaged over those sets).
  At `k = 1`, `I_1_hat = sum_i mu_i a_hat_i`: the agreement estimate above is the same U-statistic.
  Beyond `k = n - 1` no unbiased estimate exists from `n` answers; none is extrapolated.
- :func:`plugin_inner_product`: the plug-in `sum_i mu_i w_k(c_i/n) a_hat_i`, biased in the
  direction that hides conflict (a hard prompt with `c_i = 0` drops out, and its rare successes
  are under-weighted: `k (1 - 1/n)^(k-1)` against the unbiased `k`); kept for comparison.

`k*` and its interval, read off these estimates and their standard errors, are in
:mod:`theory.sampled_critical`.

Numerics. The coefficients are formed in log space, and each `k`'s sum is evaluated divided by its
largest coefficient (`log_scale`), as `A_k` is for the exact `I_k` (SPEC section 4): the scaled
estimate and its standard error never underflow, for `n` in the thousands and every `k <= n - 1`,
and carry the sign of `I_k_hat`. `estimate = exp(log_scale) * scaled_estimate` may underflow to 0.

Uncertainty. Prompts are independent given the parameters, so the delete-one-prompt jackknife
(`mu` renormalised over the remaining prompts) gives a standard error. It also counts the spread
between prompts, so it is conservative for the sampling of answers alone; the delete-one-column
jackknife (`stderr="answers"`) counts the sampling of answers only.

Cost. One read of the scores (`O(P n D)`) for the statistics, then `O(K P D)` for `K` orders `k`;
never a `P x P` matrix. Memory `O(P D + K P)`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import validate as _validate
from theory.answers import (
    AnswerStatistics,
    answer_statistics,
    checked_statistics,
    first_index,
    read_answers,
    stats_tree,
)
from theory.binomial import log_factor
from theory.interference import conflict_inner_product

__all__ = [
    "SampledInner",
    "agreement_from_statistics",
    "inner_product_from_statistics",
    "sampled_agreement_scores",
    "sampled_inner_product",
    "plugin_inner_product",
]


class SampledInner(NamedTuple):
    """The sampled conflict inner product for each requested `k` (fields of `ks`'s shape, `deleted`
    with one more axis).

    Attributes:
      estimate: `I_k_hat`, exactly unbiased for `I_k`; may underflow to 0 for large `n` and `k`.
      stderr: its delete-one-prompt jackknife standard error.
      scaled_estimate: `I_k_hat / exp(log_scale)`: the sign of `I_k_hat`, never underflows.
      scaled_stderr: `stderr / exp(log_scale)`.
      log_scale: the log of the largest coefficient `c1_i`, `c2_i` at this `k` (0 when no prompt
        contributes; then every field is 0).
      deleted: the jackknife's delete-one values on the scaled fields, `ks.shape + (m,)`: one per
        prompt (`m = P`; a prompt of weight 0 holds the mean) or per answer column (`m = n`,
        `stderr="answers"`; constant at `k = n - 1`, where it gives no standard error). Their
        correlation across `k` is that of the estimates (:func:`theory.bands.jackknife_correlation`).
    """

    estimate: jax.Array
    stderr: jax.Array
    scaled_estimate: jax.Array
    scaled_stderr: jax.Array
    log_scale: jax.Array
    deleted: jax.Array


def _orders(name, ks, n):
    """Integer `k` (scalar or array) with `1 <= k <= n - 1` (concrete values checked)."""
    k = _validate.integer(name, ks, minimum=1)
    if _validate.is_concrete(k):
        host = np.asarray(k)
        bad = host > n - 1
        if bad.any():
            where = f" at index {first_index(bad)}" if host.ndim else ""
            raise ValueError(
                f"{name} must be <= n - 1 = {n - 1} (no unbiased estimate of I_k from n = {n} answers "
                f"beyond k = n - 1); got {int(host[bad].ravel()[0])}{where}"
            )
    return k


def _positive_prompts(mu, n_prompts):
    """The jackknife needs two prompts of positive weight (concrete `mu` checked)."""
    if _validate.is_concrete(mu):
        live = int(np.count_nonzero(np.asarray(mu) > 0))
        if live < 2:
            raise ValueError(
                f"mu must give positive weight to at least two prompts (the jackknife deletes one "
                f"prompt at a time); got {live} of {n_prompts}"
            )


# ---------------------------------------------------------------------------------------------
# Coefficients


def _log_all_fail_table(m: int, n: int, t_max: int, dtype):
    """`log(C(f, t) / C(m, t))` for `f = 0..n` (rows) and `t = 0..t_max` (columns).

    The chance that `t` answers drawn without replacement from `m`, of which `f` fail, all fail
    (a hypergeometric probability), as the cumulative sum over `j < t` of
    `log((f - j) / (m - j))` (terms :func:`theory.binomial.log_factor` of `x = (m - f)/(m - j)`);
    `-inf` where `t > f`. The table form of :func:`theory.binomial.log_binomial_ratio`. `O(n t_max)`.
    """
    f = jnp.arange(n + 1, dtype=dtype)[:, None]
    j = jnp.arange(t_max, dtype=dtype)[None, :]
    rest = m - j  # >= 1 for every j < t_max <= m
    x = (m - f) / rest
    quotient = (f - j) / rest
    # rows with f > m (x < 0) are never read (c >= 1, c >= 2 select them away)
    term = jnp.where(quotient <= 0, -jnp.inf, log_factor(x, jnp.where(quotient > 0, quotient, 1.0)))
    zero = jnp.zeros((n + 1, 1), dtype)
    return jnp.concatenate([zero, jnp.cumsum(term, axis=-1)], axis=-1)


def _log_class_coefficients(n: int, k, dtype):
    """`log c1`, `log c2` for every failure count `f = 0 .. n` of `n` answers, shape
    `k.shape + (n + 1,)`; `-inf` where a prompt with `f` failures cannot contribute (`c = n - f`
    below 1, below 2). A prompt's coefficients depend on it only through `f`. Needs `k <= n - 1`."""
    t = jnp.asarray(k).astype(jnp.int32) - 1  # k <= n - 1, so t = k - 1 <= n - 2 indexes both tables
    log_k = jnp.log(t.astype(dtype) + 1)[..., None]
    f = jnp.arange(n + 1)
    log_c1 = jnp.where(f <= n - 1, log_k + _log_all_fail_table(n - 1, n, n - 2, dtype).T[t], -jnp.inf)
    log_c2 = jnp.where(f <= n - 2, log_k + _log_all_fail_table(n - 2, n, n - 2, dtype).T[t], -jnp.inf)
    return log_c1, log_c2


def _failures(c, n: int):
    return (n - c).astype(jnp.int32)


def _log_coefficients(c, n: int, k, dtype):
    """`log c1`, `log c2` for counts `c` (any shape) out of `n`, shape `k.shape + c.shape`;
    `-inf` where a prompt cannot contribute (`c < 1`, `c < 2`). Needs `k <= n - 1`."""
    f = _failures(c, n)
    log_c1, log_c2 = _log_class_coefficients(n, k, dtype)
    return log_c1[..., f], log_c2[..., f]


# ---------------------------------------------------------------------------------------------
# The estimators


def _inner_core(stats: AnswerStatistics, mu, k):
    """Unvalidated :func:`sampled_inner_product` on statistics; `k` of any shape."""
    g, pair, n = stats.mean_score, stats.pair, stats.n
    # The coefficients depend on a prompt only through its failure count f_i: (..K, n + 1) tables
    # by class, read per prompt, and U summed class by class (no (K, P) x (P, D) product).
    f = _failures(stats.correct, n)  # (P,)
    log_c1, log_c2 = _log_class_coefficients(n, k, g.dtype)  # (..K, n + 1)
    present = jax.ops.segment_sum(jnp.ones_like(f), f, num_segments=n + 1) > 0  # (n + 1,)
    top = jnp.max(jnp.where(present, jnp.maximum(log_c1, log_c2), -jnp.inf), axis=-1)  # (..K,)
    log_scale = jnp.where(jnp.isfinite(top), top, 0.0)
    # c1 / scale, c2 / scale by class; 0 for classes no prompt is in (they could overflow)
    e1 = jnp.where(present, jnp.exp(log_c1 - log_scale[..., None]), 0.0)
    e2 = jnp.where(present, jnp.exp(log_c2 - log_scale[..., None]), 0.0)
    x1 = mu * e1[..., f]  # (..K, P) mu_i c1_i / scale
    x2 = mu * mu * e2[..., f]  # (..K, P) mu_i^2 c2_i / scale
    h = mu @ g  # (D,) H = sum_l mu_l g_l
    along_h = g @ h  # (P,) <g_i, H>
    sq = jnp.sum(g * g, axis=-1)  # (P,) ||g_i||^2
    by_class = jax.ops.segment_sum(mu[:, None] * g, f, num_segments=n + 1)  # (n + 1, D)
    u = e1 @ by_class  # (..K, D) U = sum_i x1_i g_i
    along_u = jnp.einsum("...d,pd->...p", u, g)  # (..K, P) <g_i, U>
    cross = x1 * (along_h - mu * sq)  # mu_i c1_i <g_i, H - mu_i g_i>
    self_term = x2 * pair
    total = jnp.sum(cross + self_term, axis=-1)
    # Delete prompt m: remove its cross terms as the weighted prompt (cross_m) and as the partner
    # of every other prompt (mu_m <g_m, U - x1_m g_m>), its self term, then renormalise mu.
    live = mu > 0
    keep = jnp.where(live, 1 - mu, 1.0)
    deleted = (total[..., None] - cross - mu * (along_u - x1 * sq) - self_term) / (keep * keep)
    n_live = jnp.sum(live)
    mean = jnp.sum(jnp.where(live, deleted, 0.0), axis=-1) / n_live
    spread = jnp.sum(jnp.where(live, (deleted - mean[..., None]) ** 2, 0.0), axis=-1)
    var = (n_live - 1) / n_live * spread
    scaled_stderr = jnp.where(n_live >= 2, jnp.sqrt(var), jnp.inf)
    scale = jnp.exp(log_scale)
    return SampledInner(
        estimate=total * scale,
        stderr=scaled_stderr * scale,
        scaled_estimate=total,
        scaled_stderr=scaled_stderr,
        log_scale=log_scale,
        deleted=jnp.where(live, deleted, mean[..., None]),
    )


def _weights(stats: AnswerStatistics, mu):
    n_prompts = stats.mean_score.shape[0]
    mu = _validate.prompt_weights(mu, n_prompts, stats.mean_score.dtype)
    if mu.ndim != 1:
        raise ValueError(f"mu must have shape (P,) = ({n_prompts},); got shape {mu.shape}")
    return mu


def _answers_stderr(r, s, stats: AnswerStatistics, mu, k, log_scale):
    """Scaled standard error over the sampling of answers alone: the delete-one-column jackknife.

    Given the prompts, the columns `(y_1j, ..., y_Pj)`, `j = 1..n`, are independent and identically
    distributed, and `I_k_hat` is symmetric in them. Deleting column `j` leaves `n - 1` answers
    per prompt: `c'_i = c_i - r_ij`, `G'_i = G_i - r_ij s_ij`, `Q'_i = Q_i - r_ij ||s_ij||^2`, and
    `I_k_hat^(-j)` needs only `<G_i, h_j>`, `r_ij <s_ij, H>`, `r_ij <s_ij, h_j>`, `r_ij <s_ij, G_i>`
    and `r_ij ||s_ij||^2` (`H = sum_l mu_l G_l`, `h_j = sum_l mu_l r_lj s_lj`): `O(P n D + K P n)`.
    The variance is `(n-1)/n sum_j (I^(-j) - mean)^2` (Efron-Stein: conservative). Needs
    `k <= n - 2`; `inf` at `k = n - 1`.

    Returns:
      `(scaled standard error, deleted)`, the second `k.shape + (n,)` (0 where `k = n - 1`).
    """
    n = stats.n
    dtype = s.dtype
    if n < 3:
        return jnp.full(jnp.shape(k), jnp.inf, dtype), jnp.zeros(jnp.shape(k) + (n,), dtype)
    r = r.astype(dtype)
    big_g = stats.mean_score * n  # (P, D)
    big_h = mu @ big_g  # (D,)
    h = jnp.einsum("p,pn,pnd->nd", mu, r, s)  # (n, D)
    s_h = r * jnp.einsum("pnd,d->pn", s, big_h)
    s_hj = r * jnp.einsum("pnd,nd->pn", s, h)
    s_g = r * jnp.einsum("pnd,pd->pn", s, big_g)
    s_sq = r * jnp.sum(s * s, axis=-1)
    g_sq = jnp.sum(big_g * big_g, axis=-1)
    inner_h = (big_g @ big_h)[:, None] - big_g @ h.T - s_h + s_hj  # <G'_ij, H'_j>
    sq_del = g_sq[:, None] - 2 * s_g + s_sq  # ||G'_ij||^2
    pair_num = (stats.pair * n * (n - 1))[:, None] - 2 * (s_g - s_sq)  # ||G'||^2 - Q'
    # Deleting answer j leaves c_i - 1 correct answers if it was correct, else c_i: two coefficients
    # per prompt, and the sum over prompts is two matrix products (no (K, P, n) array).
    valid = k <= n - 2
    kk = jnp.where(valid, k, 1)
    c = stats.correct
    mu_k = jnp.reshape(mu, (1,) * jnp.ndim(k) + mu.shape)
    shift = log_scale[..., None]
    deleted = 0.0
    for removed, c_left in ((r, jnp.maximum(c - 1, 0)), (1 - r, c)):
        log_c1, log_c2 = _log_coefficients(c_left, n - 1, kk, dtype)  # (..K, P)
        x1 = mu_k * jnp.exp(log_c1 - shift)
        x2 = mu_k * mu_k * jnp.exp(log_c2 - shift)
        deleted = deleted + (
            jnp.matmul(x1, removed * (inner_h - mu[:, None] * sq_del)) / (n - 1) ** 2
            + jnp.matmul(x2, removed * pair_num) / ((n - 1) * (n - 2))
        )  # (..K, n)
    mean = jnp.mean(deleted, axis=-1, keepdims=True)
    var = (n - 1) / n * jnp.sum((deleted - mean) ** 2, axis=-1)
    return jnp.where(valid, jnp.sqrt(var), jnp.inf), jnp.where(valid[..., None], deleted, 0.0)


def _inputs(rewards, scores, mu):
    stats = answer_statistics(rewards, scores)
    return stats, _weights(stats, mu)


def sampled_agreement_scores(rewards, scores, mu=None):
    """Unbiased agreement scores `a_hat_i` from sampled answers (SPEC sections 6 and 10).

    With `g_i = (1/n) sum_j r_ij s_ij` (unbiased for `grad p_i`), the cross terms `<g_i, g_l>`,
    `i != l`, are unbiased for `kappa(x_i, x_l)`, but `||g_i||^2` is not (it adds the variance of
    `g_i`). The self term averages `<r_ij s_ij, r_ij' s_ij'>` over all ordered pairs of distinct
    answers instead (a U-statistic; it uses every split of the answers into two halves at once):

        a_hat_i = sum_{l != i} mu_l <g_i, g_l> + mu_i (||G_i||^2 - Q_i) / (n (n-1)).

    `sum_i mu_i a_hat_i` is exactly :func:`sampled_inner_product` at `k = 1`, the unbiased
    `||grad J_1||^2`.

    Args:
      rewards: `(P, n)` rewards in `{0, 1}`, `n >= 2`.
      scores: `(P, n, ...)` score vectors `grad log pi(y_ij | x_i)`.
      mu: `(P,)` prompt weights, uniform when None.

    Returns:
      `(P,)` unbiased estimates of `a_i = <grad p_i, grad J_1>`.
    """
    return agreement_from_statistics(answer_statistics(rewards, scores), mu=mu)


def agreement_from_statistics(stats: AnswerStatistics, *, mu=None):
    """:func:`sampled_agreement_scores` from :class:`AnswerStatistics`."""
    stats = checked_statistics(stats)
    return _agreement_jit(*stats_tree(stats), _weights(stats, mu))


def _agreement(stats: AnswerStatistics, mu):
    g = stats.mean_score
    return g @ (mu @ g) - mu * jnp.sum(g * g, axis=-1) + mu * stats.pair


_agreement_jit = jax.jit(
    lambda correct, mean_score, pair, mu: _agreement(AnswerStatistics(correct, mean_score, pair, 0), mu)
)


def sampled_inner_product(rewards, scores, ks, *, mu=None, stderr: str = "prompts") -> SampledInner:
    """Unbiased `I_k = <grad J_k, grad J_1>` from sampled answers, with a jackknife standard error.

        I_k_hat = sum_i mu_i [ c1_i <g_i, H - mu_i g_i> + mu_i c2_i (||G_i||^2 - Q_i) / (n (n-1)) ],

    `c1_i = k C(f_i, k-1) / C(n-1, k-1)`, `c2_i = k C(f_i, k-1) / C(n-2, k-1)` (0 when `f_i < k-1`),
    `G_i = sum_j r_ij s_ij`, `g_i = G_i / n`, `Q_i = sum_j r_ij ||s_ij||^2`, `H = sum_l mu_l g_l`
    (SPEC section 10). `E[I_k_hat] = I_k` exactly over the sampling of answers, for every
    `1 <= k <= n - 1`. At `k = 1` it is `sum_i mu_i a_hat_i` with :func:`sampled_agreement_scores`.

    Two standard errors (`stderr`):

    - `"prompts"` (default): the delete-one-prompt jackknife with `mu` renormalised over the
      remaining prompts (`O(K P D)`, no refit). It treats the prompts as a sample from a larger
      population and so also counts the spread between them: conservative for these prompts.
    - `"answers"`: the variance over the sampling of answers alone, given these prompts: the
      delete-one-column jackknife (answer `j` of every prompt deleted at once; the columns are
      independent and identically distributed given the prompts). `O(P n D + K P n)`; needs the
      answers themselves, and `k <= n - 2` (`inf` at `k = n - 1`).

    Args:
      rewards: `(P, n)` rewards in `{0, 1}` (bool, int or float), `n >= 2`.
      scores: `(P, n, ...)` score vectors (all parameters, a layer, or a sketch; trailing axes
        flattened). Scores of wrong answers are read but multiplied by 0.
      ks: an integer or integer array, `1 <= k <= n - 1`; the result has its shape.
      mu: `(P,)` prompt weights, uniform when None; at least two must be positive.
      stderr: `"prompts"` or `"answers"` (above).

    Returns:
      :class:`SampledInner`. Decide signs from `scaled_estimate` (never underflows).

    Raises:
      ValueError: rewards not in `{0, 1}`, NaN or inf in rewards or scores (naming the first
        offending prompt), shapes that do not match, `n < 2`, `k` outside `[1, n - 1]`, `mu`
        negative, not summing to 1, or positive on fewer than two prompts.
      TypeError: non-integer `ks`, non-numeric arrays.

    Works under `jit`/`vmap` (a batch of runs on a leading axis: `vmap` this function); there only
    shapes and dtypes are checked.

    Example:
      >>> import numpy as np
      >>> r = np.array([[1, 1, 0], [1, 0, 0]])
      >>> s = np.array([[[1.0], [1.0], [0.0]], [[-1.0], [0.0], [0.0]]])
      >>> float(sampled_inner_product(r, s, 1).estimate)  # (2/3 - 1/3)/4 + ...
      -0.027777777777777776
    """
    _stderr_kind(stderr)
    if stderr == "prompts":
        return inner_product_from_statistics(answer_statistics(rewards, scores), ks, mu=mu)
    r, s, stats = read_answers(rewards, scores)
    mu = _validate.prompt_weights(mu, r.shape[0], s.dtype)
    k = _orders("ks", ks, r.shape[1])
    return _inner_answers_jit(r, s, stats_tree(stats), mu, k)


def _stderr_kind(stderr):
    if stderr not in ("prompts", "answers"):
        raise ValueError(f'stderr must be "prompts" or "answers"; got {stderr!r}')


@jax.jit
def _inner_answers_jit(r, s, stats_tree, mu, k):
    stats = AnswerStatistics(*stats_tree, n=r.shape[1])
    out = _inner_core(stats, mu, k)
    scaled, deleted = _answers_stderr(r, s, stats, mu, k, out.log_scale)
    return out._replace(stderr=scaled * jnp.exp(out.log_scale), scaled_stderr=scaled, deleted=deleted)


def inner_product_from_statistics(stats: AnswerStatistics, ks, *, mu=None) -> SampledInner:
    """:func:`sampled_inner_product` from :class:`AnswerStatistics`.

    (See :func:`theory.answers.statistics_from_sums`.)
    """
    stats = checked_statistics(stats)
    mu = _weights(stats, mu)
    k = _orders("ks", ks, stats.n)
    _positive_prompts(mu, stats.correct.shape[0])
    return _inner_jit(*stats_tree(stats), mu, k, n=stats.n)


@functools.partial(jax.jit, static_argnames=("n",))
def _inner_jit(correct, mean_score, pair, mu, k, *, n):
    return _inner_core(AnswerStatistics(correct, mean_score, pair, n), mu, k)


def plugin_inner_product(rewards, scores, ks, *, mu=None):
    """The plug-in `sum_i mu_i w_k(c_i / n) a_hat_i` (biased; for comparison only).

    :func:`theory.conflict_inner_product` at `p = c / n` and `a = a_hat` from
    :func:`sampled_agreement_scores` (unbiased): `E[w_k(c/n) a_hat] != w_k(p) a` because `w_k` is
    convex in `p` and `c_i` and `a_hat_i` move together. The bias hides conflict (SPEC section
    10). Defined for every `k >= 1`: the plug-in extrapolates past `n - 1`.

    Returns:
      An array of the shape of `ks`.
    """
    stats, mu = _inputs(rewards, scores, mu)
    return conflict_inner_product(stats.correct / stats.n, _agreement(stats, mu), ks, mu)
