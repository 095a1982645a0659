"""Recovering the transformer's `k*` from sampled answers (SPEC section 10), at its warm start.

Every prompt of the task has one correct answer `y*_i`, so every correct sampled answer of prompt
`i` has the same score vector `s*_i = grad log pi(y*_i | x_i)` (:func:`exact.per_prompt_gradients`
with `log=True`), and each answer is correct with the exact probability `p_i`. Wrong answers carry
no gradient in any estimator (`r = 0`). A run of `n` sampled answers per prompt is therefore, for
every estimator of `theory.sampled`, distributed exactly as rewards `r_ij ~ Bernoulli(p_i)` with
score `s*_i` on the correct ones: the study draws the rewards, not the answer strings, so hundreds
of runs cost no sampling of the model.

The estimators read score vectors only through inner products, so the scores over all `D`
parameters are replaced by the rows of `L`, `L L^T = K` with `K_ij = <s*_i, s*_j>` (an isometry:
identical estimates, `P` coordinates instead of `D`). A Gaussian sketch `S s` with `S` of shape
`(m, D)`, entries `N(0, 1/m)`, equals in distribution `Z L_i` with `Z` of shape `(m, r)`, entries
`N(0, 1/m)` (Gaussian matrices are invariant under the orthonormal change of basis that maps
`s*_i` to `L_i`): a fresh sketch per run costs `O(m r P)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sim.studies.recovery import SAMPLE_SIZES, recovery_study
from sim.studies.transformer_experiment import ExperimentConfig, warm_start
from sim.transformer import model as _model
from sim.transformer.exact import per_prompt_gradients, success

__all__ = ["gram_factor", "transformer_recovery"]


def gram_factor(scores):
    """`L` with `L L^T = scores scores^T` and as many columns as the rank (`(P, r)`, float64)."""
    scores = np.asarray(scores, np.float64)
    gram = scores @ scores.T
    lam, vec = np.linalg.eigh(gram)
    keep = lam > lam.max() * scores.shape[0] * np.finfo(np.float64).eps
    return vec[:, keep] * np.sqrt(lam[keep])


def _count_draw(key, n, data):
    """One run: rewards `r_ij ~ Bernoulli(p_i)` (so `c_i ~ Binomial(n, p)`), and for correct
    answers the rows of `factor`, or of a fresh Gaussian sketch `factor Z^T` (`Z` of shape
    `(m, m)`, `N(0, 1/m)`) where `sketch` is true; wrong answers' scores are 0 (never read). Both
    are computed and one is kept, so every scope shares one program."""
    p, factor, sketch = data
    k_answer, k_sketch = jax.random.split(key)
    rewards = (jax.random.uniform(k_answer, (p.shape[0], n), p.dtype) < p[:, None]).astype(p.dtype)
    m = factor.shape[1]
    z = jax.random.normal(k_sketch, (m, m), p.dtype) / jnp.sqrt(m)
    rows = jnp.where(sketch, factor @ z.T, factor)
    return rewards, rewards[..., None] * rows[:, None, :]


def transformer_recovery(
    *,
    config: ExperimentConfig,
    key,
    ns=SAMPLE_SIZES,
    repeats: int = 200,
    sketch_dim: int = 256,
    level: float = 0.95,
    progress=None,
) -> dict:
    """:func:`sim.studies.recovery.recovery_study` at the transformer's warm start, three kinds of scores.

    Args:
      config: the experiment whose warm start is studied (:func:`warm_start` reads its task,
        model and supervised warm start; the runs are not used).
      key: the experiment's key (the same key as `passk transformer` gives the same warm start).
      ns, repeats, level: as in :func:`sim.studies.recovery.recovery_study`.
      sketch_dim: `m`, the dimension of the Gaussian sketch.
      progress: optional callable receiving status lines.

    Returns:
      `{"all_parameters", "last_layer", "sketch"}`, each a recovery study, plus the warm start's
      exact `k*` by each route and the sizes. The sketch estimates the all-parameter `I_k`.
    """
    say = progress or (lambda _line: None)
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig; got {config!r}")
    task, mcfg, params, _ = warm_start(config, key=key, progress=progress)
    prompts, answers = jnp.asarray(task.prompts), jnp.asarray(task.answers)
    with jax.default_matmul_precision("float32"):
        p = np.asarray(success(params, prompts, answers, mcfg), np.float64)
        scores = {
            "all_parameters": per_prompt_gradients(params, prompts, answers, mcfg, log=True),
            "last_layer": per_prompt_gradients(params, prompts, answers, mcfg, subset=_model.LAST_LAYER, log=True),
        }
    out = {
        "policy": {
            "kind": "transformer",
            "n_prompts": int(task.n_prompts),
            "n_params": _model.param_count(params),
            "sketch_dim": sketch_dim,
        }
    }
    with jax.enable_x64(True):
        mu = jnp.full(p.shape, 1.0 / p.size)
        p64 = jnp.asarray(p)
        if sketch_dim < p.size:
            raise ValueError(f"sketch_dim must be >= the number of prompts {p.size} (the width of L); got {sketch_dim}")
        width = sketch_dim  # >= P >= the rank of the Gram matrix
        scopes = (
            ("all_parameters", "all_parameters", None),
            ("last_layer", "last_layer", None),
            ("sketch", "all_parameters", sketch_dim),
        )
        for index, (name, kind, sketch) in enumerate(scopes):
            factor = gram_factor(scores[kind])
            # zero columns to a common width: inner products unchanged, one compiled program for all
            factor = jnp.asarray(np.pad(factor, ((0, 0), (0, width - factor.shape[1]))))
            # grad p_i = p_i s*_i, so a_i = p_i <s*_i, sum_j mu_j p_j s*_j>
            agreement = p64 * (factor @ (factor.T @ (mu * p64)))
            out[name] = recovery_study(
                _count_draw,
                (p64, factor, jnp.asarray(sketch is not None)),
                p64,
                agreement,
                mu,
                ns=ns,
                repeats=repeats,
                key=jax.random.fold_in(key, 1000 + index),
                level=level,
                batch_size=10,
            )
            out[name]["score_dim"] = int(sketch or np.asarray(scores[kind]).shape[1])
            say(f"sampled k* ({name}): exact k* {out[name]['k_star_exact']}")
    return out
