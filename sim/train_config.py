"""The static settings of a bandit training run (:class:`TrainConfig`) and its optimisers.

:class:`TrainConfig` is frozen and hashable (the `jit` cache key of :func:`sim.train.train` and
:func:`sim.train.train_sweep`) and validated once when built: every rule of
:data:`sim.rules.RULE_TABLE`, `"exact"` or a sampled estimator of :data:`theory.ESTIMATOR_TABLE`,
an optimiser (:func:`make_optimizer`), and the sizes of the run.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

import numpy as np
import optax

import theory
from sim import rules as _rules
from sim.answers import SAMPLED_ESTIMATORS
from sim.bandit import DEFAULT_K_MAX

__all__ = ["ESTIMATORS", "PASSK_ESTIMATORS", "TrainConfig", "make_optimizer"]

ESTIMATORS = ("exact",) + SAMPLED_ESTIMATORS
#: Estimators whose per-sample coefficients depend on `k`.
PASSK_ESTIMATORS = tuple(name for name, entry in theory.ESTIMATOR_TABLE.items() if entry.needs_k)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def _min_samples(estimator: str, k_max_used: int) -> int:
    """Smallest `n` an estimator accepts for orders up to `k_max_used` (its table entry's rule)."""
    return theory.gradient_estimator(estimator).min_samples(k_max_used)


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


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The static settings of a training run: frozen and hashable, the `jit` cache key.

    Attributes:
      steps: number of updates.
      rules: rule names (:data:`sim.rules.RULE_TABLE`, direction and step rules alike); a string
        is one rule. Several rules are one more vmap axis of :func:`sim.train.train_sweep`
        (selected inside the step by `lax.switch`).
      estimator: `"exact"` or a sampled estimator (:data:`ESTIMATORS`).
      n_samples: answers per prompt for sampled estimators (None for `"exact"`).
      optimizer: `"sgd"`, `"adam"`, `"momentum"` or a (hashable) optax transformation.
      learning_rate: step size (`eta`).
      mixture_weight: fixed `lambda` of `"mixture"` and `"mixture-step"` (None: recomputed each
        step).
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
            _check_choice("rule", rule, tuple(_rules.RULE_TABLE))
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
            if not any(_rules.RULE_TABLE[r].uses_mixture_weight for r in rules):
                mixing = tuple(name for name, r in _rules.RULE_TABLE.items() if r.uses_mixture_weight)
                raise ValueError(f"mixture_weight applies to the rules {mixing} only; got rule={rules!r}")
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
        return not self.exact and any(self.rule(r).reads_g1 for r in self.rules)

    @property
    def k_star_every_step(self) -> bool:
        """A rule's order reads `k*`, so it is searched at every step."""
        return any(self.rule(r).reads_k_star for r in self.rules)

    @property
    def has_step_rules(self) -> bool:
        """A rule acts on the optimiser's step (after the optimiser)."""
        return any(self.rule(r).acts_on == "step" for r in self.rules)

    @staticmethod
    def rule(name) -> _rules.UpdateRule:
        """The table entry of a rule."""
        return _rules.RULE_TABLE[name]

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
            order = 1 if all(self.rule(r).order == "1" for r in self.rules) else int(ks.max())
            need = _min_samples(self.estimator, order)
            if self.n_samples < need:
                raise ValueError(
                    f"estimator={self.estimator!r} with k={order} needs n_samples >= {need}; "
                    f"got n_samples={self.n_samples}"
                )
        return ks.astype(np.int32)
