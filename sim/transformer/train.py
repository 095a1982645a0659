"""Training the transformer policy: supervised warm start, policy-gradient fine-tuning, sampling,
and checkpoint/resume.

Policy-gradient estimators (each a surrogate whose gradient is the update direction, ascended):

- `"exact"`: `grad J_k` itself, exact because the correct answer is unique
  (`J_k = sum_i mu_i (1 - (1 - p_i)^k)`, `p_i = pi(y*_i | x_i)`); at `k = 1` this is `grad J_1`.
- any estimator of `theory.ESTIMATOR_TABLE`: `n` sampled answers per prompt, scored by the
  verifier, with the per-sample coefficients `s_ij = theory.gradient_estimator(name)
  .coefficients(rewards, k)`, and the update `sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)`. The
  experiments use `"pkpo-loo-1"` (PKPO with the `k-1`-subset baseline: unbiased for `grad J_k`,
  SPEC section 6) and `"rloo"` (pass@1 with the leave-one-out baseline: unbiased for `grad J_1`).

Training rules (`PGConfig.rule`, the names of the bandits' `sim.train.RULE_TABLE`):

- `"passk"` (default): plain ascent along the estimator's update (the behaviour before rules
  existed: bit for bit with SGD, to float32 rounding with Adam; see below).
- `"pass1"`: ascent on `J_1`: the exact `grad J_1`, or for a sampled estimator the RLOO estimate
  (unbiased for `grad J_1`) from the `n` answers the estimator would have drawn.
- `"project"`, `"project-safe"`, `"mixture"`: the pass@k update guarded by
  `sim.guards.conflict_guard` chained *after* the optimiser (`optax.chain(optimizer, guard)`,
  `sees="step"`), so the guard sees the step actually applied (with Adam too, SPEC section 5).
  Its `pass1_grad` is the exact `grad J_1` for `"exact"`, and for a sampled estimator the RLOO
  estimate `sum_i mu_i sum_j s^rloo_ij grad log pi(y_ij|x_i)` from the *same* answers as the pass@k
  update. That estimate is unbiased for `grad J_1`, but the guarded step is a non-linear function
  of it, so the sampled guard is biased: it fires on noise where the exact `<g_1, u>` is near 0,
  may miss a small conflict, and its error shrinks like `1/sqrt(n)`; the two estimates share
  answers and are correlated. `"project-safe"` needs `PGConfig.smoothness`, a smoothness constant
  `L_1` of `J_1`; a transformer has no closed-form bound, so use :func:`estimate_smoothness` (a
  measured *local* estimate at one point times a safety factor): the step-safe guarantee is only as
  good as that estimate along the path actually taken. `"mixture"` ascends `g_k + lambda g_1` with
  `PGConfig.mixture_weight = lambda` fixed, or with the smallest `lambda` recomputed each step
  (None: the projection again).
- `"safe-k"`: pass@k ascent at `k' = min(k, k* - 1)`, with `k*` recomputed every
  `PGConfig.safe_k_every` (`m`) steps from the *exact* per-prompt quantities (`p` and the agreement
  scores by one reverse and one forward pass, `theory.critical_k_jax` searched up to `k`) at the
  current parameters, also for sampled estimators (an oracle a real trainer would estimate from
  answers, SPEC section 10). Between recomputations `k'` is held. Cost: one reverse and one forward
  pass over all prompts every `m` steps (`m = 5` by default: about a fifth of an exact step).

The records of every rule (`update_inner = <g_1, u>`) use the exact `grad J_1` whatever the guard
saw. Each step also records `k_used` (the `k` of the update: `k'` for `"safe-k"`).

Every run is a loop of `lax.scan` chunks of `checkpoint_every` steps; the key of step `t` is
`fold_in(key, t)`, so a run restarted from a checkpoint (params, optimiser state, key, step and
the trajectory so far, written atomically) replays exactly the steps it lost and ends with the
same numbers as an uninterrupted run.

One compiled chunk serves every rule: the rule, `k`, `mixture_weight`, `smoothness`,
`learning_rate`, `safe_k_every` and the values of `track_ks` are traced arguments, so a process
compiles the chunk once per model config, estimator, optimiser, `n_samples` (sampled estimators),
`checkpoint_every`, number of tracked orders and verifier, and every other run with those reuses
it. Each step computes what any rule needs and selects the rule's update: the exact estimator
computes both `grad J_1` and `grad J_k` (a `"pass1"` run also pays for `grad J_k`), the sampled
ones branch (`lax.switch`) to the one or two backward passes the rule needs, and every guard runs
on the step (a few vector operations) before the rule's is selected. Numbers match those of a
program compiled for one rule to float32 rounding (the selections change how XLA fuses the
arithmetic): exact `"passk"` with SGD bit for bit (tested), with Adam within a few units in the
last place, which can grow along a run (measured on the `safe` study: at most 2e-7 on any
recorded `J_1`, `J_k`).

Scope (SPEC section 9): the updates here are on-policy (answers sampled from the current policy),
with no PPO ratio clipping, no KL penalty, no entropy bonus and no length normalisation (answers
have a fixed length of two tokens).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim import guards as _guards
from sim.train import RECORD_NAMES as R
from sim.transformer import exact as _exact
from sim.transformer import checkpoint as _checkpoint
from sim.transformer import model as _model

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
#: Training rules, named as the bandits' (`sim.train.RULE_TABLE`); see the module docstring.
RULES = ("passk", "pass1", "project", "project-safe", "mixture", "safe-k")


class Interrupted(RuntimeError):
    """Raised by a `progress` callback to stop a run after a checkpoint (used to test resuming)."""


def _positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer; got {value!r}")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised warm start: Adam on the answer-token cross-entropy of the warm-start prompts."""

    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    checkpoint_every: int = 100

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every"):
            _positive_int("SFTConfig", name, getattr(self, name))
        if not self.learning_rate > 0:
            raise ValueError(f"SFTConfig.learning_rate must be > 0; got {self.learning_rate!r}")


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
      rule: one of `RULES` (module docstring); `"passk"` is plain ascent.
      mixture_weight: fixed `lambda >= 0` for `rule="mixture"`, None for the adaptive one
        (the projection); must be None for other rules.
      smoothness: `L_1 > 0` for `rule="project-safe"` (e.g. from :func:`estimate_smoothness`);
        must be None for other rules.
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
                raise ValueError(f"PGConfig.k must be 1 for the estimator {self.estimator!r} (it has no order); got {self.k}")
            if entry.needs_k and self.k > entry.max_k(self.n_samples):
                raise ValueError(
                    f"PGConfig.k ({self.k}) must be <= {entry.k_bound} = {entry.max_k(self.n_samples)} for "
                    f"{self.estimator!r} with n_samples = {self.n_samples}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"PGConfig.learning_rate must be > 0; got {self.learning_rate!r}")
        for k in self.track_ks:
            _positive_int("PGConfig", "track_ks entry", k)
        if self.rule not in RULES:
            raise ValueError(f"PGConfig.rule must be one of {RULES}; got {self.rule!r}")
        _positive_int("PGConfig", "safe_k_every", self.safe_k_every)
        if self.rule not in ("passk", "pass1") and self.estimator != "exact":
            if not theory.gradient_estimator(self.estimator).needs_k:
                raise ValueError(
                    f"PGConfig.rule {self.rule!r} guards a pass@k update: the estimator must be 'exact' or "
                    f"have an order k; got estimator {self.estimator!r}"
                )
        if self.mixture_weight is not None:
            if self.rule != "mixture":
                raise ValueError(f"PGConfig.mixture_weight applies to rule='mixture' only; got rule {self.rule!r}")
            if isinstance(self.mixture_weight, bool) or not float(self.mixture_weight) >= 0 or not np.isfinite(self.mixture_weight):
                raise ValueError(f"PGConfig.mixture_weight must be a finite number >= 0; got {self.mixture_weight!r}")
        if self.rule == "project-safe":
            if self.smoothness is None or isinstance(self.smoothness, bool) or not np.isfinite(self.smoothness) \
                    or not float(self.smoothness) > 0:
                raise ValueError(
                    "PGConfig.smoothness must be a finite L_1 > 0 for rule='project-safe' "
                    f"(see estimate_smoothness); got {self.smoothness!r}"
                )
        elif self.smoothness is not None:
            raise ValueError(f"PGConfig.smoothness applies to rule='project-safe' only; got rule {self.rule!r}")


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_answer(params, prompt, key, config: _model.ModelConfig, answer_len: int):
    """Sample one answer `(answer_len,)` autoregressively from `pi(.|prompt)` with `lax.scan`."""
    lp = prompt.shape[0]
    buf = jnp.concatenate([prompt, jnp.zeros((answer_len,), prompt.dtype)])  # (Lp + La,)

    def body(carry, t):
        seq, key = carry
        key, sub = jax.random.split(key)
        # Causal attention: the zeros after position Lp-1+t do not affect its logits.
        logits = _model.apply(params, seq[:-1], config)  # (Lp + La - 1, V)
        token = jax.random.categorical(sub, logits[lp - 1 + t]).astype(seq.dtype)
        seq = seq.at[lp + t].set(token)
        return (seq, key), token

    _, tokens = jax.lax.scan(body, (buf, key), jnp.arange(answer_len))
    return tokens  # (La,)


def sample_answers(params, prompts, key, config, answer_len: int, n: int):
    """`n` answers for each prompt: `(P, n, answer_len)`; one key per (prompt, sample)."""
    keys = jax.random.split(key, prompts.shape[0] * n)
    keys = keys.reshape((prompts.shape[0], n) + keys.shape[1:])  # typed or raw uint32 keys
    one = lambda prompt, ks: jax.vmap(lambda kk: sample_answer(params, prompt, kk, config, answer_len))(ks)
    return jax.vmap(one)(prompts, keys)


def answer_log_probs(params, prompts, answers, config):
    """`log pi(y_ij | x_i)` for answers `(P, n, La)`: `(P, n)`."""
    per_prompt = lambda prompt, ys: jax.vmap(lambda y: _exact.log_success(params, prompt, y, config))(ys)
    return jax.vmap(per_prompt)(prompts, answers)


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
# Supervised warm start


@functools.partial(jax.jit, static_argnames=("config", "sft"))
def _sft_chunk(carry, start, key, prompts, answers, *, config, sft):
    opt = optax.adam(sft.learning_rate)

    def loss_fn(theta, idx):
        logp = jax.vmap(lambda x, y: _exact.log_success(theta, x, y, config))(prompts[idx], answers[idx])
        return -jnp.mean(logp)

    def step(carry, inputs):
        theta, opt_state = carry
        _, step_key = inputs
        idx = jax.random.randint(step_key, (sft.batch_size,), 0, prompts.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(theta, idx)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state), {"loss": loss}

    return jax.lax.scan(step, carry, _checkpoint.step_keys(key, start, sft.checkpoint_every))


def supervised_warm_start(
    params, prompts, answers, config, sft: SFTConfig, *, key, checkpoint_path=None, progress=None
):
    """Adam on the mean answer cross-entropy `-log pi(y*|x)` over random mini-batches of the
    warm-start prompts `(N, Lp)` / answers `(N, La)`. Returns `(params, losses (steps,))`."""
    _checkpoint.check_chunking(sft.steps, sft.checkpoint_every, "SFTConfig")
    prompts, answers = jnp.asarray(prompts), jnp.asarray(answers)
    digests = _checkpoint.data_digests(prompts, answers, params)
    fingerprint = _checkpoint.fingerprint("sft", sft, config, *digests, _checkpoint.key_list(key))
    (params, _), metrics = _checkpoint.run_chunks(
        lambda carry, start: _sft_chunk(carry, start, key, prompts, answers, config=config, sft=sft),
        (params, optax.adam(sft.learning_rate).init(params)),
        steps=sft.steps,
        chunk=sft.checkpoint_every,
        checkpoint_path=None if checkpoint_path is None else Path(checkpoint_path),
        fingerprint=fingerprint,
        key=key,
        progress=progress,
        label="warm start",
    )
    return params, np.asarray(metrics["loss"])


# ---------------------------------------------------------------------------------------------
# Policy-gradient fine-tuning
#
# One compiled chunk serves every rule: what differs between rules (which update, which guard,
# `k`, `lambda`, `L_1`, the learning rate, `m`, the tracked orders) enters as traced values of
# `_RuleArgs` and is selected by arithmetic (`jnp.where`) or `lax.switch`/`lax.cond`, so a program
# is compiled once per `_StepShape` (and model config, verifier and array shapes), not once per
# `PGConfig`.


class _StepShape(NamedTuple):
    """The static part of a fine-tuning chunk: one compiled program per value."""

    estimator: str
    optimizer: str
    n_samples: int  # 0 for "exact" (unused there), so exact runs share a program
    chunk: int


# `_RuleArgs.direction`: the update a rule ascends (the pass@k update also for "safe-k", at its
# moving order), and whether a guard needs the pass@1 gradient of the same answers.
_PASSK_UPDATE, _PASS1_UPDATE, _GUARDED_UPDATE = range(3)
# `_RuleArgs.guard`: the guard after the optimiser.
_NO_GUARD, _PROJECT, _PROJECT_SAFE, _MIXTURE, _MIXTURE_ADAPTIVE = range(5)


class _RuleArgs(NamedTuple):
    """The traced part of a fine-tuning chunk (see `_rule_args`)."""

    direction: jax.Array
    guard: jax.Array
    moves_k: jax.Array
    k: jax.Array
    mixture_weight: jax.Array
    smoothness: jax.Array
    learning_rate: jax.Array
    safe_k_every: jax.Array
    track_ks: jax.Array


def _step_shape(pg: PGConfig) -> _StepShape:
    return _StepShape(pg.estimator, pg.optimizer, 0 if pg.estimator == "exact" else pg.n_samples, pg.checkpoint_every)


def _rule_args(pg: PGConfig) -> _RuleArgs:
    direction = {"passk": _PASSK_UPDATE, "safe-k": _PASSK_UPDATE, "pass1": _PASS1_UPDATE}.get(pg.rule, _GUARDED_UPDATE)
    guard = {"project": _PROJECT, "project-safe": _PROJECT_SAFE,
             "mixture": _MIXTURE_ADAPTIVE if pg.mixture_weight is None else _MIXTURE}.get(pg.rule, _NO_GUARD)
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # the model's dtype: a Python float rounds to it too
    return _RuleArgs(
        direction=i32(direction), guard=i32(guard), moves_k=jnp.asarray(pg.rule == "safe-k"), k=i32(pg.k),
        mixture_weight=f32(0.0 if pg.mixture_weight is None else pg.mixture_weight),
        smoothness=f32(1.0 if pg.smoothness is None else pg.smoothness),
        learning_rate=f32(pg.learning_rate), safe_k_every=i32(pg.safe_k_every), track_ks=i32(pg.track_ks),
    )


def _select(condition, on_true, on_false):
    """`on_true` where the traced scalar `condition` holds, else `on_false` (pytrees alike)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _base_optimizer(optimizer: str, learning_rate):
    # optax minimises: the chunk descends the negated ascent direction.
    return optax.sgd(learning_rate) if optimizer == "sgd" else optax.adam(learning_rate)


def _safe_k(theta, prompts, answers, config, mu, k_max):
    """`k' = min(k_max, k* - 1)` from the exact `p` and agreements at `theta` (at least 1)."""
    a, p, _ = _exact.agreement_jvp(theta, prompts, answers, config, mu)
    k_star = theory.critical_k_jax(p, a, mu, k_max=k_max)  # k_max + 1: no conflict up to k_max
    return jnp.clip(k_star - 1, 1, k_max).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=5)
def _evaluate(theta, prompts, answers, mu, track, config):
    p = _exact.success(theta, prompts, answers, config)
    return jnp.sum(mu * p), jnp.sum(mu * theory.pass_at_k(p, track[:, None]), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "shape", "verifier"))
def _pg_chunk(carry, start, key, prompts, answers, mu, verifier_args, args: _RuleArgs, *, config, shape: _StepShape,
              verifier):
    """`shape.chunk` steps of any rule; carry `(theta, optimiser state, guard state, k')`."""
    base = _base_optimizer(shape.optimizer, args.learning_rate)
    verify = lambda x, y: verifier(x, y, *verifier_args)
    # The guard after the optimiser sees the step it will apply (SPEC section 5).
    guards = {
        _PROJECT: _guards.conflict_guard("project"),
        _PROJECT_SAFE: _guards.conflict_guard("project-safe", smoothness=args.smoothness),
        _MIXTURE: _guards.conflict_guard("mixture", mixture_weight=args.mixture_weight),
        _MIXTURE_ADAPTIVE: _guards.conflict_guard("mixture"),
    }

    def guard(updates, state, g1):
        # Every guard runs and `args.guard`'s result is selected by arithmetic: guards are cheap
        # next to a model pass, and a `lax.switch` here changes how XLA fuses the step's arithmetic
        # (so "passk" with SGD would no longer match a program of its own bit for bit).
        out = (updates, state)
        for index, transform in guards.items():
            out = _select(args.guard == index, transform.update(updates, state, pass1_grad=g1), out)
        return out

    def directions(theta, k, step_key):
        """`(ascent, g_1 the guard sees, exact g_1 for the records, mean sampled reward)`."""
        g1 = _exact.grad_pass_at_1(theta, prompts, answers, config, mu)
        if shape.estimator == "exact":
            # Both gradients, selected by arithmetic (a `lax.cond` changes the fusion, as above).
            gk = jax.grad(_exact.pass_at_k_objective)(theta, prompts, answers, config, k, mu)
            ascent = _select(args.direction == _PASS1_UPDATE, g1, gk)
            return ascent, g1, g1, jnp.nan
        samples = sample_answers(theta, prompts, step_key, config, answers.shape[1], shape.n_samples)  # (P, n, La)
        rewards = jax.vmap(lambda x, ys: jax.vmap(lambda y: verify(x, y))(ys))(prompts, samples)  # (P, n)
        _, vjp = jax.vjp(lambda th: answer_log_probs(th, prompts, samples, config), theta)
        # The estimator's update, and the RLOO estimate of grad J_1 from the same answers
        # (sim.guards.sampled_surrogate's update): unbiased for grad J_1.
        passk = lambda: vjp(mu[:, None] * theory.gradient_estimator(shape.estimator).coefficients(rewards, k))[0]
        pass1 = lambda: vjp(mu[:, None] * theory.gradient_estimator("rloo").coefficients(rewards, None))[0]
        unused = lambda: jax.tree_util.tree_map(jnp.zeros_like, theta)
        ascent, g1_guard = jax.lax.switch(args.direction, [
            lambda: (passk(), unused()),
            lambda: (lambda g: (g, g))(pass1()),
            lambda: (passk(), pass1()),
        ])
        return ascent, g1_guard, g1, jnp.mean(rewards)

    def step(carry, inputs):
        theta, base_state, guard_state, k_cur = carry
        t, step_key = inputs
        # "safe-k" recomputes k' every m steps; other rules keep k' = k.
        k_cur = jax.lax.cond(
            args.moves_k & (t % args.safe_k_every == 0),
            lambda th: _safe_k(th, prompts, answers, config, mu, args.k),
            lambda th: k_cur,
            theta,
        )
        ascent, g1_guard, g1, mean_reward = directions(theta, k_cur, step_key)
        neg = jax.tree_util.tree_map(jnp.negative, ascent)
        updates, base_state = base.update(neg, base_state, theta)
        updates, guard_state = guard(updates, guard_state, g1_guard)
        j1, jk = _evaluate(theta, prompts, answers, mu, args.track_ks, config)
        metrics = {R.j1: j1, R.jk: jk, R.update_inner: _exact.tree_dot(g1, updates), "mean_reward": mean_reward,
                   "k_used": k_cur}
        return (optax.apply_updates(theta, updates), base_state, guard_state, k_cur), metrics

    return jax.lax.scan(step, carry, _checkpoint.step_keys(key, start, shape.chunk))


def _carry_layout(pg: PGConfig, fresh_guard_state):
    """Converters between the shared chunk's carry and the carry a checkpoint holds.

    Checkpoints keep the layout each rule had with a program of its own (`"passk"`:
    `(params, optimiser state)`; `"pass1"`, `"safe-k"`: `(params, optimiser state, k')`; guarded
    rules: `(params, (optimiser state, guard state), k')`), so checkpoints written before the
    shared chunk still resume, and `"passk"` records carry no `k_used` (it is `pg.k`)."""
    guarded = pg.rule in _guards.GUARD_RULES
    k0 = jnp.asarray(pg.k, jnp.int32)

    def to_shared(saved):
        if pg.rule == "passk":
            return saved[0], saved[1], fresh_guard_state, k0
        if guarded:
            return saved[0], saved[1][0], saved[1][1], saved[2]
        return saved[0], saved[1], fresh_guard_state, saved[2]

    def to_saved(carry, metrics):
        theta, base_state, guard_state, k = carry
        if pg.rule == "passk":
            return (theta, base_state), {name: v for name, v in metrics.items() if name != "k_used"}
        if guarded:
            return (theta, (base_state, guard_state), k), metrics
        return (theta, base_state, k), metrics

    return to_shared, to_saved


class _Text:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


_RULE_FIELDS = ("rule", "mixture_weight", "smoothness", "safe_k_every")


def _pg_identity(pg: PGConfig):
    """What names a run in its fingerprint: the config, whose repr has every field (the rule too);
    a plain `"passk"` run with the rule fields at their defaults keeps the repr it had before rules
    existed, so its checkpoints written then still resume."""
    defaults = {f.name: f.default for f in dataclasses.fields(PGConfig) if f.name in _RULE_FIELDS}
    if any(getattr(pg, name) != value for name, value in defaults.items()):
        return pg
    fields = [f.name for f in dataclasses.fields(PGConfig) if f.name not in _RULE_FIELDS]
    return _Text(f"PGConfig({', '.join(f'{name}={getattr(pg, name)!r}' for name in fields)})")


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
    names of the bandits' (:class:`sim.train.Records`).

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
        "pg", _pg_identity(pg), config, *digests, _checkpoint.key_list(key),
        getattr(verifier, "__qualname__", repr(verifier)),
    )
    args, shape = _rule_args(pg), _step_shape(pg)
    fresh_guard_state = _guards.conflict_guard().init(params)
    to_shared, to_saved = _carry_layout(pg, fresh_guard_state)
    base_state = _base_optimizer(pg.optimizer, pg.learning_rate).init(params)
    init, _ = to_saved((params, base_state, fresh_guard_state, jnp.asarray(pg.k, jnp.int32)), {})

    def run_chunk(saved, start):
        carry, metrics = _pg_chunk(to_shared(saved), start, key, prompts, answers, mu, verifier_args, args,
                                   config=config, shape=shape, verifier=verifier)
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
    j1_end, jk_end = jax.device_get(_evaluate(params, prompts, answers, mu, args.track_ks, config))
    trajectory = {
        R.j1: np.append(np.asarray(metrics[R.j1]), j1_end),
        R.jk: np.concatenate([np.asarray(metrics[R.jk]), np.asarray(jk_end)[None]], axis=0),
        R.update_inner: np.asarray(metrics[R.update_inner]),
        "mean_reward": np.asarray(metrics["mean_reward"]),
        "k_used": np.asarray(metrics["k_used"]) if "k_used" in metrics else np.full(pg.steps, pg.k),
    }
    return params, trajectory


# ---------------------------------------------------------------------------------------------
# A measured smoothness constant for "project-safe"


def estimate_smoothness(
    params, prompts, answers, config, mu=None, *, key, directions=(), n_random: int = 4,
    power_iterations: int = 10, safety: float = 2.0,
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
    _positive_int("estimate_smoothness", "power_iterations", power_iterations)
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
        return unit(jax.tree_util.tree_unflatten(
            treedef, [jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves)]))

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
    return {"smoothness": safety * largest, "max_curvature": largest, "power_iteration": power,
            "curvatures": curvatures, "safety": float(safety), "n_random": int(n_random),
            "power_iterations": int(power_iterations)}
