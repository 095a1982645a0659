"""Policy-gradient fine-tuning of the transformer policy, with every update rule of
:data:`sim.rules.RULE_TABLE`, in checkpointed chunks. Sampling is in :mod:`sampling`, the
supervised warm start in :mod:`warm_start`, the smoothness estimate in :mod:`smoothness` (all
re-exported here).

Policy-gradient estimators (each a surrogate whose gradient is the update direction, ascended):

- `"exact"`: `grad J_k` itself, exact because the correct answer is unique
  (`J_k = sum_i mu_i (1 - (1 - p_i)^k)`, `p_i = pi(y*_i | x_i)`); at `k = 1` this is `grad J_1`.
- any estimator of `theory.ESTIMATOR_TABLE`: `n` sampled answers per prompt, scored by the
  verifier, with the per-sample coefficients `s_ij = theory.gradient_estimator(name)
  .coefficients(rewards, k)`, and the update `sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)`. The
  experiments use `"pkpo-loo-1"` (PKPO with the `k-1`-subset baseline: unbiased for `grad J_k`,
  SPEC section 6) and `"rloo"` (pass@1 with the leave-one-out baseline: unbiased for `grad J_1`).

Training rules (`PGConfig.rule`, a name of :data:`sim.rules.RULE_TABLE`, the bandits' too):

- `"passk"` (default): plain ascent along the estimator's update.
- `"pass1"`: ascent on `J_1`: the exact `grad J_1`, or for a sampled estimator the RLOO estimate
  (unbiased for `grad J_1`) from the `n` answers the estimator would have drawn.
- the rules that read `g_1`: `"project"`, `"project-safe"`, `"mixture"` change the ascent
  direction before the optimiser (`sim.guards.conflict_guard` chained before it; with Adam
  pass@1 can still fall, SPEC section 5); `"project-step"`, `"project-safe-step"`,
  `"mixture-step"` change the step the optimiser produced (the guard chained after it), so they
  hold for the step actually applied, with Adam too. `g_1` is the exact `grad J_1` for `"exact"`,
  and for a sampled estimator the RLOO estimate from the *same* answers as the pass@k update:
  unbiased for `grad J_1`, but the guarded update is a non-linear function of it, so the sampled
  guard is biased (it fires on noise where the exact `<g_1, u>` is near 0, may miss a small
  conflict; its error shrinks like `1/sqrt(n)`). The step-safe projections need
  `PGConfig.smoothness`, a smoothness constant `L_1` of `J_1`: a transformer has no closed-form
  bound, so use :func:`estimate_smoothness` (a measured *local* estimate times a safety factor);
  the guarantee is only as good as that estimate along the path taken. The mixtures use
  `PGConfig.mixture_weight = lambda` fixed, or the smallest `lambda` recomputed each step (None:
  the projection again).
- `"safe-k"`: pass@k ascent at `k' = min(k, k* - 1)`, with `k*` recomputed every
  `PGConfig.safe_k_every` (`m`) steps from the *exact* per-prompt quantities (`p` and the agreement
  scores by one reverse and one forward pass, `theory.critical_k_jax` searched up to `k`), also
  for sampled estimators (an oracle a real trainer would estimate from answers, SPEC section 10).
  Between recomputations `k'` is held. Cost: one reverse and one forward pass every `m` steps.

The records (:data:`sim.records.RECORD_NAMES`: `j1`, `jk`, `update_inner = <g_1, u>`, `k_used`)
use the exact `grad J_1` whatever the guard saw.

Every run is a loop of `lax.scan` chunks of `checkpoint_every` steps; the key of step `t` is
`fold_in(key, t)`, so a run restarted from a checkpoint (params, optimiser state, key, step and
the trajectory so far, written atomically) replays exactly the steps it lost.

One compiled chunk serves every rule: the rule, `k`, `mixture_weight`, `smoothness`,
`learning_rate`, `safe_k_every` and the values of `track_ks` are traced arguments, so a process
compiles the chunk once per model config, estimator, optimiser, `n_samples` (sampled estimators),
`checkpoint_every`, number of tracked orders and verifier. Each step computes what any rule
needs and selects the rule's update: the exact estimator computes both `grad J_1` and `grad J_k`,
the sampled ones branch (`lax.switch`) to the one or two backward passes the rule needs, and
every guard of the table runs (a few vector operations) before the rule's is selected by
arithmetic. Exact `"passk"` with SGD matches a program compiled for it alone bit for bit (tested).

Scope (SPEC section 9): on-policy updates, with no PPO ratio clipping, no KL penalty, no entropy
bonus and no length normalisation (answers have a fixed length of two tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim import guards as _guards
from sim import rules as _rules
from sim.records import RECORD_NAMES as R
from sim.transformer import checkpoint as _checkpoint
from sim.transformer import exact as _exact
from sim.transformer import pg_step as _pg_step
from sim.transformer.sampling import answer_log_probs, sample_answer, sample_answers
from sim.transformer.smoothness import estimate_smoothness
from sim.transformer.warm_start import SFTConfig, supervised_warm_start

__all__ = [
    "ESTIMATORS",
    "OPTIMIZERS",
    "RULES",
    "estimate_smoothness",
    "PGConfig",
    "SFTConfig",
    "sample_answer",
    "sample_answers",
    "answer_log_probs",
    "pg_surrogate",
    "supervised_warm_start",
    "finetune",
    "Interrupted",
]

ESTIMATORS = ("exact",) + tuple(theory.ESTIMATOR_TABLE)
OPTIMIZERS = ("sgd", "adam")
#: Training rules: every entry of :data:`sim.rules.RULE_TABLE` (module docstring).
RULES = _rules.RULES


class Interrupted(RuntimeError):
    """Raised by a `progress` callback to stop a run after a checkpoint (used to test resuming)."""


_positive_int = _checkpoint.check_positive_int


@dataclasses.dataclass(frozen=True)
class PGConfig:
    """One policy-gradient fine-tuning run.

    Attributes:
      estimator: `"exact"` or a name of `theory.ESTIMATOR_TABLE` (see the module docstring).
      k: the pass@k order being optimised (1 for the estimators without an order, such as
        `"rloo"`; at most the estimator's `max_k(n_samples)` for the others).
      n_samples: answers per prompt for the sampled estimators (`>= 2`).
      optimizer: `"sgd"` (plain gradient steps, the sign test of SPEC section 5) or `"adam"`.
      learning_rate: step size.
      steps: number of updates.
      checkpoint_every: steps per `lax.scan` chunk; a checkpoint is written after each chunk.
      track_ks: pass@k orders whose exact value is recorded at every step.
      rule: a name of :data:`sim.rules.RULE_TABLE` (module docstring); `"passk"` is plain ascent.
      mixture_weight: fixed `lambda >= 0` for `"mixture"` and `"mixture-step"`, None for the
        adaptive one (the projection); must be None for other rules.
      smoothness: `L_1 > 0` for `"project-safe"` and `"project-safe-step"` (e.g. from
        :func:`estimate_smoothness`); must be None for other rules.
      safe_k_every: `m`, the steps between recomputations of `k*` for `rule="safe-k"`.
    """

    estimator: str
    k: int
    n_samples: int = 8
    optimizer: str = "sgd"
    learning_rate: float = 1.0
    steps: int = 50
    checkpoint_every: int = 25
    track_ks: tuple = (1,)
    rule: str = "passk"
    mixture_weight: float | None = None
    smoothness: float | None = None
    safe_k_every: int = 5

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"PGConfig.estimator must be one of {ESTIMATORS}; got {self.estimator!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"PGConfig.optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        for name in ("k", "n_samples", "steps", "checkpoint_every"):
            _positive_int("PGConfig", name, getattr(self, name))
        if self.n_samples < 2:
            raise ValueError(f"PGConfig.n_samples must be >= 2; got {self.n_samples}")
        if self.estimator != "exact":
            entry = theory.gradient_estimator(self.estimator)
            if not entry.needs_k and self.k != 1:
                raise ValueError(
                    f"PGConfig.k must be 1 for the estimator {self.estimator!r} (it has no order); got {self.k}"
                )
            if entry.needs_k and self.k > entry.max_k(self.n_samples):
                raise ValueError(
                    f"PGConfig.k ({self.k}) must be <= {entry.k_bound} = {entry.max_k(self.n_samples)} for "
                    f"{self.estimator!r} with n_samples = {self.n_samples}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"PGConfig.learning_rate must be > 0; got {self.learning_rate!r}")
        for k in self.track_ks:
            _positive_int("PGConfig", "track_ks entry", k)
        if not isinstance(self.rule, str) or self.rule not in _rules.RULE_TABLE:
            raise ValueError(f"PGConfig.rule must be one of {tuple(_rules.RULE_TABLE)}; got {self.rule!r}")
        rule = _rules.RULE_TABLE[self.rule]
        _positive_int("PGConfig", "safe_k_every", self.safe_k_every)
        if (rule.reads_g1 or rule.reads_k_star) and self.estimator != "exact":
            if not theory.gradient_estimator(self.estimator).needs_k:
                raise ValueError(
                    f"PGConfig.rule {self.rule!r} changes a pass@k update: the estimator must be 'exact' or "
                    f"have an order k; got estimator {self.estimator!r}"
                )
        if self.mixture_weight is not None:
            if not rule.uses_mixture_weight:
                raise ValueError(f"PGConfig.mixture_weight applies to the mixture rules only; got rule {self.rule!r}")
            if (
                isinstance(self.mixture_weight, bool)
                or not float(self.mixture_weight) >= 0
                or not np.isfinite(self.mixture_weight)
            ):
                raise ValueError(f"PGConfig.mixture_weight must be a finite number >= 0; got {self.mixture_weight!r}")
        if rule.uses_smoothness:
            if (
                self.smoothness is None
                or isinstance(self.smoothness, bool)
                or not np.isfinite(self.smoothness)
                or not float(self.smoothness) > 0
            ):
                raise ValueError(
                    f"PGConfig.smoothness must be a finite L_1 > 0 for rule={self.rule!r} "
                    f"(see estimate_smoothness); got {self.smoothness!r}"
                )
        elif self.smoothness is not None:
            raise ValueError(f"PGConfig.smoothness applies to the step-safe projections only; got rule {self.rule!r}")


# ---------------------------------------------------------------------------------------------
# Policy-gradient surrogates


def pg_surrogate(params, prompts, answers, config, pg: PGConfig, key, verifier, mu):
    """A scalar whose gradient is the estimator's update direction (ascend it).

    Returns `(surrogate, mean_reward)`; sampled estimators draw `pg.n_samples` answers per prompt
    with `key` and score them with `verifier(prompt, answer) -> {0, 1}`.
    """
    if pg.estimator == "exact":
        return _exact.pass_at_k_objective(params, prompts, answers, config, pg.k, mu), jnp.nan
    samples = sample_answers(
        jax.lax.stop_gradient(params), prompts, key, config, answers.shape[1], pg.n_samples
    )  # (P, n, La)
    rewards = jax.vmap(lambda x, ys: jax.vmap(lambda y: verifier(x, y))(ys))(prompts, samples)  # (P, n)
    weights = jax.lax.stop_gradient(theory.gradient_estimator(pg.estimator).coefficients(rewards, pg.k))  # (P, n)
    logp = answer_log_probs(params, prompts, samples, config)  # (P, n)
    return jnp.sum(mu[:, None] * weights * logp), jnp.mean(rewards)


# ---------------------------------------------------------------------------------------------
# Policy-gradient fine-tuning (the compiled step: :mod:`sim.transformer.pg_step`)


def finetune(
    params,
    prompts,
    answers,
    config,
    pg: PGConfig,
    *,
    key,
    verifier: Callable,
    verifier_args=(),
    mu=None,
    checkpoint_path=None,
    progress=None,
    label: str = "fine-tune",
):
    """Policy-gradient fine-tuning of `params` on the population `(prompts, answers)`.

    `verifier(prompt, answer, *verifier_args) -> {0, 1}` scores sampled answers; it must be
    hashable (a module-level function such as `task.verify`), its array arguments go in
    `verifier_args` (so compiled steps are reused across runs).

    At every step (before its update) records the exact `J_1`, the exact `J_k` for each `k` in
    `pg.track_ks`, the mean sampled reward, and the update-aware inner product `<g_1, u>` with
    `g_1 = grad J_1` and `u` the parameter change actually applied (SPEC section 5: with Adam the
    first-order change of pass@1 is `<g_1, u>`, not `eta <g_1, g_k>`). The records carry the
    names of the bandits' (:data:`sim.records.RECORD_NAMES`).

    Returns:
      `(params, trajectory)` with trajectory a dict of numpy arrays: `j1` `(steps+1,)`,
      `jk` `(steps+1, len(track_ks))` (the last row after the final update), `update_inner`
      `(steps,)`, `mean_reward` `(steps,)`, `k_used` `(steps,)` (the order of each update: `pg.k`
      except for `rule="safe-k"`).
    """
    if not isinstance(pg, PGConfig):
        raise TypeError(f"pg must be a PGConfig; got {type(pg).__name__}")
    _checkpoint.check_chunking(pg.steps, pg.checkpoint_every, "PGConfig")
    prompts, answers = jnp.asarray(prompts), jnp.asarray(answers)
    n = prompts.shape[0]
    mu = jnp.full((n,), 1.0 / n, jnp.float32) if mu is None else jnp.asarray(mu, jnp.float32)
    verifier_args = tuple(jnp.asarray(x) for x in verifier_args)
    digests = _checkpoint.data_digests(prompts, answers, mu, verifier_args, params)
    fingerprint = _checkpoint.fingerprint(
        "pg",
        _checkpoint.pg_identity(pg),
        config,
        *digests,
        _checkpoint.key_list(key),
        getattr(verifier, "__qualname__", repr(verifier)),
    )
    args, shape = _pg_step.rule_args(pg), _pg_step.step_shape(pg)
    fresh_guard_state = _guards.conflict_guard().init(params)
    to_shared, to_saved = _checkpoint.carry_layout(pg, fresh_guard_state)
    base_state = _pg_step.base_optimizer(pg.optimizer, pg.learning_rate).init(params)
    init, _ = to_saved((params, base_state, fresh_guard_state, jnp.asarray(pg.k, jnp.int32)), {})

    def run_chunk(saved, start):
        carry, metrics = _pg_step.pg_chunk(
            to_shared(saved),
            start,
            key,
            prompts,
            answers,
            mu,
            verifier_args,
            args,
            config=config,
            shape=shape,
            verifier=verifier,
        )
        return to_saved(carry, metrics)

    carry, metrics = _checkpoint.run_chunks(
        run_chunk,
        init,
        steps=pg.steps,
        chunk=pg.checkpoint_every,
        checkpoint_path=None if checkpoint_path is None else Path(checkpoint_path),
        fingerprint=fingerprint,
        key=key,
        progress=progress,
        label=label,
    )
    params = carry[0]
    j1_end, jk_end = jax.device_get(_pg_step.evaluate(params, prompts, answers, mu, args.track_ks, config))
    trajectory = {
        R.j1: np.append(np.asarray(metrics[R.j1]), j1_end),
        R.jk: np.concatenate([np.asarray(metrics[R.jk]), np.asarray(jk_end)[None]], axis=0),
        R.update_inner: np.asarray(metrics[R.update_inner]),
        "mean_reward": np.asarray(metrics["mean_reward"]),
        R.k_used: np.asarray(metrics[R.k_used]) if R.k_used in metrics else np.full(pg.steps, pg.k),
    }
    return params, trajectory
