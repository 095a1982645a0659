"""SPEC section 11 on the toy at its start, from sampled answers: prompts drawn uniformly with
replacement from the toy's population, `n` answers each with their exact score vectors, `F` folds,
and the alignments `t_ijf = <s_ij, v_f>` formed from them. Checked against the exact population
`I_k` (`theory.conflict_inner_product` at the exact `p` and agreements of the whole population):
the mean over repeats is unbiased, and the nominal 95% t intervals (`F - 1` degrees of freedom)
cover at about their level. Slow (`pytest -m slow`): hundreds of repeats."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from scipy import stats

import theory
from sim import SoftmaxBandit, scored_answers, toy_bandit

jax.config.update("jax_enable_x64", True)

pytestmark = pytest.mark.slow


def _population():
    bandit, theta = toy_bandit(jax.random.key(0), n_prompts=256)
    p = np.asarray(bandit.success(theta))
    a = np.asarray(bandit.agreement_scores(theta))
    mu = np.full(p.shape, 1.0 / p.size)
    return bandit, theta, p, a, mu


def _repeat(bandit, theta, key, *, n_prompts, n, n_folds):
    k_idx, k_ans = jax.random.split(key)
    idx = jax.random.randint(k_idx, (n_prompts,), 0, bandit.features.shape[0])
    batch = SoftmaxBandit(bandit.features[idx], bandit.rewards[idx])
    drawn = scored_answers(batch, theta, n, key=k_ans)
    r, s = np.asarray(drawn.rewards, np.float64), np.asarray(drawn.scores, np.float64)
    folds = np.arange(n_prompts) % n_folds
    g = np.einsum("pn,pnd->pd", r, s) / n
    v = np.stack([g[folds == f].mean(axis=0) for f in range(n_folds)])
    return r, np.einsum("pnd,fd->pnf", s, v), folds


# SPEC section 11's sizes; `PASSK_COVERAGE_REPEATS` overrides the repeats (more for a measurement)
_REPEATS = int(os.environ.get("PASSK_COVERAGE_REPEATS", "0"))


@pytest.mark.parametrize("n_prompts, n, n_folds, repeats", [(64, 16, 4, 400), (64, 16, 8, 400), (256, 16, 8, 400)])
def test_population_estimate_is_unbiased_and_its_intervals_cover(n_prompts, n, n_folds, repeats):
    repeats = _REPEATS or repeats
    bandit, theta, p, a, mu = _population()
    ks = np.arange(1, 9)
    exact = np.asarray(theory.conflict_inner_product(p, a, ks, mu))
    assert theory.critical_k(p, a, mu) == 6  # the toy at its start
    est, se = [], []
    for key in jax.random.split(jax.random.key(1), repeats):
        r, t, folds = _repeat(bandit, theta, key, n_prompts=n_prompts, n=n, n_folds=n_folds)
        inner = theory.population_inner_product(r, t, folds, ks)
        est.append(np.asarray(inner.estimate))
        se.append(np.asarray(inner.stderr))
    est, se = np.array(est), np.array(se)
    spread = est.std(axis=0, ddof=1)
    # unbiased: the mean over repeats within 3.5 of its standard errors of the exact I_k, at every k
    z = (est.mean(axis=0) - exact) / (spread / np.sqrt(repeats))
    assert np.all(np.abs(z) < 3.5), z
    # the jackknife standard error tracks the spread over repeats
    ratio = np.median(se, axis=0) / spread
    assert np.all((ratio > 0.75) & (ratio < 1.35)), ratio
    # nominal 95% t intervals cover within binomial error (3 sd of the repeats at 0.95)
    q = stats.t.ppf(0.975, n_folds - 1)
    covered = np.mean(np.abs(est - exact) <= q * se, axis=0)
    tolerance = 3 * np.sqrt(0.95 * 0.05 / repeats) + 0.002
    print(f"(P, n, F) = ({n_prompts}, {n}, {n_folds}), {repeats} repeats: coverage of I_4 .. I_8 {covered[3:]}")
    assert np.all(np.abs(covered[3:] - 0.95) < tolerance), covered
