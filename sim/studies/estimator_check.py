"""Confirmation 5: each estimator's mean sampled update against its exact expectation.

:func:`estimator_check` averages many sampled updates of every estimator at the toy start and
compares them with `sum_i mu_i v(p_i) grad p_i` (`v = theory.implied_prompt_weight`), with their
variances. Numbers only: the JSON form is :func:`sim.studies.serialise.to_json`, the figure
:mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.answers import sampled_updates
from sim.toy import toy_bandit
from sim.train import ESTIMATORS, PASSK_ESTIMATORS

__all__ = ["EstimatorCheck", "estimator_check"]


class EstimatorCheck(NamedTuple):
    """Confirmation 5.

    Attributes:
      k, n_samples, n_draws, n_prompts, n_parameters: the settings.
      estimators: per estimator, `z_max`, `relative_error`, `cos_expected_vs_grad_jk`,
        `relative_total_variance`, `relative_variance_along_grad_jk` (None when the expectation
        has no component along `grad J_k`) and `uses_k`.
      implied_weights: `{"p": grid, "curves": {estimator: {"finite_n", "limit"}}}`, `v(p)` on the
        grid at `n_samples` and in the limit `n -> inf`.
    """

    k: int
    n_samples: int
    n_draws: int
    n_prompts: int
    n_parameters: int
    estimators: dict
    implied_weights: dict


def estimator_check(
    *,
    key,
    n_draws: int = 2000,
    n_prompts: int = 32,
    k: int = 4,
    n_samples: int = 8,
    estimators=ESTIMATORS[1:],
) -> EstimatorCheck:
    """Confirmation 5: the mean sampled update equals its exact expectation; variances compared.

    At the toy start (default regime, `n_prompts` prompts, float64), `n_draws` independent updates
    of each estimator (:func:`sim.answers.sampled_update`, `n_samples` answers per prompt, order
    `k`) are averaged and compared with the exact expectation
    `sum_i mu_i v(p_i) grad p_i`, `v = theory.implied_prompt_weight(method, p, k=k, n=n_samples)`
    (for the PKPO variants this is `grad J_k` itself). Reported per estimator: the largest
    `|mean - exact| / stderr` over parameters (`z_max`), the relative error
    `||mean - exact|| / ||exact||`, the cosine between the exact expectation and `grad J_k`, the
    total variance `E||u - E u||^2` relative to `||E u||^2`, and the variance of the component
    along `grad J_k`, relative to the squared projection of `E u` on it. Also the implied weights
    `v(p)` on a grid of `p` (at `n_samples` and in the limit) for the figure.

    Returns:
      :class:`EstimatorCheck`.
    """
    estimators = tuple(estimators)
    for est in estimators:
        if est not in ESTIMATORS[1:]:
            raise ValueError(f"estimators must be among {ESTIMATORS[1:]}; got {est!r}")
    grid = np.linspace(0.0, 1.0, 101)
    with jax.enable_x64(True):
        bandit, theta0 = toy_bandit(jax.random.fold_in(key, 0), n_prompts=n_prompts, dtype=jnp.float64)
        draw_keys = jax.random.split(jax.random.fold_in(key, 1), n_draws)

        @jax.jit
        def compute(bandit, theta0, draw_keys):
            p = bandit.success(theta0)
            gk = bandit.pass_at_k_grad(theta0, k)
            p_and_grid = jnp.concatenate([p, jnp.asarray(grid, p.dtype)])  # one weight call per method
            expected, finite, limit = {}, {}, {}
            for est in estimators:
                kk = k if est in PASSK_ESTIMATORS else None
                w = theory.implied_prompt_weight(est, p_and_grid, k=kk, n=n_samples)
                expected[est] = bandit.weighted_grad(theta0, bandit.prompt_weights * w[: p.shape[0]])
                finite[est] = w[p.shape[0] :]
                limit[est] = theory.implied_prompt_weight(est, jnp.asarray(grid, p.dtype), k=kk, n=None)
            samples = jax.vmap(
                lambda kk_: sampled_updates(bandit, theta0, estimators=estimators, k=k, n_samples=n_samples, key=kk_)
            )(draw_keys)  # every estimator on the same draws
            return gk, expected, finite, limit, samples

        gk, expected, finite, limit, samples = jax.tree_util.tree_map(np.asarray, compute(bandit, theta0, draw_keys))
    u_hat = gk.reshape(-1) / np.linalg.norm(gk)
    rows = {}
    curves = {}
    for est in estimators:
        curves[est] = {"finite_n": finite[est], "limit": limit[est]}
        e = expected[est].reshape(-1)
        u = samples[est].reshape(n_draws, -1)
        mean = u.mean(axis=0)
        stderr = u.std(axis=0, ddof=1) / math.sqrt(n_draws)
        z = np.abs(mean - e) / np.where(stderr > 0, stderr, np.inf)
        centred = u - mean
        along = centred @ u_hat
        e_along = float(e @ u_hat)
        rows[est] = {
            "z_max": float(z.max()),
            "relative_error": float(np.linalg.norm(mean - e) / np.linalg.norm(e)),
            "cos_expected_vs_grad_jk": float(e_along / np.linalg.norm(e)),
            "relative_total_variance": float(np.mean(np.sum(centred**2, axis=1)) / np.dot(e, e)),
            "relative_variance_along_grad_jk": float(np.mean(along**2) / e_along**2) if e_along != 0 else None,
            "uses_k": est in PASSK_ESTIMATORS,
        }
    return EstimatorCheck(
        k=int(k),
        n_samples=int(n_samples),
        n_draws=int(n_draws),
        n_prompts=int(n_prompts),
        n_parameters=int(np.prod(theta0.shape)),
        estimators=rows,
        implied_weights={"p": grid, "curves": curves},
    )
