"""Training softmax-policy bandits on pass@1, pass@k, or conflict-safe updates (SPEC sections 5, 6, 8).

What is where:

- :class:`TrainConfig` (:mod:`sim.train_config`): the static settings of a run (frozen,
  hashable: the `jit` cache key), validated once when built;
- :class:`Records` (:mod:`sim.records`): the names and meaning of everything a run records (one
  vocabulary, shared with the transformer's training); :data:`RECORD_NAMES` holds each name;
- :data:`RULE_TABLE` (:mod:`sim.rules`): each update rule by name, shared with the transformer
  trainer and the optax guards;
- in this module: the sampled estimates of `g_1` and `g_k` (answers drawn by :mod:`sim.answers`);
  :func:`run`, one training run of one bandit with one configuration (unbatched, traceable);
  :func:`train` (`run` under `jax.jit`) and :func:`train_sweep` (`run` vmapped over rules, `k`
  and seeds, laid out over regimes and devices by :func:`sim.sweep.sweep_grid`).

Each step computes an ascent direction `g` from gradient estimates of `J_1` and `J_k`, changed by
the rule when it acts on the direction, hands `-g` to an optax optimizer (optax minimises), changes
the optimizer's update `u` when the rule acts on the step, and applies it. The rules
(:mod:`sim.rules`): `"pass1"`, `"passk"`, `"safe-k"` (`k' = min(k, k* - 1)`, `k*` recomputed
exactly at every step by `theory.critical_k_jax`), and the conflict-safe `"project"`,
`"project-safe"`, `"mixture"` on the direction and `"project-step"`, `"project-safe-step"`,
`"mixture-step"` on the step. `"project-safe"` and `"project-safe-step"` use
`L_1 = theory.softmax_smoothness_bound(B)` (the direction rule with `step_size = learning_rate`,
exact for `optimizer="sgd"`; the step rule whatever the optimizer). A new rule is one
:data:`RULE_TABLE` entry.

Gradient estimates (`estimator`):

- `"exact"`: `g_1 = J^T mu` and `g_k = J^T (mu w_k(p))` by reverse passes
  (:meth:`SoftmaxBandit.pass_at_k_grad`);
- sampled, `n_samples = n` answers per prompt drawn from the policy, rewards read from the table,
  and per-sample coefficients `s_ij` for the update `sum_i mu_i sum_j s_ij grad log pi(y_ij|x_i)`
  (the gradient of the surrogate `sum_i mu_i sum_j stop_gradient(s_ij) log pi(y_ij|x_i)`), with
  `s_ij = theory.gradient_estimator(estimator).coefficients(r_i, k)`: every estimator of
  :data:`theory.ESTIMATOR_TABLE` (its advantages, divided by `n` unless they are summed over the
  group, and its rule for the smallest `n`).

  The pass@k estimators use the rule's order (`k` for `g_k`, 1 for `g_1`); REINFORCE, RLOO and
  GRPO have no order (their implied prompt weights are `1`, `1` and `~1/sqrt(p(1-p))`). When a
  rule of the run reads `g_1` (`project*`, `mixture`) the pass@1 estimate is RLOO on the same
  answers (REINFORCE when `n = 1`); otherwise `g_1` is the estimator's own update (for `"pass1"`
  that is the estimator at order 1).

Records (:class:`Records`, exact whatever the estimator), for every step `t = 0..steps` (state)
or `t < steps` (update): `j1`, `jk`, `inner` (`I_k`), `mean_agreement` (`A_k`), `cos` (`cos_k`),
`k_star` (`k_max + 1` = none) at `theta_t`, and for each update `update_inner = <grad J_1, u_t>`
(the first-order change of pass@1 actually taken; SPEC section 5: with Adam it differs from
`lr I_k`), `update_norm` and `k_used` (the order of `g_k` used, which moves under `"safe-k"`).
With `record_every = N > 1` the diagnostics `inner`, `mean_agreement`, `cos` and `k_star` are
written at `t = 0, N, 2N, ...` and at `t = steps` only (NaN, and `k_star = -1`, elsewhere); the
other records stay per step. The diagnostics cost a forward pass `J grad J_1`, one more reverse
direction and the `k*` search per recorded step, so long sweeps record them sparsely.

Cost of a step (exact estimator): one evaluation of `p` and `dp/dlogits` at `theta_t` feeds one
matrix product for all reverse passes (`grad J_1`, `J^T omega` and `grad J_k`; `grad J_k` joins
later, by a second product, only under `"safe-k"`, whose order needs `k*` first) and the forward
pass `a = J grad J_1` (:mod:`sim.bandit`, prompts on the fast axis).

Compilation: the step loop is `lax.scan`. :func:`train` compiles once per :class:`TrainConfig`,
bandit sizes `(P, A, d)` and dtype. :func:`train_sweep` compiles once per :class:`TrainConfig`,
sizes, and layout (:func:`sim.sweep.sweep_grid`: block count and chunk size); new seeds, new `k`
values and new regimes of the same sizes and counts reuse the compiled function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim import sweep as _sweep
from sim.answers import draw_answers, sample_coefficients, score_update
from sim.bandit import (
    DEFAULT_K_MAX,
    SoftmaxBandit,
    assemble_diagnostics,
    prompt_mean,
    prompts_last,
    pullback,
    pushforward,
    success_parts,
)
from sim.records import (
    DIAGNOSTIC_RECORDS,
    NOT_RECORDED,
    RECORD_NAMES,
    STATE_RECORDS,
    UPDATE_RECORDS,
    Records,
)
from sim.rules import RULE_TABLE, RULES, UpdateRule
from sim.train_config import ESTIMATORS, PASSK_ESTIMATORS, TrainConfig, make_optimizer

__all__ = [
    "RULES",
    "RULE_TABLE",
    "UpdateRule",
    "ESTIMATORS",
    "PASSK_ESTIMATORS",
    "Records",
    "RECORD_NAMES",
    "STATE_RECORDS",
    "UPDATE_RECORDS",
    "DIAGNOSTIC_RECORDS",
    "TrainConfig",
    "run",
    "train",
    "train_sweep",
    "make_optimizer",
]


# --------------------------------------------------------------------------- the training core


def _order(config: TrainConfig, rule_index, k, k_star):
    """The order of `g_k` that the selected rule reads."""
    orders = [config.rule(r).order_of(k, k_star) for r in config.rules]
    return orders[0] if len(orders) == 1 else jnp.stack(orders)[rule_index]


def _gk_weights(p, k_used, mu):
    """Prompt weights `mu w_k(p)` of `grad J_k`, held fixed."""
    return jax.lax.stop_gradient(mu * theory.pass_at_k_weight(p, k_used))


def _state(config: TrainConfig, lay, k, rule_index, theta, *, full: bool):
    """State records at `theta` (the diagnostics when `full`), exact `grad J_1`, and exact
    `grad J_k` (None for sampled estimators) with the order used.

    One forward evaluation (`p`, `dp/dlogits`) feeds one matrix product for every reverse pass
    known before `k*` (`grad J_1`, `J^T omega` when `full`, `grad J_k` when :attr:`early_gk`) and
    the forward pass `a = J grad J_1` when `k*` is needed.
    """
    mu = lay.prompt_weights
    p, dlogits = success_parts(lay, theta)
    rows = [mu[None]]
    if full:
        omega = jax.lax.stop_gradient(theory.normalized_weights(p, k[None], mu))  # (1, P)
        rows.append(omega)
    if config.early_gk:
        k_used = _order(config, rule_index, k, None)
        rows.append(_gk_weights(p, k_used, mu)[None])
    grads = pullback(lay, dlogits, jnp.concatenate(rows))
    g1 = grads[0]
    k_star = None
    if full or config.k_star_every_step:
        a = pushforward(lay, dlogits, g1)
        k_star = theory.critical_k_jax(p, a, mu, k_max=config.k_max)
    if full:
        d = assemble_diagnostics(p, a, g1, grads[1:2], omega, k[None], mu, k_max=config.k_max, k_star=k_star)
        rec = Records(
            j1=d.j1, jk=d.jk[0], inner=d.inner[0], mean_agreement=d.mean_agreement[0], cos=d.cos[0], k_star=d.k_star
        )
    else:
        nan = jnp.full((), jnp.nan, p.dtype)
        rec = Records(
            j1=prompt_mean(p, mu), jk=prompt_mean(theory.pass_at_k(p, k), mu), **dict.fromkeys(DIAGNOSTIC_RECORDS, nan)
        )
        rec = rec._replace(k_star=jnp.full((), NOT_RECORDED, jnp.int32))
    if config.early_gk:
        gk = grads[-1]
    else:
        k_used = _order(config, rule_index, k, k_star)
        gk = pullback(lay, dlogits, _gk_weights(p, k_used, mu)) if config.exact else None
    return rec, g1, gk, k_used


def _estimates(config: TrainConfig, bandit, theta, key, exact_g1, exact_gk, k_used):
    """`(g_1, g_k)` of the configured estimator: the exact ones, or sampled on `n_samples` answers."""
    if config.exact:
        return exact_g1, exact_gk
    answers, rewards = draw_answers(bandit, theta, config.n_samples, key=key)
    gk = score_update(bandit, theta, answers, sample_coefficients(config.estimator, rewards, k_used))
    if not config.samples_g1:
        return gk, gk  # `g_1` read by no rule of the run ("pass1" reads `g_k` at order 1)
    base = "rloo" if config.n_samples >= 2 else "reinforce"
    return score_update(bandit, theta, answers, sample_coefficients(base, rewards, 1)), gk


def _direction(rule: UpdateRule, config: TrainConfig, smoothness, g1, gk):
    """The ascent direction of `rule` from flat `g_1` and `g_k` (before the optimizer): a direction
    rule's transform with `step_size = learning_rate`; a step rule's direction is `g_k`."""
    v = g1 if rule.order == "1" else gk
    if rule.acts_on != "direction":
        return v
    return rule.apply(
        v, g1, step_size=config.learning_rate, smoothness=smoothness, mixture_weight=config.mixture_weight
    )


def _step(rule: UpdateRule, config: TrainConfig, smoothness, u, g1):
    """The update of `rule` from the optimizer's flat ascent step `u`: a step rule's transform with
    `step_size = 1` (a step is its own size); `u` for a direction rule."""
    if rule.acts_on != "step":
        return u
    return rule.apply(u, g1, step_size=1.0, smoothness=smoothness, mixture_weight=config.mixture_weight)


def run(config: TrainConfig, bandit: SoftmaxBandit, theta0, k, key, rule_index=0) -> tuple[Records, jax.Array]:
    """One training run of one bandit (unbatched; traceable in every argument but `config`).

    Args:
      config: the static settings (:class:`TrainConfig`).
      bandit: one :class:`SoftmaxBandit`.
      theta0: `(A, d)` start.
      k: the pass@k order (integer scalar).
      key: `jax.random` key; step `t` uses the `t`-th of `jax.random.split(key, steps)`.
      rule_index: which of `config.rules` (under vmap every rule's direction, and step change, is
        evaluated and one selected by `lax.switch`: each is a few vector operations).

    Returns:
      `(records, theta)`: :class:`Records` with state records `(steps + 1,)` and update records
      `(steps,)`, and the final `theta`.

    Per step, :func:`_state` at `theta_t` (with the diagnostics at the steps that record them; the
    others skip them through `lax.cond`, unless a rule reads `k*`), the estimates, the rule's
    direction `g`, the optimizer's update `u` of `-g`, and the rule's change of `u` (step rules).
    """
    opt = config.make_optimizer()
    k = jnp.asarray(k, jnp.int32)
    lay = prompts_last(bandit)  # transposed once, outside the step loop
    smoothness = theory.softmax_smoothness_bound(bandit.feature_norm)
    state = functools.partial(_state, config, lay, k, rule_index)
    directions = [functools.partial(_direction, config.rule(r), config, smoothness) for r in config.rules]
    steps = [functools.partial(_step, config.rule(r), config, smoothness) for r in config.rules]

    def step(carry, xs):
        t, step_key = xs
        theta, opt_state = carry
        if config.record_every == 1:
            rec, exact_g1, exact_gk, k_used = state(theta, full=True)
        else:
            # `t` is not batched (the same for every sweep entry), so this is a real branch under
            # vmap: the steps between records skip the diagnostics' passes and the k* search.
            rec, exact_g1, exact_gk, k_used = jax.lax.cond(
                t % config.record_every == 0,
                functools.partial(state, full=True),
                functools.partial(state, full=False),
                theta,
            )
        g1, gk = _estimates(config, bandit, theta, step_key, exact_g1, exact_gk, k_used)
        flat1, flatk = g1.reshape(-1), gk.reshape(-1)
        if len(directions) == 1:
            g = directions[0](flat1, flatk)
        else:
            g = jax.lax.switch(rule_index, directions, flat1, flatk)
        updates, opt_state = opt.update(-g.reshape(theta.shape), opt_state, theta)  # optax minimises
        if config.has_step_rules:
            u = updates.reshape(-1)
            u = steps[0](u, flat1) if len(steps) == 1 else jax.lax.switch(rule_index, steps, u, flat1)
            updates = u.reshape(theta.shape)
        theta = optax.apply_updates(theta, updates)
        rec = rec._replace(
            update_inner=jnp.vdot(exact_g1, updates, precision=jax.lax.Precision.HIGHEST),
            update_norm=jnp.linalg.norm(updates),
            k_used=k_used,
        )
        return (theta, opt_state), rec

    keys = jax.random.split(key, config.steps)
    xs = (jnp.arange(config.steps, dtype=jnp.int32), keys)
    (theta, _), recs = jax.lax.scan(step, (theta0, opt.init(theta0)), xs)
    final = state(theta, full=True)[0]
    recs = recs._replace(
        **{name: jnp.concatenate([getattr(recs, name), getattr(final, name)[None]], axis=0) for name in STATE_RECORDS}
    )
    return recs, theta


_run_jit = jax.jit(run, static_argnums=0)


def _as_dict(records: Records, theta) -> dict:
    """The returned layout: numpy arrays keyed by record name, plus `theta`."""
    return {**{name: np.asarray(v) for name, v in records._asdict().items()}, "theta": np.asarray(theta)}


def _config(steps, rule, estimator, n_samples, optimizer, learning_rate, mixture_weight, k_max, record_every):
    return TrainConfig(
        steps=steps,
        rules=rule,
        estimator=estimator,
        n_samples=n_samples,
        optimizer=optimizer,
        learning_rate=learning_rate,
        mixture_weight=mixture_weight,
        k_max=k_max,
        record_every=record_every,
    )


def train(
    bandit: SoftmaxBandit,
    theta0,
    *,
    k: int,
    steps: int,
    key,
    rule: str = "passk",
    estimator: str = "exact",
    n_samples: int | None = None,
    optimizer="sgd",
    learning_rate: float = 1.0,
    mixture_weight: float | None = None,
    k_max: int = DEFAULT_K_MAX,
    record_every: int = 1,
) -> dict:
    """Train one bandit from `theta0` for `steps` steps: :func:`run` under `jax.jit`.

    Args:
      bandit: the :class:`SoftmaxBandit`.
      theta0: `(A, d)` start.
      k: the pass@k order (`>= 1`); for `rule="pass1"` it is the order reported in `jk`.
      steps: number of updates (static).
      key: `jax.random` key (keyword-only; drives the sampled estimators).
      rule: one of :data:`RULES` (:mod:`sim.rules`: direction and step rules).
      estimator: `"exact"` or a sampled estimator (:data:`ESTIMATORS`).
      n_samples: answers per prompt for sampled estimators (`>= k` for the pass@k ones,
        `>= k + 1` for `"pkpo-loo"`, `>= 2` for `"rloo"`).
      optimizer: `"sgd"`, `"adam"`, `"momentum"` or an (hashable) optax transformation.
      learning_rate: step size (`eta`).
      mixture_weight: fixed `lambda` for `rule="mixture"` or `"mixture-step"` (None: recomputed
        each step).
      k_max: largest `k` searched for `k*` in the records.
      record_every: record the diagnostics (`inner`, `mean_agreement`, `cos`, `k_star`) at steps
        `t = 0, N, 2N, ...` and at `t = steps` only (`N = record_every`; NaN and `k_star = -1`
        elsewhere); `j1`, `jk` and the update records are written at every step. The steps in
        between skip the diagnostics' passes and the `k*` search (which `rule="safe-k"` still runs
        for its order).

    Every setting but `bandit`, `theta0`, `k` and `key` is static (:class:`TrainConfig`): a new
    value recompiles.

    Returns:
      A dict of numpy arrays keyed by :data:`RECORD_NAMES`: the state records (length
      `steps + 1`), the update records (length `steps`), and the final `theta`.
    """
    if np.ndim(k) != 0:
        raise ValueError(f"k must be a single integer for train (use train_sweep for several); got {k!r}")
    if not isinstance(bandit, SoftmaxBandit):
        raise TypeError(f"bandit must be a SoftmaxBandit; got {type(bandit).__name__}")
    config = _config(steps, rule, estimator, n_samples, optimizer, learning_rate, mixture_weight, k_max, record_every)
    ks = config.check_orders(k)
    theta0 = jnp.asarray(theta0)
    if theta0.shape != bandit.param_shape:
        raise ValueError(f"theta0 must have shape (A, d) = {bandit.param_shape}; got shape {theta0.shape}")
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        raise TypeError(f"theta0 must be floating; got dtype {theta0.dtype}")
    records, theta = _run_jit(config, bandit, theta0, jnp.asarray(ks), jnp.asarray(key), jnp.int32(0))
    return _as_dict(records, theta)


@functools.lru_cache(maxsize=128)
def _grid_fn(config: TrainConfig) -> Callable:
    """:func:`run` with `config` as a function of one regime and one configuration (for
    :func:`sim.sweep.sweep_grid`; cached so that the grid reuses its compiled function)."""

    def one(regime, configuration):
        bandit, theta0 = regime
        k, key, rule_index = configuration
        return run(config, bandit, theta0, k, key, rule_index)

    return one


def train_sweep(
    bandits: SoftmaxBandit,
    theta0s,
    *,
    ks,
    keys,
    steps: int,
    rule="passk",
    estimator: str = "exact",
    n_samples: int | None = None,
    optimizer="sgd",
    learning_rate: float = 1.0,
    mixture_weight: float | None = None,
    k_max: int = DEFAULT_K_MAX,
    record_every: int = 1,
    devices=None,
) -> dict:
    """Train every (rule,) regime, k, seed combination in one compiled, device-sharded call.

    :func:`run` vmapped over the configurations (rule, `k`, seed) of each regime and laid out over
    regimes and devices by :func:`sim.sweep.sweep_grid` (blocks of configurations sharing their
    regime's bandit, batches sized to stay in cache, padding).

    Args:
      bandits: a :class:`SoftmaxBandit` whose fields carry a leading regime axis `R` (e.g. a
        `jax.vmap(toy_bandit)` output, or `tree_map(lambda x: x[None], bandit)` for one).
      theta0s: `(R, A, d)` starts.
      ks: `(K,)` pass@k orders.
      keys: `(S,)` `jax.random` keys (seeds), e.g. `jax.random.split(key, S)`.
      rule: one rule name, or a tuple of rule names: then the rules are one more vmap axis
        (selected inside the step by `lax.switch`), and the results gain a leading rule axis.
      steps, estimator, n_samples, optimizer, learning_rate, mixture_weight, k_max,
        record_every: as in :func:`train` (all static).
      devices: devices to shard the sweep over (default: all).

    Returns:
      A dict of numpy arrays keyed by :data:`RECORD_NAMES` and `theta`, with leading axes
      `(R, K, S)` (`(n_rules, R, K, S)` when `rule` is a tuple): state records `(..., steps+1)`,
      update records `(..., steps)`, `theta` `(..., A, d)`.
    """
    if not isinstance(bandits, SoftmaxBandit):
        raise TypeError(f"bandits must be a SoftmaxBandit with a leading regime axis; got {type(bandits).__name__}")
    several = not isinstance(rule, str)
    config = _config(
        steps,
        tuple(rule) if several else rule,
        estimator,
        n_samples,
        optimizer,
        learning_rate,
        mixture_weight,
        k_max,
        record_every,
    )
    ks = config.check_orders(ks).reshape(-1)
    feats = jnp.asarray(bandits.features)
    if feats.ndim != 3:
        raise ValueError(f"bandits must carry a leading regime axis (features (R, P, d)); got shape {feats.shape}")
    n_regimes, n_prompts, n_actions = feats.shape[0], feats.shape[1], bandits.rewards.shape[-1]
    theta0s = jnp.asarray(theta0s)
    expected = (n_regimes, n_actions, feats.shape[-1])
    if theta0s.shape != expected:
        raise ValueError(f"theta0s must have shape (R, A, d) = {expected}; got shape {theta0s.shape}")
    if not jnp.issubdtype(theta0s.dtype, jnp.floating):
        raise TypeError(f"theta0s must be floating; got dtype {theta0s.dtype}")
    keys = jnp.asarray(keys)
    n_seeds = keys.shape[0] if keys.ndim >= 1 else 0
    if n_seeds < 1:
        raise ValueError(f"keys must have a leading seed axis (e.g. jax.random.split(key, S)); got shape {keys.shape}")
    n_rules, n_k = len(config.rules), ks.shape[0]
    # Configurations of one regime, rule-major then k then seed (the order of the result axes).
    grid = np.meshgrid(np.arange(n_rules), np.arange(n_k), np.arange(n_seeds), indexing="ij")
    u_idx, k_idx, s_idx = (a.reshape(-1) for a in grid)
    configurations = (jnp.asarray(ks[k_idx]), keys[s_idx], jnp.asarray(u_idx, jnp.int32))
    # A step's largest per-configuration arrays are (A, P).
    config_bytes = n_actions * n_prompts * jnp.dtype(feats.dtype).itemsize
    records, theta = _sweep.sweep_grid(
        _grid_fn(config), (bandits, theta0s), configurations, devices=devices, config_bytes=config_bytes
    )

    def unblock(v):
        v = v.reshape((n_regimes, n_rules, n_k, n_seeds) + v.shape[2:])
        return np.moveaxis(v, 1, 0) if several else v[:, 0]

    return {name: unblock(v) for name, v in _as_dict(records, theta).items()}
