"""Confirmation 1: `theory.critical_k` against the first negative autodiff inner product.

From exact `p` and agreements, :func:`theory.critical_k` predicts `k*`; autodiff of an
independently written `J_k = sum_i mu_i (1 - (1 - p_i)^k)` gives `<grad J_k, grad J_1>` for every
`k`, and its first negative `k` must be the same (:func:`critical_k_agreement`). Numbers only:
the JSON form is :func:`sim.studies.serialise.to_json`, the figure :mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.bandit import SoftmaxBandit
from sim.toy import TOY_DEFAULTS, toy_bandit

__all__ = ["CriticalK", "critical_k_agreement"]


class CriticalK(NamedTuple):
    """Confirmation 1 over `R` regimes.

    Attributes:
      p_hard, separation, start_logit: `(R,)` regime parameters; seed: `(R,)` seed index.
      k_grid: the orders searched, `1..k_grid`.
      k_star_predicted: `(R,)` `theory.critical_k` (`k_grid + 1`: none).
      k_star_autodiff: `(R,)` first `k` with a negative autodiff inner product (`k_grid + 1`: none).
      inner: `(R, k_grid)` autodiff `<grad J_k, grad J_1>`.
      min_relative_margin: smallest `min(|I_{k*}|, |I_{k*-1}|) / max_k |I_k|` over regimes with a
        crossing (NaN when none): how close to a tie the hardest case was.
      shown: indices of up to six regimes with a crossing (the figure's curves).
    """

    p_hard: np.ndarray
    separation: np.ndarray
    start_logit: np.ndarray
    seed: np.ndarray
    k_grid: int
    k_star_predicted: np.ndarray
    k_star_autodiff: np.ndarray
    inner: np.ndarray
    min_relative_margin: float
    shown: np.ndarray


def _pass_at_k_objective(bandit: SoftmaxBandit, theta, k):
    """`J_k = sum_i mu_i (1 - (1 - p_i)^k)`, written out from :meth:`SoftmaxBandit.success`.

    Independent of :func:`theory.pass_at_k` (and of its derivative rule, which returns the very
    `w_k` that confirmation 1 checks): autodiff of this function differentiates `(1 - p)^k` itself.
    """
    p = bandit.success(theta)
    return jnp.sum(bandit.prompt_weights * (1 - (1 - p) ** k))


def _autodiff_inner(bandit: SoftmaxBandit, theta, ks):
    """`<grad J_k, grad J_1>` for every `k` in `ks`, each by `jax.grad` of :func:`_pass_at_k_objective`."""
    g1 = jax.grad(lambda th: _pass_at_k_objective(bandit, th, 1))(theta)
    gk = jax.vmap(lambda k: jax.grad(lambda th: _pass_at_k_objective(bandit, th, k))(theta))(ks)
    return jnp.einsum("kad,ad->k", gk, g1, precision=jax.lax.Precision.HIGHEST)


def critical_k_agreement(
    *,
    key,
    p_hards=(0.1, 0.3),
    separations=(0.5, 2.0),
    start_logits=(2.5,),
    n_seeds: int = 2,
    n_prompts: int = 32,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    k_grid: int = 64,
) -> CriticalK:
    """Confirmation 1: predicted `k*` versus the first negative autodiff inner product.

    For every regime (toy bandits over `p_hards x separations x start_logits x seeds`, float64):
    `p` and agreements from :meth:`SoftmaxBandit.success` / :meth:`agreement_scores` (one
    reverse and one forward pass) go into :func:`theory.critical_k` (`k_max = k_grid`); separately,
    `<grad J_k, grad J_1>` for `k = 1..k_grid` comes from autodiff of
    `J_k = sum_i mu_i (1 - (1 - p_i)^k)` written out from `p` (not through `theory`), and its
    first negative `k` is read off. The two must be equal (both `k_grid + 1` when there is no
    conflict up to `k_grid`).

    Returns:
      :class:`CriticalK`.
    """
    grid = [(ph, sep, sl, s) for ph in p_hards for sep in separations for sl in start_logits for s in range(n_seeds)]
    seed_keys = jax.random.split(key, n_seeds)
    with jax.enable_x64(True):
        ph = jnp.asarray([g[0] for g in grid], jnp.float64)
        sep = jnp.asarray([g[1] for g in grid], jnp.float64)
        sl = jnp.asarray([g[2] for g in grid], jnp.float64)
        keys = seed_keys[np.asarray([g[3] for g in grid])]
        ks = jnp.arange(1, k_grid + 1, dtype=jnp.int32)

        @jax.jit
        def compute(ph, sep, sl, keys):
            def one(ph, sep, sl, key):
                bandit, theta0 = toy_bandit(
                    key,
                    n_prompts=n_prompts,
                    p_hard=ph,
                    separation=sep,
                    n_actions=n_actions,
                    start_logit=sl,
                    dtype=jnp.float64,
                )
                p = bandit.success(theta0)
                a = bandit.agreement_scores(theta0)
                inner = _autodiff_inner(bandit, theta0, ks)
                return p, a, bandit.prompt_weights, inner

            return jax.vmap(one)(ph, sep, sl, keys)

        p, a, mu, inner = (np.asarray(x) for x in compute(ph, sep, sl, keys))
        predicted = [theory.critical_k(p[i], a[i], mu[i], k_max=k_grid) for i in range(len(grid))]
    none = k_grid + 1
    negative = inner < 0
    first = np.where(negative.any(axis=1), np.argmax(negative, axis=1) + 1, none)
    margins = []
    for i, f in enumerate(first):
        if f != none:
            scale = np.max(np.abs(inner[i]))
            margins.append(float(min(abs(inner[i, f - 1]), abs(inner[i, f - 2]) if f >= 2 else np.inf) / scale))
    return CriticalK(
        p_hard=np.asarray([g[0] for g in grid], np.float64),
        separation=np.asarray([g[1] for g in grid], np.float64),
        start_logit=np.asarray([g[2] for g in grid], np.float64),
        seed=np.asarray([g[3] for g in grid]),
        k_grid=int(k_grid),
        k_star_predicted=np.asarray([none if k is None else k for k in predicted]),
        k_star_autodiff=first,
        inner=inner,
        min_relative_margin=min(margins) if margins else math.nan,
        shown=np.flatnonzero(first != none)[:6],
    )
