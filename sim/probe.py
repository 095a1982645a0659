"""The section 11 probe for any JAX model: fold gradients and one number per answer and fold.

A training loop that can afford about one extra step logs, for every answer `y_ij` of a batch
split into `F` folds, the alignments `t_ijf = <s_ij, v_f>` with the folds `f` other than its own,
where `s_ij = grad log pi(y_ij | x_i)` and::

    v_f = (1/|f|) sum_{l in f} (1/n_l) sum_j r_lj s_lj

is fold `f`'s plain pass@1 policy gradient (SPEC section 11). From them,
:func:`theory.population_inner_product` estimates the population `I_k` without per-answer
gradients.

Cost: the fold gradients are one backward pass over the batch (each fold's prompts
differentiated on their own, the folds vmapped); the alignments are `F - 1` forward-mode
derivatives over the batch (each fold's prompts along the `F - 1` other folds' gradients, one
linearisation per fold and the tangents vmapped). Folds must be of equal size so that the
per-fold sub-batches share one shape.

The model is any function `log_prob(params, batch) -> (P', n)` giving `log pi(y_ij | x_i)` for a
batch pytree whose leaves carry the prompts on their leading axis (`P'` prompts of any count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory  # noqa: F401  (the docstring's example)
from theory import validate as _validate

__all__ = ["FoldProbe", "fold_probe"]


class FoldProbe(NamedTuple):
    """What the probe logs.

    Attributes:
      alignments: `(P, n, F)` `t_ijf = <s_ij, v_f>`, NaN at each answer's own fold (what a log
        writes as null) and at absent answers.
      fold_gradients: the `v_f`, a pytree like `params` with a leading fold axis `F`.
    """

    alignments: jax.Array
    fold_gradients: Any


def _check_folds(folds, n_prompts: int):
    host = np.asarray(folds)
    if host.shape != (n_prompts,) or not np.issubdtype(host.dtype, np.integer):
        raise ValueError(
            f"folds must be an integer array of shape (P,) = ({n_prompts},); got {host.dtype} {host.shape}"
        )
    if host.size and host.min() < 0:
        raise ValueError(f"folds must be >= 0; got {int(host.min())}")
    n_folds = int(host.max()) + 1
    sizes = np.bincount(host, minlength=n_folds)
    if n_folds < 2 or np.any(sizes != sizes[0]):
        raise ValueError(
            f"folds must split the prompts into F >= 2 folds of equal size (the per-fold sub-batches share a shape); "
            f"got fold sizes {sizes.tolist()}"
        )
    return host, n_folds


def fold_probe(log_prob: Callable, params, batch, rewards, folds, *, mask=None) -> FoldProbe:
    """Fold gradients `v_f` and alignments `t_ijf` for a model's batch of answers (SPEC section 11).

    Args:
      log_prob: `(params, batch) -> (P', n)` log-probabilities of the answers of each prompt.
      params: the model's parameters (any pytree).
      batch: a pytree whose leaves have the prompts on their leading axis (`P`).
      rewards: `(P, n)` rewards in `{0, 1}`.
      folds: `(P,)` fold ids `0 .. F-1`, folds of equal size, concrete.
      mask: optional `(P, n)` bool, which answers exist (`n_i` its row sum, `>= 1`), concrete.

    Under `jax.jit` the parameters, batch and rewards may be traced; `folds` and `mask` set the
    layout and stay concrete (close over them).

    Returns:
      :class:`FoldProbe`.

    Example:
      >>> probe = fold_probe(log_prob, params, batch, rewards, folds)
      >>> theory.population_inner_product(rewards, probe.alignments, folds, ks)
    """
    r = _validate.binary_rewards("rewards", rewards)
    n_prompts, n = r.shape
    host, n_folds = _check_folds(folds, n_prompts)
    mask = np.ones((n_prompts, n), bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != (n_prompts, n):
        raise ValueError(f"mask must have shape (P, n) = ({n_prompts}, {n}); got {mask.shape}")
    counts = mask.sum(axis=1)
    if np.any(counts < 1):
        raise ValueError(f"mask must keep at least one answer per prompt; prompt {int(np.argmin(counts))} has none")
    for leaf in jax.tree_util.tree_leaves(batch):
        if jnp.shape(leaf)[:1] != (n_prompts,):
            raise ValueError(
                f"batch leaves must have the prompts on their leading axis ({n_prompts}); got shape {jnp.shape(leaf)}"
            )
    order = np.argsort(host, kind="stable")  # prompts grouped by fold
    size = n_prompts // n_folds
    by_fold = lambda x: jnp.asarray(x)[order].reshape((n_folds, size) + jnp.shape(x)[1:])
    sub_batches = jax.tree_util.tree_map(by_fold, batch)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    # rewards may be traced (the probe inside a jitted training step); folds and mask set the layout
    weights = by_fold(jnp.where(mask, r.astype(dtype), 0.0) / jnp.asarray(counts[:, None] * size, dtype))
    present = by_fold(mask)
    alignments, grads = _probe(log_prob, params, sub_batches, weights, present, n_folds)
    inverse = np.argsort(order)
    alignments = alignments.reshape((n_prompts, n, n_folds))[inverse]
    return FoldProbe(alignments=alignments, fold_gradients=grads)


def _probe(log_prob, params, sub_batches, weights, present, n_folds: int):
    """Fold gradients by one vmapped backward pass; alignments along the other folds by linearisation."""

    def fold_gradient(sub, w):
        return jax.grad(lambda p: jnp.sum(w * log_prob(p, sub)))(params)

    grads = jax.vmap(fold_gradient)(sub_batches, weights)  # leading F

    # others[g] lists the F - 1 folds other than g: F - 1 tangents per sub-batch, never its own
    others = np.array([[f for f in range(n_folds) if f != g] for g in range(n_folds)])

    def along_others(sub, idx):
        _, tangent_fn = jax.linearize(lambda p: log_prob(p, sub), params)
        tangents = jax.tree_util.tree_map(lambda x: x[idx], grads)
        return jax.vmap(tangent_fn)(tangents)  # (F - 1, P/F, n)

    t_other = jax.vmap(along_others)(sub_batches, jnp.asarray(others))  # (F, F - 1, P/F, n)
    t = jnp.full((n_folds, n_folds) + t_other.shape[2:], jnp.nan, t_other.dtype)
    t = t.at[np.arange(n_folds)[:, None], others].set(t_other)  # (F, F, P/F, n), NaN on the diagonal
    t = jnp.moveaxis(t, 1, -1)  # (F, P/F, n, F)
    t = jnp.where(present[..., None], t, jnp.nan)
    return t, grads
