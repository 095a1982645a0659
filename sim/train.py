"""Training softmax-policy bandits on pass@1, pass@k, or conflict-safe updates (SPEC sections 5, 6, 8).

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

Gradient estimates (`estimator`):

- `"exact"`: `g_1 = J^T mu` and `g_k = J^T (mu w_k(p))` by reverse passes
  (:meth:`SoftmaxBandit.pass_at_k_grad`);
- sampled, `n_samples = n` answers per prompt drawn from the policy, rewards read from the table,
  and per-sample coefficients `s_ij` for the update `sum_i mu_i sum_j s_ij grad log pi(y_ij|x_i)`
  (the gradient of the surrogate `sum_i mu_i sum_j stop_gradient(s_ij) log pi(y_ij|x_i)`):

  ====================  ====================================================================
  estimator             `s_ij` (all from `theory`)
  ====================  ====================================================================
  `"reinforce"`         `r_ij / n`
  `"rloo"`              `theory.rloo_advantages(r_i) / n`
  `"grpo"`              `theory.grpo_advantages(r_i) / n`
  `"pkpo"`              `theory.pkpo_weights(r_i, k)` (a sum over the group)
  `"pkpo-loo"`          `theory.pkpo_weights(r_i, k, baseline="loo")`
  `"pkpo-loo-1"`        `theory.pkpo_weights(r_i, k, baseline="loo-1")`
  `"grouped-passk"`     `theory.grouped_passk_advantages(r_i, k) / n`
  ====================  ====================================================================

  The pass@k estimators use the rule's order (`k` for `g_k`, 1 for `g_1`); REINFORCE, RLOO and
  GRPO have no order (their implied prompt weights are `1`, `1` and `~1/sqrt(p(1-p))`). For the
  rules that also need `g_1` (`project*`, `mixture`) the pass@1 estimate is RLOO on the same
  answers (REINFORCE when `n = 1`).

Records (exact, whatever the estimator), for every step `t = 0..steps` (state) or `t < steps`
(update): `j1`, `jk`, `inner` (`I_k`), `mean_agreement` (`A_k`), `cos` (`cos_k`), `k_star`
(`k_max + 1` = none) at `theta_t`, and for each update `update_inner = <grad J_1, u_t>` (the
first-order change of pass@1 actually taken; SPEC section 5: with Adam it differs from
`lr I_k`), `update_norm` and `k_used` (the order of `g_k` used, which moves under `"safe-k"`).
With `record_every = N > 1` the diagnostics `inner`, `mean_agreement`, `cos` and `k_star` are
written at `t = 0, N, 2N, ...` and at `t = steps` only (NaN, and `k_star = -1`, elsewhere); the
other records stay per step. The diagnostics cost a forward pass `J grad J_1`, one more reverse
direction and the `k*` search per recorded step, so long sweeps record them sparsely.

Cost of a step (exact estimator): one evaluation of `p` and `dp/dlogits` at `theta_t` feeds one
matrix product for all reverse passes (`grad J_1`, `J^T omega` and `grad J_k`; `grad J_k` joins
later, by a second product, only under `"safe-k"`, whose order needs `k*` first) and the forward
pass `a = J grad J_1` (:mod:`sim.bandit`, prompts on the fast axis).

Compilation: the step loop is `lax.scan`; :func:`train_sweep` cuts each regime's
configurations (rules x `k` x seeds) into chunks (:func:`sweep_blocks`), vmaps a chunk with the
bandit shared and maps the `(regime, chunk)` blocks with :func:`sim.sweep.sweep_map` (one
compiled function, sharded over devices). A new compile happens when any static setting
changes: `steps`, the rule (tuple), `estimator`, `n_samples`, `optimizer`, `learning_rate`,
`mixture_weight`, `k_max`, `record_every`, the bandit sizes `(P, A, d)`, the dtype, the number
of blocks (regimes x chunks, padded to a multiple of the device count) or the chunk size (the
configurations per regime, padded to a multiple of the chunk count). New seeds, new `k` values
and new regimes of the same sizes and counts reuse the compiled function.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim import sweep as _sweep
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
    "ESTIMATORS",
    "PASSK_ESTIMATORS",
    "train",
    "train_sweep",
    "sampled_update",
    "sampled_updates",
    "draw_answers",
    "sample_coefficients",
    "make_optimizer",
]

RULES = ("pass1", "passk", "project", "project-safe", "mixture", "safe-k")
ESTIMATORS = ("exact", "reinforce", "rloo", "grpo", "pkpo", "pkpo-loo", "pkpo-loo-1", "grouped-passk")
#: Estimators whose per-sample coefficients depend on `k`.
PASSK_ESTIMATORS = ("pkpo", "pkpo-loo", "pkpo-loo-1", "grouped-passk")

STATE_RECORDS = ("j1", "jk", "inner", "mean_agreement", "cos", "k_star")
UPDATE_RECORDS = ("update_inner", "update_norm", "k_used")
#: State records written only at the steps that record diagnostics (`record_every`).
DIAGNOSTIC_RECORDS = ("inner", "mean_agreement", "cos", "k_star")
# `k_star` where no diagnostics were recorded (`k* >= 1`; `k_max + 1` means "none up to k_max").
_NOT_RECORDED = -1


# --------------------------------------------------------------------------- estimators


def _min_samples(estimator: str, k_max_used: int) -> int:
    """Smallest `n` an estimator accepts for orders up to `k_max_used`."""
    if estimator in ("rloo",):
        return 2
    if estimator == "pkpo-loo":
        return k_max_used + 1
    if estimator in PASSK_ESTIMATORS:
        return k_max_used
    return 1


def sample_coefficients(estimator: str, rewards, k):
    """Per-sample coefficients `s_ij`, shape `(P, n)`, from sampled rewards `(P, n)` (see module doc).

    Groups lie on the last axis, as the `theory` estimators expect (one group per prompt).
    """
    n = rewards.shape[-1]
    if estimator == "reinforce":
        return rewards / n
    if estimator == "rloo":
        return theory.rloo_advantages(rewards) / n
    if estimator == "grpo":
        return theory.grpo_advantages(rewards) / n
    if estimator == "pkpo":
        return theory.pkpo_weights(rewards, k)
    if estimator == "pkpo-loo":
        return theory.pkpo_weights(rewards, k, baseline="loo")
    if estimator == "pkpo-loo-1":
        return theory.pkpo_weights(rewards, k, baseline="loo-1")
    if estimator == "grouped-passk":
        return theory.grouped_passk_advantages(rewards, k) / n
    raise ValueError(f"estimator must be one of {ESTIMATORS[1:]} for a sampled update; got {estimator!r}")


def draw_answers(bandit: SoftmaxBandit, theta, n: int, *, key):
    """Draw `n` answers per prompt from the policy: `(answers, rewards)`, both `(P, n)`.

    Inverse-CDF sampling: one uniform per answer, compared with the cumulative policy (one random
    number per draw instead of one Gumbel per draw and answer, as `jax.random.categorical` uses).
    """
    pi = bandit.policy(theta)
    cdf = jnp.cumsum(pi, axis=-1)[:, :-1]  # (P, A-1); the last edge (1) is implicit
    u = jax.random.uniform(key, (pi.shape[0], n), pi.dtype)
    answers = jnp.sum(u[..., None] >= cdf[:, None, :], axis=-1).astype(jnp.int32)
    rewards = jnp.take_along_axis(bandit.rewards, answers, axis=-1)
    return answers, rewards


def score_update(bandit: SoftmaxBandit, theta, answers, coefficients):
    """`sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)`, shape `(A, d)` (one reverse pass)."""
    coefficients = jax.lax.stop_gradient(coefficients)

    def surrogate(th):
        logp = jax.nn.log_softmax(bandit.logits(th), axis=-1)
        chosen = jnp.take_along_axis(logp, answers, axis=-1)
        return jnp.sum(bandit.prompt_weights * jnp.sum(coefficients * chosen, axis=-1))

    return jax.grad(surrogate)(theta)


def sampled_update(bandit: SoftmaxBandit, theta, *, estimator: str, k, n_samples: int, key):
    """One sampled policy-gradient update of `J_k` (or `J_1`), shape `(A, d)`.

    Draws `n_samples` answers per prompt and returns
    `sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)` with the estimator's coefficients `s_ij`.
    Its expectation is `sum_i mu_i v(p_i) grad p_i` with `v = theory.implied_prompt_weight`
    (`method=estimator`, same `k` and `n`; the normalisations agree: PKPO summed over the group,
    the others averaged).
    """
    return sampled_updates(bandit, theta, estimators=(estimator,), k=k, n_samples=n_samples, key=key)[estimator]


def sampled_updates(bandit: SoftmaxBandit, theta, *, estimators, k, n_samples: int, key) -> dict:
    """:func:`sampled_update` for several estimators on the *same* draws (common random numbers)."""
    for est in estimators:
        _check_choice("estimator", est, ESTIMATORS[1:])
    answers, rewards = draw_answers(bandit, theta, n_samples, key=key)
    return {
        est: score_update(bandit, theta, answers, sample_coefficients(est, rewards, k)) for est in estimators
    }


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


# --------------------------------------------------------------------------- the training loop


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def _direction(rule, g1, gk, *, step_size, smoothness, mixture_weight):
    """The ascent direction of one rule from flat `g1`, `gk` (see the module docstring)."""
    if rule == "pass1":
        return g1
    if rule in ("passk", "safe-k"):
        return gk
    if rule == "project":
        return theory.project_conflict(gk, g1)
    if rule == "project-safe":
        return theory.project_step_safe(gk, g1, step_size=step_size, smoothness=smoothness)
    if rule == "mixture":
        lam = theory.mixture_coefficient(gk, g1) if mixture_weight is None else mixture_weight
        return gk + lam * g1
    raise ValueError(f"rule must be one of {RULES}; got {rule!r}")  # pragma: no cover


_NEEDS_G1 = ("project", "project-safe", "mixture")


def _run(bandit, theta0, k, key, rule_index, *, rules, steps, estimator, n_samples, optimizer, learning_rate,
         mixture_weight, k_max, record_every):
    """One training run, traceable in `bandit`, `theta0`, `k`, `key` and `rule_index`.

    `rules` is a static tuple; `rule_index` picks one (`lax.switch`), so several rules are a vmap
    axis of one compiled function (under vmap every branch is evaluated and one is selected: the
    branches are a few vector operations).

    Per step, one forward evaluation at `theta` (`p` and `dp/dlogits`) feeds every reverse pass
    (`grad J_1`, the diagnostics' `J^T omega` and, when its order is known before `k*`, `grad J_k`,
    all in one matrix product) and the forward pass `a = J grad J_1`. At steps that record no
    diagnostics (`record_every > 1`), `a`, `omega` and `k*` are skipped unless the rule needs `k*`
    (`"safe-k"`).
    """
    opt = make_optimizer(optimizer, learning_rate)
    k = jnp.asarray(k, jnp.int32)
    lay = prompts_last(bandit)  # transposed once, outside the step loop
    mu = lay.prompt_weights
    smoothness = theory.softmax_smoothness_bound(bandit.feature_norm)
    sample_g1 = estimator != "exact" and any(r in _NEEDS_G1 for r in rules)
    exact = estimator == "exact"
    k_star_every_step = "safe-k" in rules
    # Without "safe-k" the order of g_k is known before k*, so grad J_k joins the first reverse pass.
    early_gk = exact and not k_star_every_step

    def is_rule(name):
        return rule_index == rules.index(name) if name in rules else jnp.zeros((), bool)

    def order_used(k_star):
        k_used = jnp.where(is_rule("safe-k"), jnp.clip(k_star - 1, 1, k), k)
        return jnp.where(is_rule("pass1"), 1, k_used)

    def gk_weights(p, k_used):
        return jax.lax.stop_gradient(mu * theory.pass_at_k_weight(p, k_used))

    def evaluate(theta, full: bool):
        """State records at `theta` (diagnostics when `full`), exact `grad J_1`, and `grad J_k`
        (exact estimator) with its order."""
        p, dlogits = success_parts(lay, theta)
        rows = [mu[None]]
        if full:
            omega = jax.lax.stop_gradient(theory.normalized_weights(p, k[None], mu))  # (1, P)
            rows.append(omega)
        if early_gk:
            k_used = order_used(k)
            rows.append(gk_weights(p, k_used)[None])
        grads = pullback(lay, dlogits, jnp.concatenate(rows))
        g1 = grads[0]
        k_star = None
        if full or k_star_every_step:
            a = pushforward(lay, dlogits, g1)
            k_star = theory.critical_k_jax(p, a, mu, k_max=k_max)
        if full:
            d = assemble_diagnostics(p, a, g1, grads[1:2], omega, k[None], mu, k_max=k_max, k_star=k_star)
            rec = {
                "j1": d.j1,
                "jk": d.jk[0],
                "inner": d.inner[0],
                "mean_agreement": d.mean_agreement[0],
                "cos": d.cos[0],
                "k_star": d.k_star,
            }
        else:
            nan = jnp.full((), jnp.nan, p.dtype)
            rec = {
                "j1": prompt_mean(p, mu),
                "jk": prompt_mean(theory.pass_at_k(p, k), mu),
                "inner": nan,
                "mean_agreement": nan,
                "cos": nan,
                "k_star": jnp.full((), _NOT_RECORDED, jnp.int32),
            }
        if not early_gk:
            k_used = order_used(k if k_star is None else k_star)
        if early_gk:
            gk = grads[-1]
        elif exact:
            gk = pullback(lay, dlogits, gk_weights(p, k_used))
        else:
            gk = None
        return rec, g1, gk, k_used

    branches = [
        functools.partial(
            _direction, r, step_size=learning_rate, smoothness=smoothness, mixture_weight=mixture_weight
        )
        for r in rules
    ]

    def step(carry, xs):
        t, step_key = xs
        theta, opt_state = carry
        if record_every == 1:
            rec, exact_g1, gk, k_used = evaluate(theta, True)
        else:
            # `t` is not batched (the same for every sweep entry), so this is a real branch under
            # vmap: the steps between records skip the diagnostics' passes and the k* search.
            rec, exact_g1, gk, k_used = jax.lax.cond(
                t % record_every == 0,
                functools.partial(evaluate, full=True),
                functools.partial(evaluate, full=False),
                theta,
            )
        if exact:
            g1 = exact_g1
        else:
            answers, rewards = draw_answers(bandit, theta, n_samples, key=step_key)
            gk = score_update(bandit, theta, answers, sample_coefficients(estimator, rewards, k_used))
            if sample_g1:
                base = "rloo" if n_samples >= 2 else "reinforce"
                g1 = score_update(bandit, theta, answers, sample_coefficients(base, rewards, 1))
            else:
                g1 = gk  # read by no selected rule; "pass1" uses gk at k_used = 1
        flat1, flatk = g1.reshape(-1), gk.reshape(-1)
        if len(branches) == 1:
            g = branches[0](flat1, flatk)
        else:
            g = jax.lax.switch(rule_index, branches, flat1, flatk)
        g = g.reshape(theta.shape)
        updates, opt_state = opt.update(-g, opt_state, theta)  # optax minimises: ascend on g
        theta = optax.apply_updates(theta, updates)
        upd = {
            "update_inner": jnp.vdot(exact_g1, updates, precision=jax.lax.Precision.HIGHEST),
            "update_norm": jnp.linalg.norm(updates),
            "k_used": k_used,
        }
        return (theta, opt_state), (rec, upd)

    keys = jax.random.split(key, steps)
    xs = (jnp.arange(steps, dtype=jnp.int32), keys)
    (theta, _), (recs, upds) = jax.lax.scan(step, (theta0, opt.init(theta0)), xs)
    final = evaluate(theta, True)[0]
    recs = jax.tree_util.tree_map(lambda r, f: jnp.concatenate([r, f[None]], axis=0), recs, final)
    return {**recs, **upds, "theta": theta}


@functools.lru_cache(maxsize=128)
def _sweep_fn(config: tuple) -> Callable:
    """A stable (cached) per-block function for :func:`sim.sweep.sweep_map`.

    A block is one bandit with a chunk of configurations (`k`, key, rule): the configurations are
    vmapped with the bandit shared (`in_axes=None`), so each matrix product of a step covers the
    whole chunk (`(chunk * A, d) @ (d, P)`) instead of one tiny product per configuration.
    """
    run = functools.partial(_run, **dict(config))

    def entry(args):
        bandit, theta0, ks, keys, rule_indices = args
        return jax.vmap(run, in_axes=(None, None, 0, 0, 0))(bandit, theta0, ks, keys, rule_indices)

    return entry


#: Working-set target of one vectorised batch of blocks: the bytes of one `(configurations, A, P)`
#: array of a step, sized to stay in cache (measurements: `benchmarks/README.md`).
_BATCH_BYTES = 4 * 2**20
#: Fewest configurations per batch: smaller batches pay the per-operation cost of the step loop.
_BATCH_MIN_CONFIGS = 16


def sweep_batch_size(blocks_per_device: int, per_chunk: int, n_actions: int, n_prompts: int, itemsize: int):
    """Blocks vectorised together per device (for :func:`sim.sweep.sweep_map`), or None for all.

    About `_BATCH_BYTES` of `(configurations, A, P)` array per batch and at least
    `_BATCH_MIN_CONFIGS` configurations; None when that covers every block of a device.
    """
    per_block = per_chunk * n_actions * n_prompts * itemsize
    blocks = max(_BATCH_BYTES // per_block, -(-_BATCH_MIN_CONFIGS // per_chunk), 1)
    return None if blocks >= blocks_per_device else int(blocks)


def sweep_blocks(n_regimes: int, n_configs: int, n_devices: int) -> tuple[int, int]:
    """`(chunks per regime, configurations per chunk)` of :func:`train_sweep`'s blocks.

    The sweep axis of :func:`sim.sweep.sweep_map` holds `n_regimes * chunks` blocks; `chunks` is
    the smallest count that makes it a multiple of `n_devices`, so no device idles on padding
    blocks, doubled until every device holds at least two blocks (while configurations last):
    XLA's CPU backend spreads a step's loops over threads along the leading (block) axis, and a
    single block runs on one thread (`benchmarks/README.md`). Each chunk holds `ceil(n_configs / chunks)` configurations (the last ones padded
    by repeating the last configuration).
    """
    chunks = n_devices // math.gcd(n_regimes, n_devices)
    while n_regimes * chunks < 2 * n_devices and chunks < n_configs:
        chunks *= 2
    return chunks, -(-n_configs // chunks)


def _validate_common(*, steps, rules, estimator, n_samples, optimizer, learning_rate, mixture_weight, k_max, ks):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    for rule in rules:
        _check_choice("rule", rule, RULES)
    _check_choice("estimator", estimator, ESTIMATORS)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not (
        np.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive finite number; got {learning_rate!r}")
    make_optimizer(optimizer, learning_rate)
    if isinstance(optimizer, optax.GradientTransformation):
        try:
            hash(optimizer)
        except TypeError as err:
            raise TypeError("optimizer must be hashable (it is part of the compile cache key)") from err
    if mixture_weight is not None:
        if "mixture" not in rules:
            raise ValueError(f"mixture_weight applies to rule='mixture' only; got rule={rules!r}")
        if isinstance(mixture_weight, bool) or not isinstance(mixture_weight, numbers.Real) or not (
            np.isfinite(mixture_weight) and mixture_weight >= 0
        ):
            raise ValueError(f"mixture_weight must be a finite number >= 0 or None; got {mixture_weight!r}")
    if isinstance(k_max, bool) or not isinstance(k_max, numbers.Integral) or k_max < 1:
        raise ValueError(f"k_max must be a positive integer; got {k_max!r}")
    ks = np.asarray(ks)
    if ks.dtype == np.bool_ or not np.issubdtype(ks.dtype, np.integer):
        raise TypeError(f"k must be an integer or integer array; got {ks!r}")
    if ks.size == 0 or ks.min() < 1:
        raise ValueError(f"k must be >= 1; got {ks.tolist()!r}")
    if estimator == "exact":
        if n_samples is not None:
            raise ValueError(f"n_samples applies to sampled estimators only; got n_samples={n_samples!r} with estimator='exact'")
    else:
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer for estimator={estimator!r}; got {n_samples!r}")
        order = 1 if set(rules) == {"pass1"} else int(ks.max())
        need = _min_samples(estimator, order)
        if n_samples < need:
            raise ValueError(
                f"estimator={estimator!r} with k={order} needs n_samples >= {need}; got n_samples={n_samples}"
            )
    return ks.astype(np.int32)


def _config(**kw) -> tuple:
    return tuple(sorted(kw.items()))


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
    """Train one bandit from `theta0` for `steps` steps (see the module docstring).

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
        for its order). Static: a new value recompiles.

    Returns:
      A dict of numpy arrays: the state records (length `steps + 1`), the update records
      (length `steps`) and the final `theta`.
    """
    if np.ndim(k) != 0:
        raise ValueError(f"k must be a single integer for train (use train_sweep for several); got {k!r}")
    if not isinstance(bandit, SoftmaxBandit):
        raise TypeError(f"bandit must be a SoftmaxBandit; got {type(bandit).__name__}")
    out = train_sweep(
        jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], bandit),
        jnp.asarray(theta0)[None],
        ks=[k],
        keys=jnp.asarray(key)[None],
        steps=steps,
        rule=rule,
        estimator=estimator,
        n_samples=n_samples,
        optimizer=optimizer,
        learning_rate=learning_rate,
        mixture_weight=mixture_weight,
        k_max=k_max,
        record_every=record_every,
    )
    return {name: value[0, 0, 0] for name, value in out.items()}


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
      A dict of numpy arrays with leading axes `(R, K, S)` (`(n_rules, R, K, S)` when `rule` is a
      tuple): state records `(..., steps+1)`, update records `(..., steps)`, `theta`
      `(..., A, d)`.

    Layout: the `C = n_rules * K * S` configurations of each regime are cut into chunks
    (:func:`sweep_blocks`: one chunk per regime on one device); the sweep axis of
    :func:`sim.sweep.sweep_map` is the `(regime, chunk)` blocks, and inside a block the chunk's
    configurations share the bandit. Each device vectorises its blocks in batches of about 4 MiB
    of `(configurations, A, P)` array (:func:`sweep_batch_size`) and loops over the batches, so a
    large sweep's step stays in cache. Compiles once per `(block count, chunk size)` and static
    settings (see the module docstring).
    """
    if not isinstance(bandits, SoftmaxBandit):
        raise TypeError(f"bandits must be a SoftmaxBandit with a leading regime axis; got {type(bandits).__name__}")
    several = not isinstance(rule, str)
    rules = tuple(rule) if several else (rule,)
    if not rules:
        raise ValueError("rule must name at least one rule; got an empty sequence")
    if len(set(rules)) != len(rules):
        raise ValueError(f"rule must not repeat a rule; got {rules!r}")
    ks = _validate_common(
        steps=steps,
        rules=rules,
        estimator=estimator,
        n_samples=n_samples,
        optimizer=optimizer,
        learning_rate=learning_rate,
        mixture_weight=mixture_weight,
        k_max=k_max,
        ks=ks,
    ).reshape(-1)
    feats = jnp.asarray(bandits.features)
    if feats.ndim != 3:
        raise ValueError(f"bandits must carry a leading regime axis (features (R, P, d)); got shape {feats.shape}")
    n_regimes = feats.shape[0]
    theta0s = jnp.asarray(theta0s)
    expected = (n_regimes, bandits.rewards.shape[-1], feats.shape[-1])
    if theta0s.shape != expected:
        raise ValueError(f"theta0s must have shape (R, A, d) = {expected}; got shape {theta0s.shape}")
    if not jnp.issubdtype(theta0s.dtype, jnp.floating):
        raise TypeError(f"theta0s must be floating; got dtype {theta0s.dtype}")
    keys = jnp.asarray(keys)
    n_seeds = keys.shape[0] if keys.ndim >= 1 else 0
    if n_seeds < 1:
        raise ValueError(f"keys must have a leading seed axis (e.g. jax.random.split(key, S)); got shape {keys.shape}")
    if isinstance(record_every, bool) or not isinstance(record_every, numbers.Integral) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer; got {record_every!r}")
    n_k = ks.shape[0]
    # Configurations of one regime, rule-major then k then seed (the order of the result axes).
    grid = np.meshgrid(np.arange(len(rules)), np.arange(n_k), np.arange(n_seeds), indexing="ij")
    u_idx, k_idx, s_idx = (a.reshape(-1) for a in grid)
    n_configs = u_idx.size
    n_devices = len(jax.devices() if devices is None else devices)
    chunks, per_chunk = sweep_blocks(n_regimes, n_configs, n_devices)
    # Pad the configurations by repeating the last one (its results are dropped).
    pick = np.minimum(np.arange(chunks * per_chunk), n_configs - 1).reshape(chunks, per_chunk)
    r_block = np.repeat(np.arange(n_regimes), chunks)  # block b = (regime b // chunks, chunk b % chunks)
    c_block = np.tile(pick, (n_regimes, 1))  # (blocks, per_chunk) configuration indices
    args = (
        jax.tree_util.tree_map(lambda x: jnp.asarray(x)[r_block], bandits),
        theta0s[r_block],
        jnp.asarray(ks[k_idx][c_block]),
        keys[s_idx[c_block]],
        jnp.asarray(u_idx[c_block], jnp.int32),
    )
    cfg = _config(
        rules=rules,
        steps=int(steps),
        estimator=estimator,
        n_samples=None if n_samples is None else int(n_samples),
        optimizer=optimizer,
        learning_rate=float(learning_rate),
        mixture_weight=None if mixture_weight is None else float(mixture_weight),
        k_max=int(k_max),
        record_every=int(record_every),
    )
    batch = sweep_batch_size(-(-n_regimes * chunks // n_devices), per_chunk, bandits.rewards.shape[-1],
                             feats.shape[1], jnp.dtype(feats.dtype).itemsize)
    out = _sweep.sweep_map(_sweep_fn(cfg), args, devices=devices, batch_size=batch)

    def unblock(v):
        v = np.asarray(v).reshape((n_regimes, chunks * per_chunk) + v.shape[2:])[:, :n_configs]
        v = v.reshape((n_regimes, len(rules), n_k, n_seeds) + v.shape[2:])
        return np.moveaxis(v, 1, 0) if several else v[:, 0]

    return {name: unblock(v) for name, v in out.items()}
