"""The trainer of the miniature LLM run, as LLM RL trainers do it.

Step `t` (key `fold_in(key, t)`):

1. the exact evaluation of the current policy on the held-out prompts (:func:`sim.lm.policy.exact_eval`):
   `J_1`, `J_k`, `I_k`, `A_k`, `cos_k`, `k*`, and `g_1 = grad J_1`;
2. `B` prompts drawn from the population, `n` answers each from the compiled sampler, rewards from
   the verifier;
3. per-answer coefficients `s_ij` from :data:`theory.ESTIMATOR_TABLE` (`A_ij`, or `A_ij / n`);
4. `mu` epochs of Adam on the clipped importance-ratio surrogate, each over the whole batch,

       L(theta) = -(1/B) sum_ij agg_ij(theta) + beta KL,
       token level:    agg_ij = (1/L) sum_t min(rho_ijt s_ij, clip(rho_ijt, 1-eps, 1+eps) s_ij),
       sequence level: agg_ij = min(R_ij s_ij, clip(R_ij, 1-eps, 1+eps) s_ij),

   with `rho_ijt = pi_theta(y_ijt | .) / pi_old(y_ijt | .)`, `R_ij = prod_t rho_ijt`, and the
   per-token KL to the reference (initial) policy in the low-variance form
   `exp(q) - q - 1`, `q = log pi_ref - log pi_theta`, averaged over tokens. At `theta = theta_old`
   the surrogate's gradient is the estimator's update `(1/B) sum_ij s_ij grad log pi(y_ij | x_i)`
   (over `L` at token level);
5. the update-aware inner product `<g_1, u>` of the update `u` actually taken (SPEC section 5).

The section 11 probe (:func:`sim.probe.fold_probe`) runs on the sampled batch at the parameters
that drew it, with `F` folds of equal size (prompt `i` in fold `i mod F`: the prompts are i.i.d.
draws, so a fixed split is a random one). Records use the project's vocabulary (`j1`, `jk`,
`inner`, `mean_agreement`, `cos`, `k_star`, `update_inner`, `update_norm`, `k_used`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim.lm import policy as _policy
from sim.lm.task import LMTask, draw_prompts, verify
from sim.probe import fold_probe
from sim.transformer import model as _model

__all__ = ["AGGREGATIONS", "Batch", "RunConfig", "init_params", "make_probe", "make_step", "step_records"]

AGGREGATIONS = ("token", "sequence")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The trainer's settings (frozen; a run is named by these, the task and the key).

    Attributes:
      estimator: a :data:`theory.ESTIMATOR_TABLE` name.
      k: the pass@k order of the estimator (if it has one) and of the evaluation's `J_k`, `I_k`.
      batch_prompts: `B`, prompts per step (a multiple of `n_folds`).
      n_answers: `n`, answers per prompt.
      epochs: `mu`, optimiser steps over each batch.
      clip: `eps` of the importance-ratio clip, `> 0`.
      kl: `beta`, the weight of the KL penalty to the reference policy, `>= 0`.
      aggregation: `"token"` or `"sequence"`.
      learning_rate: Adam's step size, `> 0`.
      n_folds: `F` of the section 11 probe, `>= 2`.
      k_max: the largest `k` searched for the exact `k*`.
      model: the transformer's sizes (:class:`sim.transformer.model.ModelConfig`).
    """

    estimator: str
    k: int
    model: _model.ModelConfig
    batch_prompts: int = 32
    n_answers: int = 8
    epochs: int = 2
    clip: float = 0.2
    kl: float = 0.0
    aggregation: str = "token"
    learning_rate: float = 3e-3
    n_folds: int = 4
    k_max: int = 1000

    def __post_init__(self):
        est = theory.gradient_estimator(self.estimator)
        for name in ("k", "batch_prompts", "n_answers", "epochs", "n_folds", "k_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RunConfig.{name} must be a positive integer; got {value!r}")
        if self.n_folds < 2 or self.batch_prompts % self.n_folds:
            raise ValueError(
                f"RunConfig.batch_prompts ({self.batch_prompts}) must be a multiple of n_folds "
                f"({self.n_folds}), and n_folds >= 2"
            )
        est.check_k(self.k, self.n_answers)  # the table's rule: k <= n (or n - 1)
        if self.n_answers < max(2, est.min_samples(self.k)):
            raise ValueError(
                f"RunConfig.n_answers must be >= {max(2, est.min_samples(self.k))} for estimator "
                f"{self.estimator!r} at k={self.k} (the probe needs 2); got {self.n_answers}"
            )
        for name, low in (("clip", 0.0), ("learning_rate", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low:
                raise ValueError(f"RunConfig.{name} must be a positive number; got {value!r}")
        if isinstance(self.kl, bool) or not isinstance(self.kl, (int, float)) or not self.kl >= 0:
            raise ValueError(f"RunConfig.kl must be a number >= 0; got {self.kl!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"RunConfig.aggregation must be one of {AGGREGATIONS}; got {self.aggregation!r}")
        if not isinstance(self.model, _model.ModelConfig):
            raise TypeError(f"RunConfig.model must be a ModelConfig; got {type(self.model).__name__}")


class Batch(NamedTuple):
    """One step's sampled batch: prompts `(B, 1+D)`, answers `(B, n, L)`, rewards `(B, n)`."""

    prompts: jax.Array
    answers: jax.Array
    rewards: jax.Array


def init_params(task: LMTask, config: RunConfig, *, key):
    """The initial (and reference) parameters."""
    if config.model.vocab_size != task.vocab_size or config.model.max_len < task.seq_len:
        raise ValueError(
            f"RunConfig.model must have vocab_size={task.vocab_size} and max_len >= {task.seq_len} "
            f"for this task; got {config.model.vocab_size}, {config.model.max_len}"
        )
    return _model.init(key, config.model)


def _surrogate(params, old_logp, ref_params, batch: Batch, coef, task, config: RunConfig):
    logp = jax.vmap(
        jax.vmap(_policy.token_log_probs, in_axes=(None, None, 0, None, None)), in_axes=(None, 0, 0, None, None)
    )(params, batch.prompts, batch.answers, config.model, task)
    lo, hi = 1.0 - config.clip, 1.0 + config.clip
    if config.aggregation == "token":
        ratio = jnp.exp(logp - old_logp)  # (B, n, L)
        s = coef[..., None]
        per_answer = jnp.mean(jnp.minimum(ratio * s, jnp.clip(ratio, lo, hi) * s), axis=-1)
        clipped = jnp.mean(jnp.abs(ratio - 1.0) > config.clip)
    else:
        ratio = jnp.exp(jnp.sum(logp - old_logp, axis=-1))  # (B, n)
        per_answer = jnp.minimum(ratio * coef, jnp.clip(ratio, lo, hi) * coef)
        clipped = jnp.mean(jnp.abs(ratio - 1.0) > config.clip)
    loss = -jnp.mean(jnp.sum(per_answer, axis=-1))
    kl = jnp.zeros((), logp.dtype)
    if config.kl > 0:
        ref = jax.vmap(
            jax.vmap(_policy.token_log_probs, in_axes=(None, None, 0, None, None)), in_axes=(None, 0, 0, None, None)
        )(ref_params, batch.prompts, batch.answers, config.model, task)
        q = jax.lax.stop_gradient(ref) - logp
        kl = jnp.mean(jnp.exp(q) - q - 1.0)
        loss = loss + config.kl * kl
    return loss, (clipped, kl)


def make_step(task: LMTask, config: RunConfig, eval_prompts):
    """The compiled training step `(params, opt_state, ref_params, key) -> (params, opt_state, batch, records)`.

    `records` holds the exact evaluation at the parameters before the update (`j1`, `jk`, `inner`,
    `mean_agreement`, `cos`, `k_star`, `inner_curve`, `p`), the update (`update_inner`,
    `update_norm`) and batch statistics (`reward`, `clip_fraction`, `kl`).
    """
    est = theory.gradient_estimator(config.estimator)
    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def step(params, opt_state, ref_params, key):
        k_prompts, k_sample = jax.random.split(key)
        ev = _policy.exact_eval(
            params, eval_prompts, config.model, task, config.k, curve=config.n_answers, k_max=config.k_max
        )
        prompts = draw_prompts(task, config.batch_prompts, key=k_prompts)
        answers, old_logp = _policy.sample_answers(params, prompts, config.n_answers, config.model, task, key=k_sample)
        rewards = verify(task, prompts[:, None, :], answers)  # (B, n)
        batch = Batch(prompts, answers, rewards)
        coef = est.coefficients(rewards, config.k).astype(old_logp.dtype)  # (B, n)
        grad_fn = jax.grad(_surrogate, has_aux=True)

        def epoch(carry, _):
            theta, state = carry
            grads, (clipped, kl) = grad_fn(theta, old_logp, ref_params, batch, coef, task, config)
            updates, state = optimizer.update(grads, state, theta)
            return (optax.apply_updates(theta, updates), state), (clipped, kl)

        (new_params, opt_state), (clipped, kl) = jax.lax.scan(epoch, (params, opt_state), None, length=config.epochs)
        update = jax.tree_util.tree_map(jnp.subtract, new_params, params)
        records = {
            "j1": ev.j1,
            "jk": ev.jk,
            "inner": ev.inner,
            "mean_agreement": ev.mean_agreement,
            "cos": ev.cos,
            "k_star": ev.k_star,
            "inner_curve": ev.inner_curve,
            "p": ev.p,
            "agreement": ev.agreement,
            "update_inner": _policy.tree_dot(ev.grad_j1, update),
            "update_norm": jnp.sqrt(_policy.tree_dot(update, update)),
            "reward": jnp.mean(rewards),
            "clip_fraction": clipped[-1],
            "kl": kl[-1],
        }
        return new_params, opt_state, batch, records

    return step, optimizer


def make_probe(task: LMTask, config: RunConfig):
    """`(params, batch) -> alignments (B, n, F)` (NaN at the own fold) by :func:`sim.probe.fold_probe`."""
    folds = np.arange(config.batch_prompts) % config.n_folds

    def log_prob(params, b):
        return _policy.answer_log_prob(params, b[0], b[1], config.model, task)

    # One compiled program (the folds are concrete, the rewards traced): called op by op, the
    # probe costs about a hundred training updates of the same batch (`passk bench --only lm`).
    @jax.jit
    def probe(params, batch: Batch):
        return fold_probe(log_prob, params, (batch.prompts, batch.answers), batch.rewards, folds).alignments

    return probe, folds


def make_sketch(task: LMTask, config: RunConfig, params, dim: int, *, key):
    """`(params, batch) -> (B, n, dim)` sketched score vectors `S s_ij` (SPEC section 10).

    `s_ij = grad log pi(y_ij | x_i)` over all parameters (flattened in the pytree's leaf order),
    `S` a `dim x P` Gaussian matrix with entries of variance `1/dim`, so `E[S^T S] = I` and inner
    products of sketches are unbiased for those of the scores. Per-answer gradients by `vmap(grad)`:
    memory `O(B n P)`, fine at this size.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer; got {dim!r}")
    n_params = _model.param_count(params)
    sketch = jax.random.normal(key, (dim, n_params), jnp.float32) / jnp.sqrt(dim)  # (dim, P)

    def one(theta, prompt, answer):
        g = jax.grad(lambda th: jnp.sum(_policy.token_log_probs(th, prompt, answer, config.model, task)))(theta)
        return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g)])  # (P,)

    @jax.jit
    def scores(theta, batch: Batch):
        flat = jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(None, 0, 0))(
            theta, batch.prompts, batch.answers
        )
        return flat @ sketch.T  # (B, n, dim)

    return scores


def step_records(records, task: LMTask, config: RunConfig, step: int) -> dict:
    """One step's records as JSON values (`k_star` None when there is none up to `k_max`)."""
    host = jax.device_get(records)
    p = np.asarray(host["p"], np.float64)
    hard = np.arange(task.n_eval) < task.n_eval_hard
    k_star = int(host["k_star"])
    out = {"step": step, "k_used": config.k if theory.gradient_estimator(config.estimator).needs_k else None}
    for name in (
        "j1",
        "jk",
        "inner",
        "mean_agreement",
        "cos",
        "update_inner",
        "update_norm",
        "reward",
        "clip_fraction",
        "kl",
    ):
        out[name] = float(host[name])
    out["k_star"] = None if k_star > config.k_max else k_star
    out["inner_curve"] = [float(x) for x in np.asarray(host["inner_curve"])]
    out["p"] = [float(x) for x in p]  # per evaluation prompt: any pass@k can be read off later
    out["j1_hard"] = float(p[hard].mean()) if hard.any() else None
    out["j1_plain"] = float(p[~hard].mean()) if (~hard).any() else None
    out["mean_agreement_hard"] = float(np.asarray(host["agreement"])[hard].mean()) if hard.any() else None
    return out
