"""A measured smoothness constant `L_1` of `J_1` for the step-safe projections on the transformer
(SPEC sections 5 and 8): a local estimate, not a bound.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sim.transformer import checkpoint as _checkpoint
from sim.transformer import exact as _exact

__all__ = ["estimate_smoothness"]


def estimate_smoothness(
    params,
    prompts,
    answers,
    config,
    mu=None,
    *,
    key,
    directions=(),
    n_random: int = 4,
    power_iterations: int = 10,
    safety: float = 2.0,
) -> dict:
    """A local, measured estimate of the smoothness `L_1` of `J_1` at `params` (for "project-safe").

    A transformer has no closed-form bound on `||hess J_1||` (SPEC section 5 bounds only
    linear-softmax policies), so this measures it at one point: the largest of

    - `|v^T H v|` for unit `v` along `grad J_1`, along each of `directions` (e.g. `grad J_k`), and
      along `n_random` random Gaussian directions, and
    - `||H v||` after `power_iterations` steps of power iteration from a random start (which
      approaches the largest `|eigenvalue|` of `H`, the spectral norm),

    with `H = hess J_1(params)` applied by Hessian-vector products (`jax.jvp` of `jax.grad`), and
    returns it times `safety`. This is an estimate, not a bound: the curvature may be larger
    elsewhere along the training path, power iteration may not have converged, and the
    step-safe guarantee of `"project-safe"` is only as good as this number.

    Args:
      params, prompts, answers, config: the policy and population (as :func:`finetune`).
      mu: `(P,)` prompt weights (uniform when None).
      key: a `jax.random` key for the random directions.
      directions: extra parameter pytrees to measure along.
      n_random: random directions (`>= 0`).
      power_iterations: power-iteration steps (`>= 1`).
      safety: factor `>= 1` applied to the largest measured curvature.

    Returns:
      A dict of Python floats with keys `"smoothness"` (`safety` times the largest curvature),
      `"max_curvature"`, `"power_iteration"`, `"curvatures"` (list), `"safety"`, `"n_random"`,
      `"power_iterations"`.
    """
    if not safety >= 1:
        raise ValueError(f"safety must be >= 1; got {safety!r}")
    _checkpoint.check_positive_int("estimate_smoothness", "power_iterations", power_iterations)
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 0:
        raise ValueError(f"n_random must be an integer >= 0; got {n_random!r}")
    prompts, answers = jnp.asarray(prompts), jnp.asarray(answers)
    n = prompts.shape[0]
    mu = jnp.full((n,), 1.0 / n, jnp.float32) if mu is None else jnp.asarray(mu, jnp.float32)
    j1 = lambda th: _exact.pass_at_1(th, prompts, answers, config, mu)
    hvp = jax.jit(lambda th, v: jax.jvp(jax.grad(j1), (th,), (v,))[1])
    hvp = functools.partial(hvp, params)

    def unit(v):
        norm = jnp.sqrt(_exact.tree_dot(v, v))
        return jax.tree_util.tree_map(lambda x: x / norm, v)

    def random_direction(k):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(k, len(leaves))
        return unit(
            jax.tree_util.tree_unflatten(
                treedef, [jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves)]
            )
        )

    k_dirs, k_power = jax.random.split(key)
    measured = [jax.jit(jax.grad(j1))(params), *directions]
    measured += [random_direction(k) for k in jax.random.split(k_dirs, n_random)] if n_random else []
    curvatures = [float(abs(_exact.tree_dot(u, hvp(u)))) for u in map(unit, measured)]
    v, power = random_direction(k_power), 0.0
    for _ in range(power_iterations):
        hv = hvp(v)
        power = float(jnp.sqrt(_exact.tree_dot(hv, hv)))
        v = unit(hv)
    largest = max(curvatures + [power])
    return {
        "smoothness": safety * largest,
        "max_curvature": largest,
        "power_iteration": power,
        "curvatures": curvatures,
        "safety": float(safety),
        "n_random": int(n_random),
        "power_iterations": int(power_iterations),
    }
