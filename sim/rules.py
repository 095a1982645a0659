"""Update rules: one table, read by the bandit trainer, the transformer trainer and the optax guards
(SPEC sections 5 and 8; closed forms in :mod:`theory.steps`).

A step of pass@k training ascends a vector `v` built from the gradient estimates `g_1` (of `J_1`)
and `g_k` (of `J_k`). A rule changes `v` either *before* the optimiser (it acts on the ascent
*direction* `g`, which the optimiser turns into the step `u = D g`) or *after* it (it acts on the
*step* `u` the optimiser produced, the update actually added to the parameters). With plain SGD of
learning rate `eta` the two positions agree (`u = eta g`, and every formula below is positively
homogeneous given the step size); with Adam or momentum they differ (SPEC section 5: the test
applies to the update actually taken), so they have different names:

=====================  =========  ======  =====================================================
rule                   acts on    reads   `v'` from `v` (`v = g_1` for "pass1", else `g_k'`)
=====================  =========  ======  =====================================================
`"pass1"`              direction  1       `g_1`
`"passk"`              direction  k       `g_k`
`"project"`            direction  k, 1    `theory.project_conflict(g_k, g_1)`
`"project-safe"`       direction  k, 1    `theory.project_step_safe(g_k, g_1, step_size=eta,
                                          smoothness=L_1)`: exact for SGD of step `eta`
`"mixture"`            direction  k, 1    `g_k + lambda g_1`, `lambda` fixed (the objective
                                          `J_k + lambda J_1`) or `theory.mixture_coefficient`
`"safe-k"`             direction  k*->k'  `g_k'`, `k' = min(k, k* - 1)` (at least 1), `k*` at the
                                          current parameters
`"project-step"`       step       k, 1    `theory.project_conflict(u, g_1)`: `<g_1, u'> >= 0`
                                          for the update taken, whatever the optimiser
`"project-safe-step"`  step       k, 1    `theory.project_step_safe(u, g_1, step_size=1,
                                          smoothness=L_1)`: by the descent lemma pass@1 cannot
                                          fall along the step taken
`"mixture-step"`       step       k, 1    `u + lambda g_1` (a fixed `lambda` is in units of the
                                          step: `lambda_step = eta lambda` gives "mixture" under
                                          SGD), or `theory.mixture_coefficient(u, g_1)`
=====================  =========  ======  =====================================================

"reads" names the orders of the gradients a rule reads: `k` (`g_k`), `1` (`g_1`), or `k*->k'`
(the order of `g_k` moves with `k*`, searched at every step where the rule runs).

Each entry is an :class:`UpdateRule`; :data:`RULE_TABLE` maps names to entries; a new rule is
one entry (its `transform` a pure function of flat vectors). :func:`sim.train.train`,
:func:`sim.transformer.train.finetune` and :func:`sim.guards.conflict_guard` look rules up here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

import theory

__all__ = ["ACTS_ON", "ORDERS", "RULES", "RULE_TABLE", "UpdateRule", "GUARD_RULES", "order_below_k_star", "update_rule"]

#: Where a rule acts: on the ascent direction before the optimiser, or on the step after it.
ACTS_ON = ("direction", "step")
#: The order of the gradient a rule ascends: `g_1`, `g_k`, or `g_k'` with `k' = min(k, k* - 1)`.
ORDERS = ("1", "k", "k'")


def _ascent(v, g1, *, step_size, smoothness, mixture_weight):
    """`v' = v`."""
    return v


def _project(v, g1, *, step_size, smoothness, mixture_weight):
    """`v' = v - min(0, <v, g_1>) g_1 / ||g_1||^2` (:func:`theory.project_conflict`)."""
    return theory.project_conflict(v, g1)


def _project_safe(v, g1, *, step_size, smoothness, mixture_weight):
    """The closest `v'` to `v` with `<v', g_1> >= (L_1 eta / 2) ||v'||^2` (:func:`theory.project_step_safe`)."""
    return theory.project_step_safe(v, g1, step_size=step_size, smoothness=smoothness)


def _mixture(v, g1, *, step_size, smoothness, mixture_weight):
    """`v' = v + lambda g_1`: `lambda = mixture_weight`, or :func:`theory.mixture_coefficient` when None."""
    lam = theory.mixture_coefficient(v, g1) if mixture_weight is None else mixture_weight
    return v + lam * g1


@dataclasses.dataclass(frozen=True)
class UpdateRule:
    """One update rule.

    Attributes:
      name: the rule's name (its key in :data:`RULE_TABLE`).
      formula: the formula, as text (the module docstring's table).
      transform: `(v, g1, *, step_size, smoothness, mixture_weight) -> v'` on flat vectors: `v` is
        the direction (`acts_on="direction"`) or the step (`"step"`), `g1` the pass@1 gradient.
        `step_size` is the SGD learning rate for a direction and 1 for a step; `smoothness` is
        `L_1`; `mixture_weight` a fixed `lambda` or None.
      acts_on: `"direction"` (before the optimiser) or `"step"` (after it).
      order: which gradient `v` starts from: `"1"` (`g_1`), `"k"` (`g_k`) or `"k'"` (`g_k'`,
        `k' = min(k, k* - 1)`, at least 1).
      reads_g1: whether `transform` reads `g_1` (a sampled trainer then estimates it too).
      uses_smoothness: whether `transform` reads `smoothness` (it is then required).
      uses_mixture_weight: whether `transform` reads `mixture_weight` (it may then be given).
      guards: whether it promises `<g_1, v'> >= 0` whatever `v` (a conflict-safe rule; with a
        smoothness constant, the descent-lemma bound `<g_1, v'> >= (L_1 eta / 2) ||v'||^2`).
      keeps_unconflicted: whether it promises `v' = v` when `<g_1, v> >= 0` (the mixture weight
        left to the rule).
    """

    name: str
    formula: str
    transform: Callable
    acts_on: str = "direction"
    order: str = "k"
    reads_g1: bool = False
    uses_smoothness: bool = False
    uses_mixture_weight: bool = False
    guards: bool = False
    keeps_unconflicted: bool = False

    def __post_init__(self):
        if self.acts_on not in ACTS_ON:
            raise ValueError(f"acts_on must be one of {ACTS_ON}; got {self.acts_on!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}; got {self.order!r}")
        if self.order == "1" and self.reads_g1:
            raise ValueError(f"rule {self.name!r}: a rule that ascends g_1 (order '1') has no second gradient to read")

    @property
    def reads(self) -> str:
        """The orders it reads, as in the module docstring: `"1"`, `"k"`, `"k*->k'"`, `"k, 1"`."""
        base = {"1": "1", "k": "k", "k'": "k*->k'"}[self.order]
        return f"{base}, 1" if self.reads_g1 else base

    @property
    def reads_k_star(self) -> bool:
        """Its order reads `k*` (then searched at every step)."""
        return self.order == "k'"

    def order_of(self, k, k_star):
        """The order of the gradient it ascends, from the run's `k` and the current `k*`
        (`k_max + 1` for none; read only when :attr:`reads_k_star`)."""
        if self.order == "1":
            return jnp.ones_like(k)
        if self.order == "k":
            return k
        return order_below_k_star(k, k_star)

    def apply(self, v, g1, *, step_size=1.0, smoothness=None, mixture_weight=None):
        """`v'` from `v` (flat vectors); see :attr:`transform`."""
        return self.transform(v, g1, step_size=step_size, smoothness=smoothness, mixture_weight=mixture_weight)


def order_below_k_star(k, k_star):
    """`k' = min(k, k* - 1)`, at least 1: the largest order below `k*` (SPEC section 8, safe `k`);
    `k` when `k* = k_max + 1` (no conflict up to `k_max >= k`)."""
    return jnp.clip(k_star - 1, 1, k).astype(jnp.asarray(k).dtype)


def _entries(*rules):
    return {rule.name: rule for rule in rules}


#: The update rules by name (module docstring).
RULE_TABLE: dict[str, UpdateRule] = _entries(
    UpdateRule("pass1", "g_1", _ascent, order="1"),
    UpdateRule("passk", "g_k", _ascent),
    UpdateRule("project", "project_conflict(g_k, g_1)", _project, reads_g1=True, guards=True, keeps_unconflicted=True),
    UpdateRule(
        "project-safe",
        "project_step_safe(g_k, g_1, step_size=eta, smoothness=L_1)",
        _project_safe,
        reads_g1=True,
        uses_smoothness=True,
        guards=True,
    ),
    UpdateRule(
        "mixture",
        "g_k + lambda g_1",
        _mixture,
        reads_g1=True,
        uses_mixture_weight=True,
        guards=True,
        keeps_unconflicted=True,
    ),
    UpdateRule("safe-k", "g_k', k' = min(k, k* - 1)", _ascent, order="k'"),
    UpdateRule(
        "project-step",
        "project_conflict(u, g_1)",
        _project,
        acts_on="step",
        reads_g1=True,
        guards=True,
        keeps_unconflicted=True,
    ),
    UpdateRule(
        "project-safe-step",
        "project_step_safe(u, g_1, step_size=1, smoothness=L_1)",
        _project_safe,
        acts_on="step",
        reads_g1=True,
        uses_smoothness=True,
        guards=True,
    ),
    UpdateRule(
        "mixture-step",
        "u + lambda g_1",
        _mixture,
        acts_on="step",
        reads_g1=True,
        uses_mixture_weight=True,
        guards=True,
        keeps_unconflicted=True,
    ),
)
RULES = tuple(RULE_TABLE)
#: The rules that change `v` with `g_1` (those :func:`sim.guards.conflict_guard` builds).
GUARD_RULES = tuple(name for name, rule in RULE_TABLE.items() if rule.reads_g1)


def update_rule(name) -> UpdateRule:
    """The entry of `name`; ValueError naming the rules when there is none."""
    if not isinstance(name, str) or name not in RULE_TABLE:
        raise ValueError(f"rule must be one of {tuple(RULE_TABLE)}; got {name!r}")
    return RULE_TABLE[name]
