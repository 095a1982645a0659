"""Interference over the prompt distribution, from one number per answer (SPEC section 11).

A batch's `P` prompts are draws from the training distribution, and
`I_k = E_{x, x' iid}[w_k(p_x) <grad p_x, grad p_x'>]`. Split the prompts into `F >= 2` folds; fold
`f`'s plain pass@1 gradient is `v_f = (1/|f|) sum_{l in f} g_l`, `g_l = (1/n_l) sum_j r_lj s_lj`.
Each answer logs `t_ijf = <s_ij, v_f>` for the folds `f` other than its own (a forward-mode
derivative of `log pi(y_ij | x_i)` along `v_f`). Then

    T_i = (1/n_i) sum_j r_ij mean_{f != f(i)} t_ijf,
    I_k_hat = (1/P) sum_i c1_i T_i,        c1_i = k C(f_i, k-1) / C(n_i - 1, k-1),

with `f_i = n_i - c_i` the failures of prompt `i` (`c1_i = 0` when `f_i < k - 1`), is unbiased for
`I_k` at every `k <= min_i n_i`: `v_f` is independent of prompt `i`'s answers, `E[v_f] = grad J_1`,
and a correct answer times the chance that `k - 1` of the prompt's other answers all failed has
expectation `(1 - p_i)^(k-1) grad p_i`. Groups may differ in size (`mask`); the smallest `n_i`
caps `k`.

Uncertainty. The estimate is a sum over ordered pairs of folds,
`I_k_hat = sum_{f != f'} M_k[f, f'] / (P (F - 1))` with `M_k[f, f'] = sum_{i in f} c1_i T_i^{f'}`
(`T_i^{f'}` the answers' mean along `v_{f'}` alone). Deleting fold `d` (its answers and `v_d`
together) leaves `sum_{f != f', both != d} M_k[f, f'] / ((P - |d|)(F - 2))`; the delete-one-fold
jackknife of these `F` values gives a standard error with `F - 1` degrees of freedom (t quantile;
needs `F >= 3`), and their correlation across `k` the simultaneous band of :mod:`theory.bands`.

Numerics: each `k`'s coefficients are divided by their largest (`log_scale`), as in section 10,
so signs never underflow; `estimate = exp(log_scale) * scaled_estimate`.

This estimates the population `I_k` (`"population"`), not the batch's own `I_k` of section 10
(`"batch"`), which needs the self terms `||grad p_i||^2` and so per-answer score vectors. The two
can differ (section 11); say which one a number is.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import bands as _bands
from theory import validate as _validate
from theory.binomial import log_binomial_ratio

__all__ = [
    "PopulationInner",
    "population_inner_product",
    "population_critical_k",
]


class PopulationInner(NamedTuple):
    """The cross-fitted estimate of the population `I_k` at each requested `k` (SPEC section 11).

    Attributes:
      estimate: `I_k_hat`, unbiased for `I_k`; may underflow to 0 for large `k`.
      stderr: its delete-one-fold jackknife standard error (`inf` when `F < 3`).
      scaled_estimate: `I_k_hat / exp(log_scale)`: the sign, never underflows.
      scaled_stderr: `stderr / exp(log_scale)`.
      log_scale: the log of the largest coefficient `c1_i` at this `k` (0 when no prompt
        contributes; then the estimate is 0).
      deleted: `ks.shape + (F,)`: the scaled estimate with each fold deleted (the jackknife's
        values, whose correlation across `k` sets the simultaneous band).
      dof: `F - 1`, the degrees of freedom of the standard error.
    """

    estimate: jax.Array
    stderr: jax.Array
    scaled_estimate: jax.Array
    scaled_stderr: jax.Array
    log_scale: jax.Array
    deleted: jax.Array
    dof: int


def _inputs(rewards, alignments, folds, mask):
    """Validated `(r, t, folds, mask, n_folds)`; values checked where concrete."""
    r = _validate.binary_rewards("rewards", rewards)
    n_prompts, n = r.shape
    t = _validate.as_float_array("alignments", alignments)
    if t.ndim != 3 or t.shape[:2] != (n_prompts, n):
        raise ValueError(
            f"alignments must have shape (P, n, F) = ({n_prompts}, {n}, F), one value per answer and fold; "
            f"got shape {t.shape}"
        )
    n_folds = t.shape[2]
    if n_folds < 2:
        raise ValueError(f"alignments must hold F >= 2 folds (cross-fitting needs another fold); got F = {n_folds}")
    folds = _validate.integer("folds", folds, minimum=0)
    if folds.shape != (n_prompts,):
        raise ValueError(
            f"folds must have shape (P,) = ({n_prompts},), one fold id per prompt; got shape {folds.shape}"
        )
    if mask is None:
        mask = np.ones((n_prompts, n), bool)
    else:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_ or mask.shape != (n_prompts, n):
            raise ValueError(
                f"mask must be a bool array of shape (P, n) = ({n_prompts}, {n}); got {mask.dtype} {mask.shape}"
            )
    own = np.arange(n_folds)[None, :] == np.asarray(folds)[:, None] if _validate.is_concrete(folds) else None
    if _validate.is_concrete(folds):
        host = np.asarray(folds)
        if np.any(host >= n_folds):
            i = int(np.flatnonzero(host >= n_folds)[0])
            raise ValueError(f"folds must be < F = {n_folds}; got {int(host[i])} at prompt {i}")
        sizes = np.bincount(host, minlength=n_folds)
        if np.any(sizes == 0):
            raise ValueError(f"folds must leave no fold empty; fold {int(np.flatnonzero(sizes == 0)[0])} has no prompt")
    if _validate.is_concrete(mask):
        counts = np.asarray(mask).sum(axis=1)
        if np.any(counts < 1):
            raise ValueError(
                f"mask must keep at least one answer per prompt; prompt {int(np.flatnonzero(counts < 1)[0])} has none"
            )
    if own is not None and _validate.is_concrete(t) and _validate.is_concrete(mask):
        # The own fold's value is ignored (a log writes null there); every other must be finite.
        used = np.asarray(mask)[:, :, None] & ~own[:, None, :]
        bad = used & ~np.isfinite(np.asarray(t))
        if bad.any():
            i, j, f = (int(x) for x in np.argwhere(bad)[0])
            raise ValueError(
                f"alignments must be finite off the answer's own fold; got {np.asarray(t)[i, j, f]!r} "
                f"at prompt {i}, answer {j}, fold {f}"
            )
    return r, t, folds, jnp.asarray(mask), n_folds


def _orders(ks, counts):
    """`k` with `1 <= k <= min_i n_i`; the capping prompt named (concrete values checked)."""
    k = _validate.integer("ks", ks, minimum=1)
    if _validate.is_concrete(k) and _validate.is_concrete(counts):
        host, n_i = np.asarray(k), np.asarray(counts)
        cap = int(n_i.min())
        if host.size and host.max() > cap:
            i = int(np.argmin(n_i))
            raise ValueError(
                f"ks must be <= min n_i = {cap} (no unbiased estimate of I_k beyond the smallest group: prompt {i} "
                f"has {cap} answers); got {int(host.max())}"
            )
    return k


def _core(r, t, folds, mask, k, n_folds: int):
    """Unvalidated estimate for orders `k` of any shape: a :class:`PopulationInner`."""
    return _core_compiled(r, t, folds, mask, k, n_folds)._replace(dof=n_folds - 1)


# Compiled once per shape: traced op by op, the `while_loop` of `log_binomial_ratio` is compiled
# again on every call (a fresh closure each time), about 0.3 s per step of a run.
@functools.partial(jax.jit, static_argnames="n_folds")
def _core_compiled(r, t, folds, mask, k, n_folds: int):
    dtype = t.dtype
    maskf = mask.astype(dtype)
    rr = r.astype(dtype) * maskf  # (P, n); absent answers carry nothing
    counts = jnp.sum(mask, axis=1)  # (P,) n_i
    correct = jnp.sum(rr, axis=1).astype(jnp.int32)  # (P,) c_i
    own = jax.nn.one_hot(folds, n_folds, dtype=dtype)  # (P, F)
    # T_i^{f'}: the mean along v_{f'} of the correct answers; the own fold is zeroed, whatever it holds.
    t_clean = jnp.where(own[:, None, :] > 0, 0.0, jnp.where(maskf[..., None] > 0, t, 0.0))
    along = jnp.einsum("pn,pnf->pf", rr, t_clean) / counts[:, None].astype(dtype)  # (P, F)
    # log c1_i = log k + log(C(f_i, k-1) / C(n_i - 1, k-1)); with m = n_i - 1 and c_i - 1 of its
    # answers correct, that ratio is log_binomial_ratio(m, c_i - 1, k - 1).
    kk = jnp.asarray(k).astype(jnp.int32)[..., None]  # (..K, 1)
    has = correct >= 1
    log_ratio = log_binomial_ratio(counts - 1, jnp.where(has, correct - 1, 0), kk - 1, dtype)  # (..K, P)
    log_c1 = jnp.where(has, jnp.log(kk.astype(dtype)) + log_ratio, -jnp.inf)
    top = jnp.max(log_c1, axis=-1)
    log_scale = jnp.where(jnp.isfinite(top), top, 0.0)
    e1 = jnp.where(jnp.isfinite(log_c1), jnp.exp(log_c1 - log_scale[..., None]), 0.0)  # (..K, P)
    by_fold = own.T  # (F, P)
    pair = jnp.einsum("...p,fp,pg->...fg", e1, by_fold, along)  # (..K, F, F): M_k[f, f'] / scale
    off = 1.0 - jnp.eye(n_folds, dtype=dtype)
    pair = pair * off
    n_prompts = r.shape[0]
    total = jnp.sum(pair, axis=(-2, -1))
    scaled = total / (n_prompts * (n_folds - 1))
    # Deleting fold d removes row d and column d of M_k.
    sizes = jnp.sum(own, axis=0)  # (F,)
    row, col = jnp.sum(pair, axis=-1), jnp.sum(pair, axis=-2)  # (..K, F)
    if n_folds >= 3:
        deleted = (total[..., None] - row - col) / ((n_prompts - sizes) * (n_folds - 2))
        mean = jnp.mean(deleted, axis=-1, keepdims=True)
        var = (n_folds - 1) / n_folds * jnp.sum((deleted - mean) ** 2, axis=-1)
        scaled_se = jnp.sqrt(var)
    else:
        deleted = jnp.full(row.shape, jnp.nan, dtype)
        scaled_se = jnp.full(total.shape, jnp.inf, dtype)
    scale = jnp.exp(log_scale)
    return PopulationInner(
        estimate=scaled * scale,
        stderr=scaled_se * scale,
        scaled_estimate=scaled,
        scaled_stderr=scaled_se,
        log_scale=log_scale,
        deleted=deleted,
        dof=None,
    )


def population_inner_product(rewards, alignments, folds, ks, *, mask=None) -> PopulationInner:
    """The cross-fitted, unbiased estimate of the population `I_k` (SPEC section 11).

        I_k_hat = (1/P) sum_i c1_i (1/n_i) sum_j r_ij mean_{f != f(i)} t_ijf,
        c1_i = k C(f_i, k-1) / C(n_i - 1, k-1).

    Args:
      rewards: `(P, n)` rewards in `{0, 1}` (answers beyond a prompt's group, per `mask`, are
        ignored).
      alignments: `(P, n, F)` `t_ijf = <s_ij, v_f>`; the entry at the answer's own fold
        `folds[i]` is ignored (it may be NaN), every other present entry must be finite.
      folds: `(P,)` fold ids in `0 .. F-1`, no fold empty.
      ks: orders, integers `1 <= k <= min_i n_i` (any shape).
      mask: optional `(P, n)` bool, which answers each prompt has (`n_i` = its row sum, `>= 1`).

    Returns:
      :class:`PopulationInner` with fields of `ks`'s shape (`deleted` adds a fold axis).

    Example:
      >>> inner = population_inner_product(rewards, alignments, folds, jnp.arange(1, 9))
      >>> inner.scaled_estimate < 0  # the sign of I_k, for k = 1 .. 8

    Raises:
      ValueError: rewards not 0/1, shapes that do not pair, an empty fold, a non-finite
        alignment off its own fold, or a `k` above the smallest group (the prompt is named).
    """
    r, t, folds, mask, n_folds = _inputs(rewards, alignments, folds, mask)
    k = _orders(ks, jnp.sum(mask, axis=1))
    return _core(r, t, folds, mask, k, n_folds)


def population_critical_k(
    rewards, alignments, folds, *, mask=None, level=0.95, key=None, k_max: int | None = None
) -> _bands.CriticalKInterval:
    """`k*` of the population `I_k` with an interval from a simultaneous band (SPEC sections 10, 11).

    Evaluates :func:`population_inner_product` at `k = 1 .. k_max` and reads the interval off the
    band `I_k_hat +- q se_k` (:func:`theory.bands.read_critical_k`), with `q` the quantile of
    `max_k |T_k|` under the jackknife's correlation across `k` and `F - 1` degrees of freedom
    (:func:`theory.bands.simultaneous_quantile`): both ends hold their level together.

    Args:
      rewards, alignments, folds, mask: as in :func:`population_inner_product`; `F >= 3` folds.
      level: nominal level of the band, in `(0, 1)`.
      key: a `jax.random` key for the simulated quantile; None gives Bonferroni's (wider).
      k_max: the largest `k` read (default and maximum: `min_i n_i`).

    Returns:
      :class:`theory.bands.CriticalKInterval`.
    """
    level = _validate.level("level", level)
    r, t, folds, mask, n_folds = _inputs(rewards, alignments, folds, mask)
    if n_folds < 3:
        raise ValueError(
            f"alignments must hold F >= 3 folds for an interval (the jackknife deletes a fold and "
            f"needs two left); got F = {n_folds}"
        )
    cap = int(np.asarray(jnp.sum(mask, axis=1)).min())
    k_max = cap if k_max is None else _validate.python_int("k_max", k_max, minimum=1)
    ks = _orders(np.arange(1, k_max + 1), jnp.sum(mask, axis=1))
    inner = _core(r, t, folds, mask, jnp.asarray(ks), n_folds)
    dof = n_folds - 1
    corr = _bands.jackknife_correlation(np.asarray(inner.deleted))
    q = _bands.simultaneous_quantile(corr, level=level, dof=dof, key=key)
    return _bands.read_critical_k(
        inner.scaled_estimate,
        inner.scaled_stderr,
        quantile=q,
        level=level,
        band="bonferroni" if key is None else "max-t",
        signal_quantile=_bands.t_quantile(level, dof),
    )
