"""Exact expectations by enumerating outcomes: the shared scaffolding of the estimator tests.

Every function here is plain numpy over explicitly listed outcomes (no closed forms from
`theory`), so a test comparing `theory` with it compares two independent computations.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np


def binary_outcomes(n: int) -> np.ndarray:
    """All `2^n` binary reward vectors of a group of `n`, shape `(2^n, n)`."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def expected_binary_update(coefficients, outcomes, p: float) -> float:
    """`E[sum_i s_i d/dp log pi(y_i)]` over all binary outcomes at success probability `p`.

    `coefficients` `(2^n, n)` are the per-sample `s_i` of each outcome; `d/dp log pi(y)` is `1/p`
    for a correct answer and `-1/(1-p)` for an incorrect one. The result is the weight `v(p)` with
    `E[update] = v(p) grad p` (SPEC section 6).
    """
    s = np.asarray(coefficients)
    n = outcomes.shape[1]
    c = outcomes.sum(axis=1)
    prob = p**c * (1 - p) ** (n - c)
    score = np.where(outcomes == 1, 1 / p, -1 / (1 - p))
    return float(np.sum(prob * np.sum(s * score, axis=1)))


def binomial_expectation(estimate, n: int, p: float) -> float:
    """`E[estimate(c)]` for `c ~ Binomial(n, p)`, exactly over `c = 0..n` (`estimate` vectorised in `c`)."""
    c = np.arange(n + 1)
    pmf = np.array([comb(n, int(j)) * p**j * (1 - p) ** (n - j) for j in c])
    return float(np.sum(pmf * np.asarray(estimate(c))))


def count_groups(n: int) -> np.ndarray:
    """Sorted binary groups `[1]*c + [0]*(n-c)` for `c = 0..n`, shape `(n+1, n)`."""
    return (np.arange(n)[None, :] < np.arange(n + 1)[:, None]).astype(np.float64)


def all_outcomes(pi, n: int):
    """Every joint outcome of `n` independent answers per prompt, with its probability.

    Args:
      pi: `(P, A)` answer probabilities of each prompt.
      n: answers per prompt.

    Returns:
      `(prob, answers)`: `(O,)` probabilities (summing to 1) and `(O, P, n)` answer indices, over
      all `O = A^(P n)` outcomes.
    """
    pi = np.asarray(pi)
    n_prompts, n_actions = pi.shape
    answers = np.array(list(itertools.product(range(n_actions), repeat=n_prompts * n))).reshape(-1, n_prompts, n)
    prob = np.prod(pi[np.arange(n_prompts)[None, :, None], answers], axis=(1, 2))
    return prob, answers


def gather_answers(table, answers):
    """`table[i, answers[..., i, j]]` for a per-prompt table `(P, A, ...)` and answers `(..., P, n)`."""
    table = np.asarray(table)
    rows = np.arange(table.shape[0])[:, None]
    return table[rows, answers]
