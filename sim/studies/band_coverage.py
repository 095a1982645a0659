"""Coverage of the `k*` interval: pointwise bounds against a simultaneous band (SPEC section 10).

The upper end of the `k*` interval is the first `k` whose upper bound `I_k_hat + q se_k` falls
below 0. It misses `k*` from below when *any* `k < k*` does, so with the pointwise `q` its error is
a union over `k < k*`; a simultaneous band over `k = 1 .. k_max` (:mod:`theory.bands`) bounds it.
The union matters where `I_k` stays barely above 0 for many `k` below `k*`. :func:`flat_instance`
builds such a batch, explicitly:

- `easy` prompts (`p = 0.97`) with gradient `u`: they make `grad J_1` large, so `I_1` is clearly
  positive and the estimates are first order in the answers' noise (the jackknife is calibrated);
- `middle` and `hard` prompts (`p = 0.3`, `0.25`) with gradients `eps u` and `-eps rho u`, `rho`
  set so that the slowly shrinking `(0.7 / 0.75)^(k-1)` crosses it at `k*`: from `k = 3` on `I_k`
  is their tiny, slowly changing sum, barely above 0 until `k*`.

Answer `j` of prompt `i` is correct with probability `p_i` (independently), and a correct answer's
score is `d_i / p_i + sigma xi_ij` (`xi` standard normal in `R^D`), so that `E[r_ij s_ij] = d_i`
and the exact `I_k = sum_{i,l} mu_i mu_l w_k(p_i) <d_i, d_l>` is known (wrong answers' scores are
never read). :func:`band_coverage` draws runs of this batch and counts how often each rule's
interval covers the exact `k*`.

Numbers only.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import wilson_interval
from sim.studies.recovery import k_star_covered

__all__ = ["FlatInstance", "flat_instance", "exact_inner", "draw_answers", "band_coverage"]


class FlatInstance(NamedTuple):
    """A batch of prompts with known success probabilities and gradients.

    Attributes:
      success: `(P,)` `p_i`.
      gradient: `(P, D)` `d_i = grad p_i`.
      sigma: the noise scale of a correct answer's score.
    """

    success: np.ndarray
    gradient: np.ndarray
    sigma: float


def flat_instance(
    *,
    per_class: int = 16,
    k_star: int = 16,
    eps: float = 0.02,
    sigma: float = 3.0,
    dim: int = 4,
    easy: float = 0.97,
    middle: float = 0.3,
    hard: float = 0.25,
) -> FlatInstance:
    """The batch of the module docstring: `per_class` prompts in each of three classes.

    `rho = ((1 - middle) / (1 - hard))^(k_star - 3/2)` puts the crossing of
    `(1 - middle)^(k-1) - rho (1 - hard)^(k-1)` between `k_star - 1` and `k_star`
    (the exact `k*` is read off :func:`exact_inner`, not assumed).
    """
    for name, value in (("easy", easy), ("middle", middle), ("hard", hard)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must lie in (0, 1); got {value!r}")
    if not hard < middle:
        raise ValueError(f"hard must be below middle; got hard = {hard!r}, middle = {middle!r}")
    for name, value in (("eps", eps), ("sigma", sigma)):
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {value!r}")
    per_class = theory.validate.python_int("per_class", per_class, minimum=1)
    k_star = theory.validate.python_int("k_star", k_star, minimum=2)
    dim = theory.validate.python_int("dim", dim, minimum=1)
    rho = ((1 - middle) / (1 - hard)) ** (k_star - 1.5)
    u = np.zeros(dim)
    u[0] = 1.0
    success = np.repeat([easy, middle, hard], per_class)
    gradient = np.repeat(np.stack([u, eps * u, -eps * rho * u]), per_class, axis=0)
    return FlatInstance(success, gradient, float(sigma))


def exact_inner(instance: FlatInstance, ks) -> np.ndarray:
    """The exact `I_k = sum_i mu_i w_k(p_i) <d_i, grad J_1>` of the batch (uniform `mu`), at `ks`."""
    p, d = np.asarray(instance.success), np.asarray(instance.gradient)
    mu = np.full(p.size, 1.0 / p.size)
    return np.asarray(theory.conflict_inner_product(p, d @ (mu @ d), np.asarray(ks), mu), np.float64)


def draw_answers(key, instance: FlatInstance, n: int):
    """`(rewards (P, n), scores (P, n, D))`: one run of `n` answers per prompt (traceable)."""
    p = jnp.asarray(instance.success)
    d = jnp.asarray(instance.gradient)
    k_reward, k_noise = jax.random.split(key)
    correct = jax.random.uniform(k_reward, (p.size, n), dtype=d.dtype) < p[:, None]
    noise = jax.random.normal(k_noise, (p.size, n, d.shape[1]), d.dtype)
    scores = d[:, None, :] / p[:, None, None] + instance.sigma * noise
    return correct.astype(d.dtype), jnp.where(correct[..., None], scores, 0.0)


@functools.partial(jax.jit, static_argnames=("n",))
def _runs(keys, instance, *, n):
    def one(key):
        inner = theory.sampled_inner_product(*draw_answers(key, instance, n), jnp.arange(1, n))
        return inner.scaled_estimate, inner.scaled_stderr, inner.deleted, inner.log_scale

    return jax.lax.map(one, keys, batch_size=50)


def band_coverage(*, key, repeats: int = 2000, n: int = 32, level: float = 0.95, draws: int = 2000, **instance) -> dict:
    """How often the `k*` interval covers the exact `k*`, pointwise against the band.

    Each run draws `n` answers per prompt of :func:`flat_instance`, evaluates `I_k_hat` and its
    prompt-jackknife standard error at `k = 1 .. n - 1`, and reads the interval with three
    quantiles (:func:`theory.bands.band_ends`): pointwise (`t_quantile(level)`, the comparison),
    Bonferroni over `n - 1` orders (what :func:`theory.sampled_critical_k_jax` reads), and the
    max-t quantile simulated from the run's jackknife correlation (`draws` draws, a key per run).

    Args:
      key: `jax.random` key: run `r` draws with `fold_in(key, r)`, its max-t quantile with
        `fold_in(fold_in(key, r), 1)`.
      repeats: runs.
      n: answers per prompt (`k_max = n - 1`).
      level: nominal level.
      draws: simulated draws per run for the max-t quantile.
      **instance: keywords of :func:`flat_instance`.

    Returns:
      A JSON-ready dict: `k_star_exact`, `n`, `repeats`, `level`, `t_at_k` (the median over runs
      of `I_k / se_k` at `k = 1 .. k*`), and for each of `"pointwise"`, `"bonferroni"`, `"max_t"`:
      `quantile` (max-t: its mean over runs), `coverage` and `upper_below` (the upper end below
      `k*`) and `lower_above` (the lower end above `k*`), Wilson intervals with their counts.
    """
    repeats = theory.validate.python_int("repeats", repeats, minimum=1)
    n = theory.validate.python_int("n", n, minimum=3)
    draws = theory.validate.python_int("draws", draws, minimum=100)
    level = theory.validate.level("level", level)
    built = flat_instance(**instance)
    ks = np.arange(1, n)
    exact = exact_inner(built, ks)
    below = np.flatnonzero(exact < 0)
    if below.size == 0:
        raise ValueError(f"the instance has no k* <= n - 1 = {n - 1}; raise n or lower k_star")
    k_star = int(below[0]) + 1
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(repeats))
    with jax.enable_x64(True):
        as64 = FlatInstance(jnp.asarray(built.success), jnp.asarray(built.gradient), built.sigma)
        est, se, deleted, log_scale = (np.asarray(x, np.float64) for x in _runs(keys, as64, n=n))
    max_t = np.array(
        [
            theory.bands.simultaneous_quantile(
                theory.bands.jackknife_correlation(deleted[r]),
                level=level,
                key=jax.random.fold_in(keys[r], 1),
                draws=draws,
            )
            for r in range(repeats)
        ]
    )
    rules = {
        "pointwise": theory.bands.t_quantile(level),
        "bonferroni": theory.bands.bonferroni_quantile(n - 1, level=level),
        "max_t": max_t[:, None],
    }
    out = {
        "k_star_exact": k_star,
        "n": n,
        "repeats": repeats,
        "level": level,
        "t_at_k": [float(v) for v in np.median(_t_exact(exact, log_scale, se)[:, :k_star], axis=0)],
    }
    with jax.enable_x64(True):
        for name, q in rules.items():
            _, lower, upper = (np.asarray(v) for v in theory.bands.band_ends(est, se, q))
            covered = k_star_covered(lower, upper, k_star, n - 1)
            out[name] = {
                "quantile": float(np.mean(q)),
                "coverage": wilson_interval(int(np.sum(covered)), repeats, level),
                "upper_below": wilson_interval(int(np.sum(upper < k_star)), repeats, level),
                "lower_above": wilson_interval(int(np.sum(lower > k_star)), repeats, level),
            }
    return out


def _t_exact(exact, log_scale, scaled_stderr):
    """`I_k / se_k` per run, on the scaled fields (the run's scale is `exp(log_scale)`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return exact[None, :] * np.exp(-log_scale) / scaled_stderr
