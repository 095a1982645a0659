"""The toy conflict bandit: structure, documented start, default k*, diagnostics for the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from sim import TOY_DEFAULTS, hard_mask, toy_bandit, toy_diagnostics, toy_start


def test_structure():
    b, theta0 = toy_bandit(jax.random.PRNGKey(0), n_prompts=400, p_hard=0.3, separation=2.0, n_actions=5)
    assert b.features.shape == (400, 2) and b.rewards.shape == (400, 5) and theta0.shape == (5, 2)
    np.testing.assert_array_equal(b.features[:, 0], 1.0)
    hard = np.asarray(hard_mask(b))
    # one correct answer per prompt; easy and hard prompts want different answers
    np.testing.assert_array_equal(np.asarray(b.rewards).sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.asarray(b.rewards)[hard, 1], 1.0)
    np.testing.assert_array_equal(np.asarray(b.rewards)[~hard, 0], 1.0)
    assert 0.2 < hard.mean() < 0.4
    s = np.asarray(b.features[:, 1])
    assert abs(s[hard].mean() + 1.0) < 0.25 and abs(s[~hard].mean() - 1.0) < 0.2
    assert abs(s[~hard].std() - 1.0) < 0.15
    np.testing.assert_array_equal(theta0, toy_start(5))
    assert toy_bandit(jax.random.PRNGKey(0), p_hard=0.0)[0].rewards[:, 1].sum() == 0
    assert toy_bandit(jax.random.PRNGKey(0), p_hard=1.0)[0].rewards[:, 0].sum() == 0


def test_start_solves_easy_not_hard():
    b, theta0 = toy_bandit(jax.random.PRNGKey(1))
    p = np.asarray(b.success(theta0))
    hard = np.asarray(hard_mask(b))
    assert p[~hard].min() > 0.6 and p[hard].max() < 0.1


def test_defaults_show_conflict_with_k_star_in_range():
    """The documented defaults give 4 <= k* <= 64 for every key tried."""
    keys = jax.random.split(jax.random.PRNGKey(2024), 8)

    @jax.jit
    def k_star(key):
        b, theta0 = toy_bandit(key)
        return b.diagnostics(theta0, 1, k_max=4096).k_star

    ks = np.asarray(jax.vmap(k_star)(keys))
    assert ks.min() >= 4 and ks.max() <= 64, ks
    # the conflict comes from negatively interfering hard prompts
    b, theta0 = toy_bandit(keys[0])
    a = np.asarray(b.agreement_scores(theta0))
    hard = np.asarray(hard_mask(b))
    assert (a[hard] < 0).mean() > 0.5 and (a[~hard] > 0).mean() > 0.5
    assert theory.single_crossing(b.success(theta0), a)


def test_traceable_regime_parameters():
    f = jax.jit(
        jax.vmap(lambda ph, sep: toy_bandit(jax.random.PRNGKey(0), n_prompts=16, p_hard=ph, separation=sep)[0].features)
    )
    out = f(jnp.array([0.1, 0.9]), jnp.array([0.0, 3.0]))
    assert out.shape == (2, 16, 2)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(p_hard=1.5), ValueError),
        (dict(p_hard=-0.1), ValueError),
        (dict(separation=-1.0), ValueError),
        (dict(separation=float("nan")), ValueError),
        (dict(n_actions=1), ValueError),
        (dict(n_prompts=0), ValueError),
        (dict(n_prompts=3.0), TypeError),
        (dict(p_hard="x"), TypeError),
    ],
)
def test_validation(kwargs, err):
    with pytest.raises(err, match=next(iter(kwargs))):
        toy_bandit(jax.random.PRNGKey(0), **kwargs)


def test_toy_diagnostics_json():
    res = toy_diagnostics(TOY_DEFAULTS["p_hard"], TOY_DEFAULTS["separation"], 16, n_prompts=64)
    json.dumps(res, allow_nan=False)
    assert res["k"] == 16 and 16 in res["curves"]["ks"]
    k_star = res["k_star"]
    assert k_star is not None and 2 <= k_star <= 64
    idx = res["curves"]["ks"].index(16)
    assert res["conflict"] == (res["curves"]["mean_agreement"][idx] < 0) == (16 >= k_star)
    assert res["safe_k"] == k_star - 1
    assert res["groups"]["hard"]["mean_p"] < res["groups"]["easy"]["mean_p"]
    with pytest.raises(ValueError, match="k"):
        toy_diagnostics(0.2, 1.0, 0)


def test_default_key_is_the_toy_figures():
    """`toy_diagnostics` without a key draws the figure's bandit (seed 0), which `passk toy` also reports."""
    from sim.toy import TOY_FIGURE_K, toy_figure_key

    default = toy_diagnostics(n_prompts=64)
    assert default == toy_diagnostics(n_prompts=64, k=TOY_FIGURE_K, key=toy_figure_key(jax.random.key(0)))
    assert default["k"] == TOY_FIGURE_K
    assert default["regime"] == dict(TOY_DEFAULTS, n_prompts=64)
    # the fold matters: the run's key itself draws other prompts
    unfolded = toy_diagnostics(n_prompts=64, key=jax.random.key(0))
    assert default["prompts"]["p"] != unfolded["prompts"]["p"]
