"""The section 11 probe on a model with explicit scores: a linear-softmax policy whose
`s_ij = grad log pi(y_ij | x_i)` is written out by hand (tests/reference.py), so the probe's
autodiff is compared with an independent computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from sim.probe import fold_probe
from tests import reference

jax.config.update("jax_enable_x64", True)


def _log_prob(theta, batch):
    features, answers = batch
    logp = reference.log_policy(theta, features)  # (P', A)
    return jnp.take_along_axis(logp, answers, axis=1)  # (P', n)


def _case(seed, n_prompts=8, n=5, n_actions=4, dim=3, n_folds=4):
    rng = np.random.default_rng(seed)
    theta, features, table, _ = reference.random_policy(rng, n_prompts, n_actions, dim)
    answers = rng.integers(0, n_actions, size=(n_prompts, n))
    rewards = np.take_along_axis(np.asarray(table), answers, axis=1)
    folds = rng.permutation(np.arange(n_prompts) % n_folds)
    mask = np.ones((n_prompts, n), bool)
    mask[0, -1] = False
    return theta, features, answers, rewards, folds, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_alignments_equal_explicit_scores_along_fold_gradients(seed):
    theta, features, answers, rewards, folds, mask = _case(seed)
    probe = fold_probe(_log_prob, theta, (features, answers), rewards, folds, mask=mask)
    scores = np.asarray(reference.answer_scores(theta, features))  # (P, A, A, d): s(x_i, a)
    s = scores[np.arange(len(folds))[:, None], answers].reshape(len(folds), answers.shape[1], -1)
    counts = mask.sum(axis=1)
    g = np.einsum("pn,pnd->pd", rewards * mask, s) / counts[:, None]
    n_folds = int(folds.max()) + 1
    v = np.stack([g[folds == f].mean(axis=0) for f in range(n_folds)])
    np.testing.assert_allclose(np.asarray(probe.fold_gradients).reshape(n_folds, -1), v, rtol=1e-10, atol=1e-13)
    expected = np.einsum("pnd,fd->pnf", s, v)
    own = np.arange(n_folds)[None, None, :] == folds[:, None, None]
    got = np.asarray(probe.alignments)
    assert np.all(np.isnan(got[own.repeat(answers.shape[1], axis=1)]))
    assert np.all(np.isnan(got[~mask]))
    keep = ~own & mask[:, :, None]
    np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-10, atol=1e-13)
    # and the estimator reads the log as it is (own fold null)
    inner = theory.population_inner_product(rewards, got, folds, np.arange(1, 5), mask=mask)
    assert np.all(np.isfinite(np.asarray(inner.estimate)))


def test_unequal_folds_are_refused():
    theta, features, answers, rewards, _, _ = _case(0)
    with pytest.raises(ValueError, match="equal size"):
        fold_probe(_log_prob, theta, (features, answers), rewards, np.array([0, 0, 0, 1, 1, 2, 2, 3]))


def test_the_probe_runs_inside_jit_with_traced_rewards():
    theta, features, answers, rewards, folds, mask = _case(3)
    eager = fold_probe(_log_prob, theta, (features, answers), rewards, folds, mask=mask)
    jitted = jax.jit(lambda th, b, r: fold_probe(_log_prob, th, b, r, folds, mask=mask).alignments)
    np.testing.assert_allclose(
        np.asarray(jitted(theta, (features, answers), rewards)), np.asarray(eager.alignments), rtol=1e-12, atol=1e-14
    )
