"""Conflict-safe updates as optax gradient transformations (SPEC sections 5 and 8).

A pass@k run past `k*` takes steps that lower pass@1. :func:`conflict_guard` is an optax
transformation that any JAX training loop can chain: given the pass@1 gradient `g_1` (exact, or
estimated from the same batch by :func:`sampled_surrogate` with `estimator="rloo"`), it changes
the update so that pass@1 does not fall. It is built from an entry of :data:`sim.rules.RULE_TABLE`
that reads `g_1` (:data:`GUARD_RULES`), and the entry says where it sits (SPEC section 5: the test
applies to the update actually taken):

- a *step* rule (`"project-step"`, `"project-safe-step"`, `"mixture-step"`):
  `optax.chain(optimizer, conflict_guard("project-step"))`. The guard sees the update the
  optimiser will apply (`theta+ = theta + u`), so the guarantee holds for the step taken, with
  Adam, momentum or any other optimiser. The safe choice.
- a *direction* rule (`"project"`, `"project-safe"`, `"mixture"`):
  `optax.chain(conflict_guard("project"), optimizer)`. The guard sees the gradient of the loss
  the optimiser minimises (`-grad J_k`) and changes the *direction* before the optimiser rescales
  it. With plain SGD of learning rate `eta` the step is `-eta u` and the guarantee carries over
  (pass `step_size=eta` for `"project-safe"`); with Adam the applied step is `D u` and pass@1 can
  still fall (the guard then only shapes the gradient Adam sees).

The formulas (closed forms in :mod:`theory.steps`): projection `theory.project_conflict(v, g_1)`
(`<g_1, v'> >= 0`, `v' = v` when `<g_1, v> >= 0`); step-safe projection
`theory.project_step_safe(v, g_1, step_size=eta, smoothness=L_1)` (`<g_1, v'> >= (L_1 eta / 2)
||v'||^2`, so by the descent lemma pass@1 cannot fall at all; `eta = 1` for a step); mixture
`v + lambda g_1` with a fixed `lambda >= 0` or `lambda = theory.mixture_coefficient(v, g_1)`
(None: the projection).

In both positions `pass1_grad` is the ascent gradient `grad J_1` (not the loss gradient), passed
to `update` as a keyword (optax's chain forwards it): `opt.update(grads, state, params,
pass1_grad=g1)`. Pytrees are flattened (`jax.flatten_util.ravel_pytree`); the inner products are
over all parameters.

Sampled `g_1`. :func:`sampled_surrogate` with `estimator="rloo"` gives an unbiased estimate of
`grad J_1` from the same answers as the pass@k update (SPEC section 6). The guarded update is a
non-linear function of it, so its expectation is *not* the guard applied to the exact `g_1`:
the guard fires on noise when the exact `<g_1, v>` is near 0 and may miss a small conflict; the
error shrinks as the answers per prompt grow (the estimate's variance falls like `1/n`). The
pass@k and pass@1 estimates share answers and are correlated.

References: Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (projection of conflicting
gradients); SPEC sections 5 and 8.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import theory
from sim.rules import GUARD_RULES, RULE_TABLE

__all__ = ["GUARD_RULES", "GuardState", "conflict_guard", "sampled_surrogate"]

#: What a guard sees, by where its rule acts (:attr:`sim.rules.UpdateRule.acts_on`).
_SEES = {"step": "step", "direction": "loss_gradient"}


class GuardState(NamedTuple):
    """What the guard did: counts over all updates, and the last update's inner products.

    Attributes:
      count: updates seen (int32).
      guarded: updates the guard changed (int32).
      inner_before: `<g_1, v>` of the last ascent step `v` as received.
      inner_after: `<g_1, v'>` after the guard.
    """

    count: jax.Array
    guarded: jax.Array
    inner_before: jax.Array
    inner_after: jax.Array


def _positive_real(name, value, *, allow_zero=False):
    """A concrete value checked and returned as a float; a traced scalar returned as it is.

    Traced values (a guard built inside `jit` with its constant as an argument, so one compiled
    program serves every value) cannot be checked; their shape and dtype can."""
    if isinstance(value, jax.core.Tracer):
        real = jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
        if value.shape != () or not real:
            raise ValueError(
                f"{name} must be a real scalar; got a traced array of shape {value.shape} and dtype {value.dtype}"
            )
        return value
    if isinstance(value, (jax.Array, np.ndarray)) and value.shape == () and value.dtype.kind in "fiu":
        value = value.item()  # a concrete scalar array: checked like the number it holds
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def conflict_guard(
    rule: str = "project-step",
    *,
    sees: str | None = None,
    smoothness: float | None = None,
    step_size: float | None = None,
    mixture_weight: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """An optax transformation that keeps pass@1 from falling under a pass@k update.

    Args:
      rule: a rule of :data:`GUARD_RULES` (module docstring): a step rule (chained after the
        optimiser) or a direction rule (chained before it).
      sees: what the updates are, implied by the rule: `"step"` for a step rule (the steps added
        to the parameters), `"loss_gradient"` for a direction rule (the gradient of the loss
        `-J_k` the optimiser minimises). None (default) takes the rule's; another value is an
        error naming the rule that sits there.
      smoothness: `L_1 > 0`, a bound on the smoothness of `J_1` along the step (for the
        bandits `theory.softmax_smoothness_bound(B)`); required by the step-safe projections only.
      step_size: the SGD learning rate `eta > 0` that turns a guarded loss gradient into a step;
        required by `"project-safe"` only (a step is its own size).
      mixture_weight: fixed `lambda >= 0` for `"mixture"` and `"mixture-step"`, or None to
        recompute the smallest `lambda` each update (the projection).

      `smoothness`, `step_size` and `mixture_weight` may be traced scalars (the guard built
      inside a jitted function that takes them as arguments, so one compiled program serves every
      value); their values are then not checked (shape and dtype are), and they are cast to the
      dtype of the updates, as a Python number would be.

    Returns:
      A `GradientTransformationExtraArgs` whose `update(updates, state, params=None, *,
      pass1_grad, **extra)` returns the guarded updates and a :class:`GuardState`. `pass1_grad`
      is `grad J_1` with the structure of `updates`.

    Raises:
      ValueError: an unknown `rule` or `sees`, a `sees` other than the rule's, a missing or
        needless `smoothness`, `step_size`
        or `mixture_weight`, or a value that is not a positive (for `mixture_weight`,
        non-negative) finite number (a traced value: one that is not a real scalar). At update
        time: TypeError without `pass1_grad`, ValueError when its structure or size differs from
        `updates`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> opt = optax.chain(optax.adam(1e-2), conflict_guard("project-step"))
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> grads = {"w": jnp.array([1.0, 0.0, 0.0])}  # gradient of the loss -J_k
      >>> g1 = {"w": jnp.array([1.0, 1.0, 0.0])}  # grad J_1: Adam's step -0.01 e_1 would lower J_1
      >>> updates, state = opt.update(grads, state, params, pass1_grad=g1)
      >>> float(jnp.vdot(updates["w"], g1["w"])) >= 0
      True
    """
    if rule not in GUARD_RULES:
        raise ValueError(f"rule must be one of {GUARD_RULES}; got {rule!r}")
    entry = RULE_TABLE[rule]
    position = _SEES[entry.acts_on]
    if sees is None:
        sees = position
    elif sees not in _SEES.values():
        raise ValueError(f"sees must be one of {tuple(_SEES.values())}; got {sees!r}")
    elif sees != position:
        twin = [name for name, r in RULE_TABLE.items() if r.acts_on != entry.acts_on and r.transform is entry.transform]
        raise ValueError(
            f"rule {rule!r} acts on the {entry.acts_on}, so its guard sees {position!r}; got sees={sees!r}"
            + (f" (the rule that sees {sees!r} is {twin[0]!r})" if twin else "")
        )
    if entry.uses_smoothness:
        if smoothness is None:
            raise ValueError(f"smoothness (L_1 > 0) is required for rule={rule!r}; got None")
        smoothness = _positive_real("smoothness", smoothness)
        if sees == "loss_gradient":
            if step_size is None:
                raise ValueError(f"step_size (the SGD learning rate) is required for rule={rule!r}; got None")
            step_size = _positive_real("step_size", step_size)
        elif step_size is not None:
            raise ValueError(f"step_size applies to direction rules only (a step is its own size); got {step_size!r}")
        else:
            step_size = 1.0
    else:
        for name, value in (("smoothness", smoothness), ("step_size", step_size)):
            if value is not None:
                raise ValueError(
                    f"{name} applies to the step-safe projections only; got {name}={value!r} for rule={rule!r}"
                )
    if mixture_weight is not None:
        if not entry.uses_mixture_weight:
            raise ValueError(
                f"mixture_weight applies to the mixture rules only; got {mixture_weight!r} for rule={rule!r}"
            )
        mixture_weight = _positive_real("mixture_weight", mixture_weight, allow_zero=True)
    sign = 1.0 if sees == "step" else -1.0  # ascent v = sign * updates

    def like(x, dtype):
        # A Python float is weakly typed and follows the updates' dtype; a traced one is cast
        # to it so that both give the same numbers.
        return x if x is None or isinstance(x, float) else jnp.asarray(x, dtype)

    def guard(v, g1):
        return entry.apply(
            v,
            g1,
            step_size=like(step_size, v.dtype),
            smoothness=like(smoothness, v.dtype),
            mixture_weight=like(mixture_weight, v.dtype),
        )

    def init_fn(params):
        del params
        zero = jnp.zeros((), jnp.result_type(float))
        return GuardState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), zero, zero)

    def update_fn(updates, state, params=None, *, pass1_grad=None, **extra_args):
        del params, extra_args
        if pass1_grad is None:
            raise TypeError("conflict_guard's update needs pass1_grad=grad J_1 (a pytree like the updates)")
        flat, unravel = ravel_pytree(updates)
        if jax.tree_util.tree_structure(pass1_grad) != jax.tree_util.tree_structure(updates):
            raise ValueError(
                "pass1_grad must have the structure of the updates; got "
                f"{jax.tree_util.tree_structure(pass1_grad)} and {jax.tree_util.tree_structure(updates)}"
            )
        g1, _ = ravel_pytree(pass1_grad)
        if g1.shape != flat.shape:
            raise ValueError(f"pass1_grad must have the size of the updates; got {g1.shape[0]} and {flat.shape[0]}")
        g1 = g1.astype(flat.dtype)
        v = sign * flat
        guarded = guard(v, g1)
        inner_before = jnp.vdot(g1, v)
        inner_after = jnp.vdot(g1, guarded)
        changed = jnp.any(guarded != v)
        new_state = GuardState(
            count=state.count + 1,
            guarded=state.guarded + changed.astype(jnp.int32),
            inner_before=inner_before.astype(state.inner_before.dtype),
            inner_after=inner_after.astype(state.inner_after.dtype),
        )
        return unravel(sign * guarded), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sampled_surrogate(log_probs, rewards, *, estimator: str = "rloo", k=None, mu=None):
    """A scalar whose gradient is a trainer's sampled update: `sum_i mu_i sum_j s_ij log pi(y_ij|x_i)`.

    The coefficients `s_ij` are those of `theory.gradient_estimator(estimator)` on the rewards
    (held constant: `stop_gradient`), so `jax.grad` of the surrogate in the model's parameters is
    the estimator's update. With `estimator="rloo"` it is an unbiased estimate of `grad J_1`, the
    `pass1_grad` a :func:`conflict_guard` needs, from the same answers as the pass@k update (for
    example `estimator="pkpo-loo-1", k=8`).

    Args:
      log_probs: `(P, n)` log-probabilities of the sampled answers (differentiable).
      rewards: `(P, n)` their rewards (binary for `"grouped-passk"`).
      estimator: a name of `theory.ESTIMATOR_TABLE`.
      k: the pass@k order of the estimators that need one.
      mu: `(P,)` prompt weights (uniform when None).

    Returns:
      The scalar surrogate.
    """
    entry = theory.gradient_estimator(estimator)
    log_probs = jnp.asarray(log_probs)
    if log_probs.ndim != 2 or jnp.shape(rewards) != log_probs.shape:
        raise ValueError(
            f"log_probs and rewards must both have shape (P, n); got {log_probs.shape} and {jnp.shape(rewards)}"
        )
    if entry.needs_k and k is None:
        raise ValueError(f"k is required for estimator={estimator!r}; got k=None")
    mu = theory.validate.prompt_weights(mu, log_probs.shape[0], log_probs.dtype)
    coefficients = jax.lax.stop_gradient(entry.coefficients(rewards, k))
    return jnp.sum(mu * jnp.sum(coefficients * log_probs, axis=-1))
