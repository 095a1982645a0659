"""The table of policy-gradient estimators: one entry per trainer (SPEC section 6).

A trainer draws `n` answers to a prompt, gives answer `i` an advantage `A_i` from the group's
rewards, and updates along `sum_i s_i grad log pi(y_i|x)` with per-sample coefficients

    s_i = A_i        (`summed`: the PKPO variants, whose weights are already a sum over the group)
    s_i = A_i / n    (the others: the update averaged over the group).

Each :class:`GradientEstimator` records what every part of the toolkit needs to know about one
trainer, and nothing is known about a trainer anywhere else:

- `advantages(rewards, k)`: the `A_i` (a :mod:`theory.estimators` function; REINFORCE is `r_i`);
  :meth:`~GradientEstimator.coefficients` turns them into the `s_i` above;
- the order rule: whether `k` applies, and the largest `k` for a group of `n`
  (:meth:`~GradientEstimator.max_k`: `n`, or `n - 1` for the leave-one-out baseline);
- the implied prompt weight (:mod:`theory.implied`): with binary rewards the expected update is
  `v(p) grad p`, `v(p) = sum_{c'} Binom(c'; n-1, p) h(c')`, with the *contrast*
  `h(c') = n (s_1(c'+1) - s_0(c'))` (`s_1(c)`, `s_0(c)` the coefficients of a correct and an
  incorrect answer in a group with `c` correct), given in closed count form by `contrast`, and
  its `n -> infinity` limit by `limit`.

Adding a trainer is adding one entry to :data:`ESTIMATOR_TABLE`: `theory.implied`, the bandits'
sampled training (`sim.train`), the transformer's trainer and the tests' shared invariants
(`tests/test_estimator_table.py`, which checks `contrast` against `advantages` on every count)
all read it.

Example:
  >>> import numpy as np
  >>> rloo = gradient_estimator("rloo")
  >>> np.asarray(rloo.coefficients(np.array([1.0, 0.0, 0.0]), None))  # A_i / n
  array([ 0.33333333, -0.16666667, -0.16666667])
  >>> gradient_estimator("pkpo-loo").max_k(8)
  7
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable

import jax.numpy as jnp

from theory.binomial import log_binomial_ratio
from theory.estimators import (
    grouped_count_advantages,
    grouped_passk_advantages,
    grpo_advantages,
    grpo_count_advantages,
    pkpo_weights,
    rloo_advantages,
)
from theory.weights import k_times_exp, log_one_minus_p_power, pass_at_k, pass_at_k_weight

__all__ = ["GradientEstimator", "ESTIMATOR_TABLE", "gradient_estimator"]


@dataclasses.dataclass(frozen=True)
class GradientEstimator:
    """One trainer's estimator: advantages, normalisation, order rule and implied weight.

    Attributes:
      name: the trainer's name (the key of :data:`ESTIMATOR_TABLE`).
      advantages: `(rewards (..., n), k) -> A (..., n)`; `k` is ignored when not `needs_k`.
      summed: True when the update is `sum_i A_i grad log pi(y_i)`, False when it is the mean
        `(1/n) sum_i A_i grad log pi(y_i)`.
      needs_k: whether the estimator has a pass@k order `k`.
      k_offset: `k <= n - k_offset` (1 for a leave-one-out baseline over `k`-subsets, else 0).
      min_n: the smallest group the advantages are defined on.
      binary_only: True when the advantages are defined for binary rewards only.
      contrast: `(c', k, n, dtype) -> h(c') = n (s_1(c'+1) - s_0(c'))` for integer arrays `c'`
        in `[0, n-1]` and `k` (broadcast), or None when `h = 1` for every `c'` (then the implied
        weight is exactly 1 at every `n`).
      limit: `(p, k) -> v(p)` as `n -> infinity`.
      reference: where the estimator comes from.

    Final: entries are values, compared and hashed by their fields.
    """

    name: str
    advantages: Callable
    summed: bool
    needs_k: bool
    k_offset: int
    min_n: int
    binary_only: bool
    contrast: Callable | None
    limit: Callable
    reference: str

    def coefficients(self, rewards, k):
        """Per-sample coefficients `s_i` (`A_i`, or `A_i / n` when not `summed`), shape of `rewards`.

        Args:
          rewards: rewards with the group of `n` answers on the last axis.
          k: the pass@k order (scalar or broadcasting against the batch axes) for the estimators
            that need one; ignored otherwise.
        """
        adv = self.advantages(rewards, k)
        return adv if self.summed else adv / jnp.shape(adv)[-1]

    def max_k(self, n: int) -> int | None:
        """The largest `k` allowed for a group of `n` (`n - k_offset`), None when `k` does not apply."""
        return n - self.k_offset if self.needs_k else None

    def min_samples(self, k: int) -> int:
        """The smallest group size for order `k` (`k` ignored when it does not apply)."""
        return max(self.min_n, k + self.k_offset) if self.needs_k else self.min_n

    @property
    def k_bound(self) -> str:
        """The order rule as text: `"n"` or `"n-1"`."""
        return "n" if self.k_offset == 0 else f"n-{self.k_offset}"

    def check_k(self, k_largest: int, n: int) -> None:
        """Raise ValueError naming `k`, `n` and the estimator when `k_largest > max_k(n)`."""
        limit = self.max_k(n)
        if limit is not None and k_largest > limit:
            raise ValueError(
                f"k must be <= {self.k_bound} = {limit} for method={self.name!r} at n={n}; got k={k_largest}"
            )


# --------------------------------------------------------------------------------------------
# Contrasts `h(c') = n (s_1(c'+1) - s_0(c'))` in count form, and limits
# --------------------------------------------------------------------------------------------


def _grpo_contrast(others, k, n, dtype):
    correct, _ = grpo_count_advantages(n, others + 1, dtype)
    _, incorrect = grpo_count_advantages(n, others, dtype)
    return correct - incorrect


def _grouped_contrast(others, k, n, dtype):
    correct, _, _ = grouped_count_advantages(n, others + 1, k, dtype)
    _, incorrect, _ = grouped_count_advantages(n, others, k, dtype)
    return correct - incorrect


def _pkpo_contrast(others, k, n, dtype):
    # n (s_correct - s_incorrect) = n (k/n) (1 - rho(n-1, c', k-1)); a leave-one-out baseline
    # depends on the other answers only (the same c' for both), so it cancels from the contrast.
    return k_times_exp(k.astype(dtype), log_binomial_ratio(n - 1, others, k - 1, dtype))


def _pkpo_loo_1_contrast(others, k, n, dtype):
    # n s_correct(c'+1) = n C(n-c'-1, k-1)/C(n,k); incorrect answers get exactly 0.
    kf = k.astype(dtype)
    ratio = jnp.exp(log_binomial_ratio(n, others + 1, k - 1, dtype))  # C(.,k-1)/C(n,k-1)
    return n * ratio * kf / (n - kf + 1)  # C(n,k-1)/C(n,k) = k/(n-k+1)


def _one(p, k):
    return jnp.ones_like(p)


def _grpo_limit(p, k):
    return 1.0 / jnp.sqrt(p * (1 - p))  # +inf at p in {0, 1}


def _grouped_limit(p, k):
    # (1-p)^(k-1) / sqrt(P_k (1-P_k)) = (1-p)^(k/2-1) / sqrt(P_k): log space keeps p = 1
    # (0/0 in the first form) and p = 0 (1/0) free of NaN.
    log_head = log_one_minus_p_power(p, k.astype(p.dtype) / 2 - 1)
    return jnp.exp(log_head - 0.5 * jnp.log(pass_at_k(p, k)))


def _reinforce(rewards, k):
    return jnp.asarray(rewards)


_PKPO = "Walder & Karkhanis 2025, Pass@K Policy Optimization"

ESTIMATOR_TABLE = types.MappingProxyType(
    {
        entry.name: entry
        for entry in (
            GradientEstimator(
                "reinforce",
                _reinforce,
                summed=False,
                needs_k=False,
                k_offset=0,
                min_n=1,
                binary_only=False,
                contrast=None,
                limit=_one,
                reference="Williams 1992 (A_i = r_i)",
            ),
            GradientEstimator(
                "rloo",
                lambda r, k: rloo_advantages(r),
                summed=False,
                needs_k=False,
                k_offset=0,
                min_n=2,
                binary_only=False,
                contrast=None,
                limit=_one,
                reference="Kool et al. 2019; Ahmadian et al. 2024",
            ),
            GradientEstimator(
                "grpo",
                lambda r, k: grpo_advantages(r),
                summed=False,
                needs_k=False,
                k_offset=0,
                min_n=1,
                binary_only=False,
                contrast=_grpo_contrast,
                limit=_grpo_limit,
                reference="Shao et al. 2024",
            ),
            GradientEstimator(
                "pkpo",
                lambda r, k: pkpo_weights(r, k),
                summed=True,
                needs_k=True,
                k_offset=0,
                min_n=1,
                binary_only=False,
                contrast=_pkpo_contrast,
                limit=pass_at_k_weight,
                reference=_PKPO,
            ),
            GradientEstimator(
                "pkpo-loo",
                lambda r, k: pkpo_weights(r, k, baseline="loo"),
                summed=True,
                needs_k=True,
                k_offset=1,
                min_n=2,
                binary_only=False,
                contrast=_pkpo_contrast,
                limit=pass_at_k_weight,
                reference=_PKPO + " (leave-one-out baseline)",
            ),
            GradientEstimator(
                "pkpo-loo-1",
                lambda r, k: pkpo_weights(r, k, baseline="loo-1"),
                summed=True,
                needs_k=True,
                k_offset=0,
                min_n=1,
                binary_only=False,
                contrast=_pkpo_loo_1_contrast,
                limit=pass_at_k_weight,
                reference=_PKPO + " (k-1 subset baseline)",
            ),
            GradientEstimator(
                "grouped-passk",
                grouped_passk_advantages,
                summed=False,
                needs_k=True,
                k_offset=0,
                min_n=1,
                binary_only=True,
                contrast=_grouped_contrast,
                limit=_grouped_limit,
                reference="Chen et al. 2025, Pass@k Training",
            ),
        )
    }
)
"""Every gradient estimator by name (read-only)."""


def gradient_estimator(name) -> GradientEstimator:
    """The :data:`ESTIMATOR_TABLE` entry `name`; ValueError naming the known names otherwise."""
    if not isinstance(name, str) or name not in ESTIMATOR_TABLE:
        raise ValueError(f"method must be one of {tuple(ESTIMATOR_TABLE)}; got {name!r}")
    return ESTIMATOR_TABLE[name]
