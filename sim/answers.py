"""Answers sampled from a softmax bandit's policy, and the score-function updates they give.

- :func:`draw_answers`: `n` answers per prompt and their rewards, read from the bandit's table;
- :func:`sample_coefficients`: the per-sample coefficients of a sampled estimator
  (`theory.gradient_estimator`) from those rewards;
- :func:`score_update`: `sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)` in one reverse pass;
- :func:`sampled_update`, :func:`sampled_updates`: the three together, for one estimator or for
  several on the same draws;
- :func:`scored_answers`: `n` answers per prompt with their rewards and exact score vectors
  `grad_theta log pi(y | x_i) = (e_y - pi_i) psi_i^T` (closed form; `vmap` it over keys for a batch
  of runs).

The training core (:mod:`sim.train`) and the recovery study (:mod:`sim.studies.recovery`) draw
their answers here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.bandit import SoftmaxBandit

__all__ = [
    "SAMPLED_ESTIMATORS",
    "draw_answers",
    "sample_coefficients",
    "score_update",
    "sampled_update",
    "sampled_updates",
    "ScoredAnswers",
    "scored_answers",
]

#: The sampled estimators, by name (`theory.ESTIMATOR_TABLE`).
SAMPLED_ESTIMATORS = tuple(theory.ESTIMATOR_TABLE)


def _check_estimator(estimator):
    if estimator not in SAMPLED_ESTIMATORS:
        raise ValueError(f"estimator must be one of {SAMPLED_ESTIMATORS}; got {estimator!r}")


def sample_coefficients(estimator: str, rewards, k):
    """Per-sample coefficients `s_ij`, shape `(P, n)`, from sampled rewards `(P, n)`.

    `theory.gradient_estimator(estimator).coefficients(rewards, k)`: the group's advantages,
    divided by `n` for the estimators averaged over the group. Groups lie on the last axis (one
    group per prompt).
    """
    _check_estimator(estimator)
    return theory.gradient_estimator(estimator).coefficients(rewards, k)


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
        _check_estimator(est)
    answers, rewards = draw_answers(bandit, theta, n_samples, key=key)
    return {est: score_update(bandit, theta, answers, sample_coefficients(est, rewards, k)) for est in estimators}


class ScoredAnswers(NamedTuple):
    """`n` sampled answers per prompt.

    Attributes:
      answers: `(P, n)` answer indices.
      rewards: `(P, n)` their rewards.
      scores: `(P, n, A * d)` exact score vectors `grad_theta log pi(y_ij | x_i)`, flattened.
    """

    answers: jax.Array
    rewards: jax.Array
    scores: jax.Array


def scored_answers(bandit: SoftmaxBandit, theta, n: int, *, key) -> ScoredAnswers:
    """Draw `n` answers per prompt with their exact score vectors (SPEC section 10).

    For the multinomial-logistic policy `logits_i = theta psi_i`,
    `d log pi(y | x_i) / d theta = (e_y - pi_i) psi_i^T` (an `(A, d)` matrix per answer).

    Args:
      bandit: the policy's bandit.
      theta: `(A, d)` parameters.
      n: answers per prompt (a Python int `>= 1`).
      key: a `jax.random` key (keyword-only).

    Returns:
      :class:`ScoredAnswers`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (answers per prompt) must be a positive integer; got {n!r}")
    answers, rewards = draw_answers(bandit, theta, int(n), key=key)
    pi = bandit.policy(theta)  # (P, A)
    onehot = jax.nn.one_hot(answers, bandit.n_actions, dtype=pi.dtype)  # (P, n, A)
    scores = (onehot - pi[:, None, :])[..., None] * bandit.features[:, None, None, :]  # (P, n, A, d)
    return ScoredAnswers(answers, rewards, scores.reshape(scores.shape[:2] + (-1,)))
