"""Training softmax-policy bandits on pass@1, pass@k, or conflict-safe updates (SPEC sections 5, 6, 8).

What is where in this module:

- :class:`TrainConfig`: the static settings of a run (frozen, hashable: the `jit` cache key),
  validated once when built;
- :class:`Records`: the names and meaning of everything a run records (one vocabulary, shared
  with the transformer's training); :data:`RECORD_NAMES` holds each name as a string;
- :data:`RULE_TABLE`: each update rule, a small pure function of `(g_1, g_k)` chosen by name;
- the sampled estimates of `g_1` and `g_k`, from answers drawn by :mod:`sim.answers`;
- :func:`run`: one training run of one bandit with one configuration (unbatched, traceable);
- :func:`train` (`run` under `jax.jit`) and :func:`train_sweep` (`run` vmapped over rules, `k`
  and seeds, laid out over regimes and devices by :func:`sim.sweep.sweep_grid`).

Each step computes an ascent direction `g` by a *rule* from gradient estimates of `J_1` and `J_k`,
hands `-g` to an optax optimizer (optax minimises) and applies its update `u`:

=================  ==========================================================================
rule               direction `g`
=================  ==========================================================================
`"pass1"`          `g_1`, the gradient of `J_1`
`"passk"`          `g_k`, the gradient of `J_k`
`"project"`        `theory.project_conflict(g_k, g_1)`: no first-order loss of pass@1
`"project-safe"`   `theory.project_step_safe(g_k, g_1, step_size=lr, smoothness=L_1)` with
                   `L_1 = theory.softmax_smoothness_bound(B)`: no loss of pass@1 for a plain step
                   of size `lr` (exact for `optimizer="sgd"`; other optimizers rescale the step)
`"mixture"`        `g_k + lambda g_1`, `lambda = theory.mixture_coefficient(g_k, g_1)` recomputed
                   each step, or a fixed `mixture_weight` (then the objective `J_k + lambda J_1`)
`"safe-k"`         `g_{k'}` with `k' = min(k, k* - 1)` (at least 1), `k*` recomputed exactly at
                   every step (`theory.critical_k_jax`): the largest non-conflicting order
=================  ==========================================================================

A new rule is one function `(g1, gk, config, smoothness) -> g` on flat vectors and one
:data:`RULE_TABLE` entry (:class:`Rule`: its direction, the order of `g_k` it reads, and whether
it reads `g_1` or `k*`).

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

import dataclasses
import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim import sweep as _sweep
from sim.answers import SAMPLED_ESTIMATORS, draw_answers, sample_coefficients, score_update
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

__all__ = [
    "RULES",
    "RULE_TABLE",
    "Rule",
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

ESTIMATORS = ("exact",) + SAMPLED_ESTIMATORS
#: Estimators whose per-sample coefficients depend on `k`.
PASSK_ESTIMATORS = tuple(name for name, entry in theory.ESTIMATOR_TABLE.items() if entry.needs_k)


# --------------------------------------------------------------------------- records


class Records(NamedTuple):
    """What a training run records; the field names are the record names everywhere.

    State records, at `theta_t` for `t = 0..steps` (length `steps + 1`):

    Attributes:
      j1: `J_1 = sum_i mu_i p_i`.
      jk: `J_k = sum_i mu_i (1 - (1 - p_i)^k)`.
      inner: `I_k = <grad J_k, grad J_1>` (diagnostic).
      mean_agreement: `A_k = sum_i omega_i a_i`, the underflow-free sign of `I_k` (diagnostic).
      cos: `cos_k = <g_k, g_1> / (|g_k| |g_1|)` (diagnostic).
      k_star: `k* = min{k : I_k < 0}`, `k_max + 1` when none (diagnostic; -1 where not recorded).

    Update records, for the update `u_t` of step `t < steps` (length `steps`):

    Attributes:
      update_inner: `<grad J_1, u_t>`, the first-order change of `J_1` the update takes.
      update_norm: `||u_t||`.
      k_used: the order of `g_k` the step used.

    A field is None where it is not computed (inside a step, before the update).
    """

    j1: Any = None
    jk: Any = None
    inner: Any = None
    mean_agreement: Any = None
    cos: Any = None
    k_star: Any = None
    update_inner: Any = None
    update_norm: Any = None
    k_used: Any = None


#: Every record name as a string, by field (`RECORD_NAMES.j1 == "j1"`): the keys of the dicts that
#: :func:`train` and :func:`train_sweep` return and of the JSON built from them.
RECORD_NAMES = Records(*Records._fields)
STATE_RECORDS = RECORD_NAMES[:6]
UPDATE_RECORDS = RECORD_NAMES[6:]
#: State records written only at the steps that record diagnostics (`record_every`).
DIAGNOSTIC_RECORDS = (RECORD_NAMES.inner, RECORD_NAMES.mean_agreement, RECORD_NAMES.cos, RECORD_NAMES.k_star)
# `k_star` where no diagnostics were recorded (`k* >= 1`; `k_max + 1` means "none up to k_max").
_NOT_RECORDED = -1


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


# --------------------------------------------------------------------------- estimators


def _min_samples(estimator: str, k_max_used: int) -> int:
    """Smallest `n` an estimator accepts for orders up to `k_max_used` (its table entry's rule)."""
    return theory.gradient_estimator(estimator).min_samples(k_max_used)


# --------------------------------------------------------------------------- optimisers


def make_optimizer(optimizer, learning_rate: float) -> optax.GradientTransformation:
    """`"sgd"` (plain steps), `"adam"`, `"momentum"` (heavy ball 0.9), or an optax transformation."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if optimizer == "sgd":
        return optax.sgd(learning_rate)
    if optimizer == "adam":
        return optax.adam(learning_rate)
    if optimizer == "momentum":
        return optax.sgd(learning_rate, momentum=0.9)
    raise ValueError(
        f"optimizer must be 'sgd', 'adam', 'momentum' or an optax.GradientTransformation; got {optimizer!r}"
    )


# --------------------------------------------------------------------------- rules
# A rule's direction is a pure function of the flat estimates `g1`, `gk` (ascent directions of
# `J_1` and `J_k`), the run's config and `smoothness = L_1`; its order maps `(k, k*)` to the
# order of `g_k` it reads.


def _pass1(g1, gk, config, smoothness):
    """`g = g_1`."""
    return g1


def _passk(g1, gk, config, smoothness):
    """`g = g_k`."""
    return gk


def _project(g1, gk, config, smoothness):
    """`g = g_k - min(0, <g_k, g_1>) g_1 / ||g_1||^2` (:func:`theory.project_conflict`)."""
    return theory.project_conflict(gk, g1)


def _project_safe(g1, gk, config, smoothness):
    """`g_k` projected so that a plain step of size `lr` cannot lower `J_1` with smoothness `L_1`
    (:func:`theory.project_step_safe`)."""
    return theory.project_step_safe(gk, g1, step_size=config.learning_rate, smoothness=smoothness)


def _mixture(g1, gk, config, smoothness):
    """`g = g_k + lambda g_1`, `lambda` fixed (`mixture_weight`) or :func:`theory.mixture_coefficient`."""
    lam = theory.mixture_coefficient(gk, g1) if config.mixture_weight is None else config.mixture_weight
    return gk + lam * g1


def _order_k(k, k_star):
    """The run's order `k`."""
    return k


def _order_one(k, k_star):
    """Order 1 (pass@1)."""
    return jnp.ones_like(k)


def _order_below_k_star(k, k_star):
    """`k' = min(k, k* - 1)`, at least 1: the largest order without conflict."""
    return jnp.clip(k_star - 1, 1, k)


class Rule(NamedTuple):
    """One update rule.

    Attributes:
      direction: `(g1, gk, config, smoothness) -> g`, the ascent direction from flat estimates.
      order: `(k, k_star) -> k'`, the order of the `g_k` it reads.
      reads_g1: whether `direction` reads `g_1` (sampled estimators then estimate it too).
      reads_k_star: whether `order` reads `k*` (then searched at every step).
    """

    direction: Callable
    order: Callable = _order_k
    reads_g1: bool = False
    reads_k_star: bool = False


#: The update rules by name (see the module docstring).
RULE_TABLE: dict[str, Rule] = {
    "pass1": Rule(_pass1, order=_order_one),
    "passk": Rule(_passk),
    "project": Rule(_project, reads_g1=True),
    "project-safe": Rule(_project_safe, reads_g1=True),
    "mixture": Rule(_mixture, reads_g1=True),
    "safe-k": Rule(_passk, order=_order_below_k_star, reads_k_star=True),
}
RULES = tuple(RULE_TABLE)


# --------------------------------------------------------------------------- configuration


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The static settings of a training run: frozen and hashable, the `jit` cache key.

    Attributes:
      steps: number of updates.
      rules: rule names (:data:`RULES`); a string is one rule. Several rules are one more vmap
        axis of :func:`train_sweep` (selected inside the step by `lax.switch`).
      estimator: `"exact"` or a sampled estimator (:data:`ESTIMATORS`).
      n_samples: answers per prompt for sampled estimators (None for `"exact"`).
      optimizer: `"sgd"`, `"adam"`, `"momentum"` or a (hashable) optax transformation.
      learning_rate: step size (`eta`).
      mixture_weight: fixed `lambda` of `"mixture"` (None: recomputed each step).
      k_max: largest `k` searched for `k*`.
      record_every: diagnostics at steps `0, N, 2N, ...` and the last (`N = record_every`).

    Built once per call and validated here (`ValueError`/`TypeError` naming the argument); the
    orders `k` are checked against `n_samples` by :meth:`check_orders`.
    """

    steps: int
    rules: tuple = ("passk",)
    estimator: str = "exact"
    n_samples: int | None = None
    optimizer: Any = "sgd"
    learning_rate: float = 1.0
    mixture_weight: float | None = None
    k_max: int = DEFAULT_K_MAX
    record_every: int = 1

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("steps", _positive_int("steps", self.steps))
        rules = (self.rules,) if isinstance(self.rules, str) else tuple(self.rules)
        if not rules:
            raise ValueError("rule must name at least one rule; got an empty sequence")
        for rule in rules:
            _check_choice("rule", rule, tuple(RULE_TABLE))
        if len(set(rules)) != len(rules):
            raise ValueError(f"rule must not repeat a rule; got {rules!r}")
        set_("rules", rules)
        _check_choice("estimator", self.estimator, ESTIMATORS)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"learning_rate must be a positive finite number; got {lr!r}")
        set_("learning_rate", float(lr))
        make_optimizer(self.optimizer, self.learning_rate)
        if isinstance(self.optimizer, optax.GradientTransformation):
            try:
                hash(self.optimizer)
            except TypeError as err:
                raise TypeError("optimizer must be hashable (it is part of the compile cache key)") from err
        w = self.mixture_weight
        if w is not None:
            if "mixture" not in rules:
                raise ValueError(f"mixture_weight applies to rule='mixture' only; got rule={rules!r}")
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (np.isfinite(w) and w >= 0):
                raise ValueError(f"mixture_weight must be a finite number >= 0 or None; got {w!r}")
            set_("mixture_weight", float(w))
        set_("k_max", _positive_int("k_max", self.k_max))
        n = self.n_samples
        if self.estimator == "exact":
            if n is not None:
                raise ValueError(
                    f"n_samples applies to sampled estimators only; got n_samples={n!r} with estimator='exact'"
                )
        else:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"n_samples must be a positive integer for estimator={self.estimator!r}; got {n!r}")
            set_("n_samples", int(n))
        set_("record_every", _positive_int("record_every", self.record_every))

    @property
    def exact(self) -> bool:
        """Exact gradients (no sampling)."""
        return self.estimator == "exact"

    @property
    def samples_g1(self) -> bool:
        """A sampled run whose rules read `g_1`: it estimates `g_1` too (RLOO on the same answers)."""
        return not self.exact and any(RULE_TABLE[r].reads_g1 for r in self.rules)

    @property
    def k_star_every_step(self) -> bool:
        """A rule's order reads `k*`, so it is searched at every step."""
        return any(RULE_TABLE[r].reads_k_star for r in self.rules)

    @property
    def early_gk(self) -> bool:
        """Exact `grad J_k` joins the first reverse pass (its order is known before `k*`)."""
        return self.exact and not self.k_star_every_step

    def make_optimizer(self) -> optax.GradientTransformation:
        """The optax transformation of `optimizer` and `learning_rate`."""
        return make_optimizer(self.optimizer, self.learning_rate)

    def check_orders(self, k) -> np.ndarray:
        """`k` as an int32 array, checked: integers `>= 1`, within what `n_samples` allows."""
        ks = np.asarray(k)
        if ks.dtype == np.bool_ or not np.issubdtype(ks.dtype, np.integer):
            raise TypeError(f"k must be an integer or integer array; got {ks!r}")
        if ks.size == 0 or ks.min() < 1:
            raise ValueError(f"k must be >= 1; got {ks.tolist()!r}")
        if not self.exact:
            order = 1 if set(self.rules) == {"pass1"} else int(ks.max())
            need = _min_samples(self.estimator, order)
            if self.n_samples < need:
                raise ValueError(
                    f"estimator={self.estimator!r} with k={order} needs n_samples >= {need}; "
                    f"got n_samples={self.n_samples}"
                )
        return ks.astype(np.int32)


# --------------------------------------------------------------------------- the training core


def _order(config: TrainConfig, rule_index, k, k_star):
    """The order of `g_k` that the selected rule reads."""
    orders = [RULE_TABLE[r].order(k, k_star) for r in config.rules]
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
        rec = Records(j1=d.j1, jk=d.jk[0], inner=d.inner[0], mean_agreement=d.mean_agreement[0], cos=d.cos[0],
                      k_star=d.k_star)
    else:
        nan = jnp.full((), jnp.nan, p.dtype)
        rec = Records(j1=prompt_mean(p, mu), jk=prompt_mean(theory.pass_at_k(p, k), mu),
                      **dict.fromkeys(DIAGNOSTIC_RECORDS, nan))
        rec = rec._replace(k_star=jnp.full((), _NOT_RECORDED, jnp.int32))
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


def run(config: TrainConfig, bandit: SoftmaxBandit, theta0, k, key, rule_index=0) -> tuple[Records, jax.Array]:
    """One training run of one bandit (unbatched; traceable in every argument but `config`).

    Args:
      config: the static settings (:class:`TrainConfig`).
      bandit: one :class:`SoftmaxBandit`.
      theta0: `(A, d)` start.
      k: the pass@k order (integer scalar).
      key: `jax.random` key; step `t` uses the `t`-th of `jax.random.split(key, steps)`.
      rule_index: which of `config.rules` (under vmap every rule's direction is evaluated and one
        selected by `lax.switch`: each is a few vector operations).

    Returns:
      `(records, theta)`: :class:`Records` with state records `(steps + 1,)` and update records
      `(steps,)`, and the final `theta`.

    Per step, :func:`_state` at `theta_t` (with the diagnostics at the steps that record them; the
    others skip them through `lax.cond`, unless a rule reads `k*`), the estimates, the rule's
    direction `g`, and the optimizer's update `u` of `-g`.
    """
    opt = config.make_optimizer()
    k = jnp.asarray(k, jnp.int32)
    lay = prompts_last(bandit)  # transposed once, outside the step loop
    smoothness = theory.softmax_smoothness_bound(bandit.feature_norm)
    state = functools.partial(_state, config, lay, k, rule_index)
    directions = [
        functools.partial(RULE_TABLE[r].direction, config=config, smoothness=smoothness) for r in config.rules
    ]

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
    recs = recs._replace(**{
        name: jnp.concatenate([getattr(recs, name), getattr(final, name)[None]], axis=0) for name in STATE_RECORDS
    })
    return recs, theta


_run_jit = jax.jit(run, static_argnums=0)


def _as_dict(records: Records, theta) -> dict:
    """The returned layout: numpy arrays keyed by record name, plus `theta`."""
    return {**{name: np.asarray(v) for name, v in records._asdict().items()}, "theta": np.asarray(theta)}


def _config(steps, rule, estimator, n_samples, optimizer, learning_rate, mixture_weight, k_max, record_every):
    return TrainConfig(
        steps=steps, rules=rule, estimator=estimator, n_samples=n_samples, optimizer=optimizer,
        learning_rate=learning_rate, mixture_weight=mixture_weight, k_max=k_max, record_every=record_every,
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
      rule: one of :data:`RULES`.
      estimator: `"exact"` or a sampled estimator (:data:`ESTIMATORS`).
      n_samples: answers per prompt for sampled estimators (`>= k` for the pass@k ones,
        `>= k + 1` for `"pkpo-loo"`, `>= 2` for `"rloo"`).
      optimizer: `"sgd"`, `"adam"`, `"momentum"` or an (hashable) optax transformation.
      learning_rate: step size (`eta`).
      mixture_weight: fixed `lambda` for `rule="mixture"` (None: recomputed each step).
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
    config = _config(steps, tuple(rule) if several else rule, estimator, n_samples, optimizer, learning_rate,
                     mixture_weight, k_max, record_every)
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
    records, theta = _sweep.sweep_grid(_grid_fn(config), (bandits, theta0s), configurations, devices=devices,
                                       config_bytes=config_bytes)

    def unblock(v):
        v = v.reshape((n_regimes, n_rules, n_k, n_seeds) + v.shape[2:])
        return np.moveaxis(v, 1, 0) if several else v[:, 0]

    return {name: unblock(v) for name, v in _as_dict(records, theta).items()}
