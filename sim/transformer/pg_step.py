"""The compiled policy-gradient step of the transformer trainer (:func:`sim.transformer.train.finetune`)
and many runs of it at once (:func:`policy_gradient_runs`).

:func:`pg_chunk` runs `checkpoint_every` steps of any rule of :data:`sim.rules.RULE_TABLE` with
any estimator: the rule and its constants are traced values (:class:`RuleArgs`), the estimator,
optimiser, sample count and chunk length static (:class:`StepShape`).

Populations with a unique correct answer (`StepShape.unique_answers`). When every prompt has
exactly one correct answer `y*_i`, a sampled answer is correct with probability `p_i`,
independently of the others, and every correct answer has the score `grad log p_i`. For an
estimator whose wrong answers weigh exactly 0 (PKPO with the `k-1`-subset baseline,
`"pkpo-loo-1"`, SPEC section 6) the update of `n` sampled answers,
`u = sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)`, is then
`sum_i mu_i (sum_j s_ij r_ij) grad log p_i` with `r_ij ~ Bernoulli(p_i)`: the step draws the
rewards `r_ij` from the exact `p_i` (the same distribution of updates as sampling the answers and
scoring them) for one linearisation of `log p` over the `P` prompts instead of passes over `n P`
sampled sequences. The exact estimator takes `grad J_k = sum_i mu_i w_k(p_i) p_i grad log p_i`
from the same linearisation. Each step then also records the exact `p` and the agreements
`a_i = <grad p_i, grad J_1>` (one forward pass of the linearisation). The rules that read `g_1`,
and `"pass1"`, need the RLOO estimate, which weighs wrong answers, so sampled runs in this mode
take the rules that do not (`"passk"`, `"safe-k"`); exact runs take every rule.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim import guards as _guards
from sim import rules as _rules
from sim.records import RECORD_NAMES as R
from sim.transformer import checkpoint as _checkpoint
from sim.transformer import exact as _exact
from sim.transformer.sampling import answer_log_probs, sample_answers

__all__ = [
    "RuleArgs",
    "StepShape",
    "base_optimizer",
    "check_unique_answers",
    "evaluate",
    "pg_chunk",
    "policy_gradient_runs",
    "rule_args",
    "step_shape",
]


# One compiled chunk serves every rule: what differs between rules (which update, which guard,
# `k`, `lambda`, `L_1`, the learning rate, `m`, the tracked orders) enters as traced values of
# `RuleArgs` and is selected by arithmetic (`jnp.where`) or `lax.switch`/`lax.cond`, so a program
# is compiled once per `StepShape` (and model config, verifier and array shapes), not once per
# `PGConfig`.


class StepShape(NamedTuple):
    """The static part of a fine-tuning chunk: one compiled program per value."""

    estimator: str
    optimizer: str
    n_samples: int  # 0 for "exact" (unused there), so exact runs share a program
    chunk: int
    unique_answers: bool = False  # rewards drawn from the exact p (see the module docstring)


# `RuleArgs.direction`: the update a rule starts from (the pass@k update also for "safe-k", at its
# moving order), and whether its guard needs the pass@1 gradient of the same answers.
_PASSK_UPDATE, _PASS1_UPDATE, _GUARDED_UPDATE = range(3)


def _guard_variants():
    """`(rule, adaptive)` of every guard a chunk builds: each rule of the table that reads `g_1`,
    the mixtures twice (fixed `lambda`, and adaptive). `RuleArgs.guard` is 1 + an index here
    (0: no guard)."""
    return [
        (name, adaptive)
        for name, rule in _rules.RULE_TABLE.items()
        if rule.reads_g1
        for adaptive in ((False, True) if rule.uses_mixture_weight else (False,))
    ]


class RuleArgs(NamedTuple):
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


def step_shape(pg, *, unique_answers: bool = False) -> StepShape:
    """The static part of `pg`'s chunk (`unique_answers`: see the module docstring)."""
    if unique_answers:
        check_unique_answers(pg)
    return StepShape(
        pg.estimator,
        pg.optimizer,
        0 if pg.estimator == "exact" else pg.n_samples,
        pg.checkpoint_every,
        bool(unique_answers),
    )


def rule_args(pg) -> RuleArgs:
    rule = _rules.RULE_TABLE[pg.rule]
    direction = _PASS1_UPDATE if rule.order == "1" else _GUARDED_UPDATE if rule.reads_g1 else _PASSK_UPDATE
    adaptive = rule.uses_mixture_weight and pg.mixture_weight is None
    guard = 1 + _guard_variants().index((pg.rule, adaptive)) if rule.reads_g1 else 0
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # the model's dtype: a Python float rounds to it too
    return RuleArgs(
        direction=i32(direction),
        guard=i32(guard),
        moves_k=jnp.asarray(rule.reads_k_star),
        k=i32(pg.k),
        mixture_weight=f32(0.0 if pg.mixture_weight is None else pg.mixture_weight),
        smoothness=f32(1.0 if pg.smoothness is None else pg.smoothness),
        learning_rate=f32(pg.learning_rate),
        safe_k_every=i32(pg.safe_k_every),
        track_ks=i32(pg.track_ks),
    )


def _select(condition, on_true, on_false):
    """`on_true` where the traced scalar `condition` holds, else `on_false` (pytrees alike)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def base_optimizer(optimizer: str, learning_rate):
    # optax minimises: the chunk descends the negated ascent direction.
    return optax.sgd(learning_rate) if optimizer == "sgd" else optax.adam(learning_rate)


def _safe_k(theta, prompts, answers, config, mu, k_max):
    """`k' = min(k_max, k* - 1)` from the exact `p` and agreements at `theta` (at least 1)."""
    a, p, _ = _exact.agreement_jvp(theta, prompts, answers, config, mu)
    k_star = theory.critical_k_jax(p, a, mu, k_max=k_max)  # k_max + 1: no conflict up to k_max
    return _rules.order_below_k_star(jnp.asarray(k_max, jnp.int32), k_star)


@functools.partial(jax.jit, static_argnums=5)
def evaluate(theta, prompts, answers, mu, track, config):
    p = _exact.success(theta, prompts, answers, config)
    return jnp.sum(mu * p), jnp.sum(mu * theory.pass_at_k(p, track[:, None]), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "shape", "verifier"))
def pg_chunk(
    carry, start, key, prompts, answers, mu, verifier_args, args: RuleArgs, *, config, shape: StepShape, verifier
):
    """`shape.chunk` steps of any rule; carry `(theta, optimiser state, guard state, k')`."""
    base = base_optimizer(shape.optimizer, args.learning_rate)
    verify = lambda x, y: verifier(x, y, *verifier_args)
    # Every rule of the table that reads g_1, as a conflict_guard: a direction rule's guard sits
    # before the optimiser (it sees the loss gradient), a step rule's after it (it sees the step
    # the optimiser will apply, SPEC section 5).
    guards = {}
    for index, (name, adaptive) in enumerate(_guard_variants(), start=1):
        rule = _rules.RULE_TABLE[name]
        safe, direction = rule.uses_smoothness, rule.acts_on == "direction"
        guards[index] = (
            rule.acts_on,
            _guards.conflict_guard(
                name,
                smoothness=args.smoothness if safe else None,
                step_size=args.learning_rate if safe and direction else None,
                mixture_weight=args.mixture_weight if rule.uses_mixture_weight and not adaptive else None,
            ),
        )

    def guard(position, updates, state, g1):
        # Every guard of this position runs and `args.guard`'s result is selected by arithmetic:
        # guards are cheap next to a model pass, and a `lax.switch` here changes how XLA fuses the
        # step's arithmetic (so "passk" with SGD would no longer match a program of its own bit
        # for bit).
        out = (updates, state)
        for index, (acts_on, transform) in guards.items():
            if acts_on == position:
                out = _select(args.guard == index, transform.update(updates, state, pass1_grad=g1), out)
        return out

    def unique_directions(theta, k, step_key):
        """`unique_answers`: `(ascent, g_1 the guard sees, exact g_1, mean reward, p, agreements)`."""
        p, pullback, g1, a = unique_state(theta, prompts, answers, config, mu)
        if shape.estimator == "exact":
            gk = pullback(mu * theory.pass_at_k_weight(p, k) * p)  # grad J_k = sum_i mu_i w_k p_i grad log p_i
            return _select(args.direction == _PASS1_UPDATE, g1, gk), g1, g1, jnp.nan, p, a
        rewards = (jax.random.uniform(step_key, (p.shape[0], shape.n_samples), p.dtype) < p[:, None]).astype(
            p.dtype
        )  # r_ij ~ Bernoulli(p_i)
        weights = theory.gradient_estimator(shape.estimator).coefficients(rewards, k)  # wrong answers: 0
        gk = pullback(mu * jnp.sum(weights * rewards, axis=-1))
        return gk, jax.tree_util.tree_map(jnp.zeros_like, theta), g1, jnp.mean(rewards), p, a

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
        ascent, g1_guard = jax.lax.switch(
            args.direction,
            [
                lambda: (passk(), unused()),
                lambda: (lambda g: (g, g))(pass1()),
                lambda: (passk(), pass1()),
            ],
        )
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
        if shape.unique_answers:
            ascent, g1_guard, g1, mean_reward, p, a = unique_directions(theta, k_cur, step_key)
            j1, jk = jnp.sum(mu * p), jnp.sum(mu * theory.pass_at_k(p, args.track_ks[:, None]), axis=-1)
            extra = {"p": p, "agreement": a}
        else:
            ascent, g1_guard, g1, mean_reward = directions(theta, k_cur, step_key)
            j1, jk = None, None
            extra = {}
        neg = jax.tree_util.tree_map(jnp.negative, ascent)
        neg, guard_state = guard("direction", neg, guard_state, g1_guard)
        updates, base_state = base.update(neg, base_state, theta)
        updates, guard_state = guard("step", updates, guard_state, g1_guard)
        if j1 is None:
            j1, jk = evaluate(theta, prompts, answers, mu, args.track_ks, config)
        metrics = {
            R.j1: j1,
            R.jk: jk,
            R.update_inner: _exact.tree_dot(g1, updates),
            "mean_reward": mean_reward,
            R.k_used: k_cur,
            **extra,
        }
        return (optax.apply_updates(theta, updates), base_state, guard_state, k_cur), metrics

    return jax.lax.scan(step, carry, _checkpoint.step_keys(key, start, shape.chunk))


def unique_state(theta, prompts, answers, config, mu):
    """`(p, pullback, g_1, a)` at `theta` for prompts with unique correct `answers`: `p`, the reverse
    pass `c -> sum_i c_i grad log p_i`, `g_1 = grad J_1` and the agreements `a_i = <grad p_i, g_1>`.

    One linearisation of `log p` serves the reverse passes (its transpose) and the forward one, so
    the model is traced once per step."""
    log_p = lambda th: jax.vmap(_exact.log_success, in_axes=(None, 0, 0, None))(th, prompts, answers, config)
    logp, forward = jax.linearize(log_p, theta)  # (P,)
    transpose = jax.linear_transpose(forward, theta)
    pullback = lambda c: transpose(c)[0]
    p = jnp.exp(logp)
    g1 = pullback(mu * p)  # grad J_1 = sum_i mu_i p_i grad log p_i
    return p, pullback, g1, p * forward(g1)  # a_i = p_i <grad log p_i, g_1>


def check_unique_answers(pg) -> None:
    """ValueError unless `pg` can run on rewards drawn from the exact `p` (module docstring): the
    exact estimator with any rule, or a sampled estimator whose wrong answers weigh 0 with a rule
    that reads neither `g_1` nor the RLOO estimate of it."""
    if pg.estimator == "exact":
        return
    entry = theory.gradient_estimator(pg.estimator)
    group = np.array([[1.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    wrong = np.asarray(entry.coefficients(group, min(2, entry.max_k(6) or 1)))[group == 0]
    if not entry.needs_k or np.any(wrong != 0):
        raise ValueError(
            f"estimator {pg.estimator!r} gives wrong answers a non-zero weight: rewards drawn from p "
            "(unique answers) need an estimator whose wrong answers weigh 0, such as 'pkpo-loo-1'"
        )
    rule = _rules.RULE_TABLE[pg.rule]
    if rule.reads_g1 or rule.order == "1":
        raise ValueError(
            f"rule {pg.rule!r} reads the RLOO estimate of g_1, which weighs wrong answers: with rewards "
            "drawn from p (unique answers) a sampled run takes a rule that does not read g_1"
        )


@functools.partial(jax.jit, static_argnames=("config", "shape"))
def _runs(params, prompts, answers, mu, args, ks, keys, *, config, shape):
    """Runs laid out as `(batches, batch)`: `lax.map` over batches of `vmap`ped chunks."""
    base = base_optimizer(shape.optimizer, args.learning_rate)
    fresh_guard = _guards.conflict_guard().init(params)

    def one(k, key):
        carry = (params, base.init(params), fresh_guard, k)
        (theta, *_), metrics = pg_chunk(
            carry,
            jnp.asarray(0, jnp.int32),
            key,
            prompts,
            answers,
            mu,
            (),
            args._replace(k=k),
            config=config,
            shape=shape,
            verifier=None,
        )
        p_end, _, _, a_end = unique_state(theta, prompts, answers, config, mu)
        return metrics, p_end, a_end

    return jax.lax.map(lambda batch: jax.vmap(one)(*batch), (ks, keys))


def policy_gradient_runs(params, prompts, answers, config, pg, *, ks, keys, mu=None, batch: int = 64) -> dict:
    """Runs of the fine-tuning step from one starting point, one per `(ks[r], keys[r])`, all in one
    compiled program, on a population with unique correct answers (module docstring).

    Run `r` takes `pg.steps` steps of `pg` (its rule, estimator, optimiser, learning rate) at the
    order `ks[r]` with the key `keys[r]` (step `t` draws with `fold_in(keys[r], t)`).

    Args:
      params: the starting parameters (every run starts there).
      prompts, answers: `(P, Lp)`, `(P, La)`: the population and its unique correct answers.
      config: the model config.
      pg: a :class:`sim.transformer.train.PGConfig` (`k`: the largest order of `ks`, checked
        against `n_samples`; `checkpoint_every == steps`).
      ks: `(R,)` integer orders `1 <= k <= pg.k`.
      keys: `(R,)` `jax.random` keys.
      mu: `(P,)` prompt weights (uniform when None); a prompt of weight 0 does not count (padding).
      batch: most runs per `vmap` batch (bounds memory); the runs are split into equal batches.

    Returns:
      A dict of numpy float64 arrays: `p` and `agreement` `(R, T + 1, P)` (the exact success and
      agreements at `theta_0 .. theta_T`), and the step records of
      :data:`sim.records.RECORD_NAMES` `update_inner`, `k_used` `(R, T)` and `mean_reward` `(R, T)`.
    """
    shape = step_shape(pg, unique_answers=True)
    if pg.checkpoint_every != pg.steps:
        raise ValueError(
            f"pg.checkpoint_every must equal pg.steps for policy_gradient_runs; got {pg.checkpoint_every} "
            f"and {pg.steps}"
        )
    ks = np.asarray(ks)
    if ks.ndim != 1 or not np.issubdtype(ks.dtype, np.integer) or ks.size == 0 or ks.min() < 1 or ks.max() > pg.k:
        raise ValueError(f"ks must be a non-empty 1-d integer array with 1 <= k <= pg.k = {pg.k}; got {ks!r}")
    if len(keys) != ks.shape[0]:
        raise ValueError(f"keys must have one entry per run; got {len(keys)} keys for {ks.shape[0]} orders")
    _checkpoint.check_positive_int("policy_gradient_runs", "batch", batch)
    n_prompts = np.shape(prompts)[0]
    mu = jnp.full((n_prompts,), 1.0 / n_prompts, jnp.float32) if mu is None else jnp.asarray(mu, jnp.float32)
    # Equal batches (a last, smaller batch would compile the step a second time): pad with copies of
    # the last run, whose results are dropped.
    runs = ks.shape[0]
    n_batches = -(-runs // batch)
    size = -(-runs // n_batches)
    pad = n_batches * size - runs
    layout = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]).reshape((n_batches, size) + x.shape[1:])
    metrics, p_end, a_end = _runs(
        params,
        jnp.asarray(prompts),
        jnp.asarray(answers),
        mu,
        rule_args(pg),
        layout(jnp.asarray(ks, jnp.int32)),
        layout(jnp.asarray(keys)),
        config=config,
        shape=shape,
    )
    unlayout = lambda x: np.asarray(x, np.float64).reshape((n_batches * size,) + x.shape[2:])[:runs]
    out = {name: unlayout(metrics[name]) for name in (R.update_inner, R.k_used, "mean_reward")}
    out["p"] = np.concatenate([unlayout(metrics["p"]), unlayout(p_end)[:, None]], axis=1)
    out["agreement"] = np.concatenate([unlayout(metrics["agreement"]), unlayout(a_end)[:, None]], axis=1)
    return out
