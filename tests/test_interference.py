"""SPEC sections 3 and 4: prompt interference, agreement scores, the conflict identity, cosines."""

from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from enumeration import all_outcomes, gather_answers
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import (
    answer_scores,
    interfering_policy,
    pass1,
    passk,
    per_prompt_grads,
    random_agreements,
    random_policy,
    success,
)

import theory

getcontext().prec = 50

seeds = st.integers(0, 2**32 - 1)
SHAPES = [(5, 3, 2), (8, 4, 3)]  # (P, A, d): a few fixed shapes, so JAX compiles each once
shapes = st.sampled_from(SHAPES)

# Autodiff of the reference J_1 and J_k, compiled once per shape (k traced, not one compile per k).
_grad_j1 = jax.jit(jax.grad(pass1))
_grad_jk = jax.jit(jax.grad(passk))


@given(seed=seeds, shape=shapes)
def test_agreement_matches_explicit_kernel(seed, shape):
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = random_policy(rng, *shape)
    g = per_prompt_grads(theta, feats, rewards).reshape(shape[0], -1)
    kernel = g @ g.T  # kappa(x_i, x_j), formed here only as the reference
    np.testing.assert_allclose(theory.agreement_scores(g, mu), kernel @ mu, rtol=1e-10, atol=1e-14)


@given(seed=seeds, shape=shapes)
def test_agreement_mu_sum_is_grad_j1_sq_norm(seed, shape):
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = random_policy(rng, *shape)
    a = theory.agreement_scores(per_prompt_grads(theta, feats, rewards), mu)
    g1 = jax.grad(pass1)(theta, feats, rewards, mu)
    np.testing.assert_allclose(mu @ a, jnp.vdot(g1, g1), rtol=1e-10, atol=1e-15)


@given(seed=seeds)
def test_kernel_is_first_order_change_of_other_prompt(seed):
    """A step along grad p(x) changes p(x') by eta kappa(x', x) to first order."""
    rng = np.random.default_rng(seed)
    theta, feats, rewards, _ = random_policy(rng, 4, 3, 2)
    g = per_prompt_grads(theta, feats, rewards)
    kernel = np.einsum("iad,jad->ij", g, g)
    base = success(theta, feats, rewards)
    errs = []
    for eta in (1e-3, 5e-4):
        moved = success(theta + eta * g[0], feats, rewards)
        errs.append(np.max(np.abs((moved - base) - eta * kernel[:, 0])))
    # second-order remainder: halving eta divides the error by about 4
    assert errs[1] <= errs[0] / 3 + 1e-15


@given(seed=seeds)
def test_negatively_interfering_prompt_alone_lowers_pass1(seed):
    """A step along `grad p(x_i)` with `a_i < 0` lowers `J_1`: at `eta = |a_i| / (L_1 ||g_i||^2)`,
    half the smoothness window, by at least `a_i^2 / (2 L_1 ||g_i||^2)`."""
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = interfering_policy(rng, 6, 3, 2)  # built with a_0 < 0
    g = per_prompt_grads(theta, feats, rewards)
    a = np.asarray(theory.agreement_scores(g, mu))
    i = int(np.argmin(a))
    assert a[i] <= a[0] < 0
    smoothness = float(theory.softmax_smoothness_bound(float(jnp.max(jnp.linalg.norm(feats, axis=1)))))
    sq = float(jnp.vdot(g[i], g[i]))
    eta = abs(a[i]) / (smoothness * sq)
    guaranteed = a[i] ** 2 / (2 * smoothness * sq)
    before = float(pass1(theta, feats, rewards, mu))
    after = float(pass1(theta + eta * g[i], feats, rewards, mu))
    # J_1 is a sum of terms of size 1: below ~1e-15 the decrease is lost to rounding
    assert after - before <= -guaranteed + 1e-14


@given(seed=seeds, shape=shapes, k=st.integers(1, 64))
def test_conflict_identity_against_per_prompt_grads(seed, shape, k):
    """I_k = sum mu w_k a = <grad J_k, grad J_1> = E_mu[w_k] ||grad J_1||^2 + Cov_mu(w_k, a)."""
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = random_policy(rng, *shape)
    p = success(theta, feats, rewards)
    a = theory.agreement_scores(per_prompt_grads(theta, feats, rewards), mu)
    g1 = _grad_j1(theta, feats, rewards, mu)
    gk = _grad_jk(theta, feats, rewards, mu, k)
    inner = float(theory.conflict_inner_product(p, a, k, mu))
    scale = float(jnp.linalg.norm(gk) * jnp.linalg.norm(g1)) + 1e-300
    assert abs(inner - float(jnp.vdot(gk, g1))) <= 1e-10 * scale
    w = theory.pass_at_k_weight(p, k)
    mean_w = mu @ w
    cov = mu @ ((w - mean_w) * (a - mu @ a))
    first = float(mean_w * jnp.vdot(g1, g1))
    # the two terms can nearly cancel: the tolerance scales with their size
    assert abs(inner - (first + float(cov))) <= 1e-10 * (scale + abs(first) + abs(float(cov)))


@given(seed=seeds, k=st.integers(1, 10**4))
def test_conflict_iff_weighted_mean_agreement_negative(seed, k):
    p, a, mu = random_agreements(np.random.default_rng(seed), 7)
    inner = float(theory.conflict_inner_product(p, a, k, mu))
    mean_agreement = float(theory.weighted_mean_agreement(p, a, k, mu))
    norm = float(mu @ theory.pass_at_k_weight(p, k))
    if norm > 1e-250:
        np.testing.assert_allclose(mean_agreement, inner / norm, rtol=1e-9, atol=1e-300)
    if inner != 0:
        assert np.sign(inner) == np.sign(mean_agreement)


@given(seed=seeds, shape=shapes)
def test_no_conflict_at_k_equal_1(seed, shape):
    """`I_1 = ||grad J_1||^2` (autodiff of the reference `J_1`), so never negative."""
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = random_policy(rng, *shape)
    p = success(theta, feats, rewards)
    a = theory.agreement_scores(per_prompt_grads(theta, feats, rewards), mu)
    g1 = jax.grad(pass1)(theta, feats, rewards, mu)
    np.testing.assert_allclose(
        float(theory.conflict_inner_product(p, a, 1, mu)), float(jnp.vdot(g1, g1)), rtol=1e-10, atol=1e-16
    )


@given(seed=seeds, k=st.integers(1, 10**6))
def test_conflict_needs_a_negatively_interfering_prompt(seed, k):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=6)
    a = np.abs(rng.normal(size=6))  # every prompt agrees
    assert float(theory.weighted_mean_agreement(p, a, k)) >= 0
    assert float(theory.conflict_inner_product(p, a, k)) >= 0
    assert theory.critical_k(p, a) is None


def test_many_hard_prompts_are_not_enough_for_conflict():
    """Ninety hard prompts whose gradients all point the same way as the easy ones: no conflict."""
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.0, 0.05, 90), rng.uniform(0.9, 1.0, 10)])
    direction = rng.normal(size=5)
    grads = np.abs(rng.normal(size=(100, 1))) * direction  # every kappa > 0
    a = theory.agreement_scores(grads)
    assert np.all(np.asarray(a) > 0)
    ks = np.array([1, 2, 8, 64, 1024, 10**6])
    assert np.all(np.asarray(theory.weighted_mean_agreement(p, a, ks)) > 0)
    assert theory.critical_k(p, a) is None


@given(seed=seeds, shape=shapes, k=st.integers(1, 400))
def test_cosine_against_explicit_gradients(seed, shape, k):
    rng = np.random.default_rng(seed)
    theta, feats, rewards, mu = random_policy(rng, *shape)
    p = success(theta, feats, rewards)
    grads = per_prompt_grads(theta, feats, rewards)
    g1 = _grad_j1(theta, feats, rewards, mu)
    gk = _grad_jk(theta, feats, rewards, mu, k)
    norms = float(jnp.linalg.norm(gk) * jnp.linalg.norm(g1))
    assume(norms >= 1e-200)  # no angle to compare (every prompt solved or flat): 40 of 40 drawn kept
    expected = float(jnp.vdot(gk, g1)) / norms
    np.testing.assert_allclose(theory.gradient_cosine(grads, p, k, mu), expected, rtol=1e-8, atol=1e-10)
    inner = theory.conflict_inner_product(p, theory.agreement_scores(grads, mu), k, mu)
    assert np.sign(float(theory.gradient_cosine(grads, p, k, mu))) == np.sign(float(inner)) or abs(expected) < 1e-10


@given(seed=seeds)
def test_large_k_direction_tends_to_hardest_prompts(seed):
    rng = np.random.default_rng(seed)
    p = np.array([0.05, 0.05, 0.4, 0.7, 0.9])
    mu = rng.dirichlet(np.ones(5))
    grads = rng.normal(size=(5, 4))
    hardest = mu[:2] @ grads[:2]  # mu-weighted gradient of the smallest-p prompts
    omega = theory.normalized_weights(p, 10**4, mu)
    gk = omega @ grads
    cos = float(gk @ hardest / (np.linalg.norm(gk) * np.linalg.norm(hardest)))
    assert cos > 1 - 1e-12


@given(seed=seeds)
def test_large_k_sign_rule(seed):
    """Conflict for all large k iff the smallest-p non-zero total agreement is negative."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 0.95, size=8), 2)  # ties happen: totals are merged
    p[rng.integers(8)] = 1.0  # a solved prompt drops out for k >= 2
    a = rng.normal(size=8)
    mu = rng.dirichlet(np.ones(8))
    rule = theory.asymptotic_conflict(p, a, mu)
    values = np.unique(p[p < 1])
    gap = np.min(np.diff(-np.log1p(-values))) if values.size > 1 else 1.0
    k_big = int(min(10**6, 200 / gap + 2))
    sign_at_big_k = float(theory.weighted_mean_agreement(p, a, k_big, mu)) < 0
    assert rule == sign_at_big_k


def test_inner_product_underflows_but_weighted_mean_agreement_does_not():
    """All p >= 0.6 at k = 800: I_k underflows to 0, A_k keeps its value (checked in 50 digits)."""
    p = np.array([0.6, 0.75, 0.9])
    a = np.array([-2.0, 1.0, 3.0])
    k = 800
    assert float(theory.conflict_inner_product(p, a, k)) == 0.0
    got = float(theory.weighted_mean_agreement(p, a, k))
    logs = [Decimal(k).ln() + (k - 1) * (1 - Decimal(float(x))).ln() for x in p]
    weights = [lw.exp() for lw in logs]
    exact = sum(w * Decimal(float(ai)) for w, ai in zip(weights, a)) / sum(weights)
    assert abs(Decimal(got) - exact) <= Decimal("1e-12") * abs(exact)
    assert got < 0


def test_sampled_agreement_scores_unbiased_by_enumeration():
    """Exact expectation over every joint outcome: unbiased; the naive self term is biased."""
    rng = np.random.default_rng(3)
    n_prompts, n_actions, n = 2, 3, 2
    theta, feats, rewards, mu = random_policy(rng, n_prompts, n_actions, 2)
    pi = jax.nn.softmax(feats @ theta.T, axis=-1)
    exact = theory.agreement_scores(per_prompt_grads(theta, feats, rewards), mu)
    prob, answers = all_outcomes(pi, n)
    r = gather_answers(rewards, answers)  # (O, P, n)
    s = gather_answers(answer_scores(theta, feats), answers)  # (O, P, n, A d)
    expected = prob @ np.asarray(jax.vmap(lambda rr, ss: theory.sampled_agreement_scores(rr, ss, mu))(r, s))
    g = np.einsum("opn,opnd->opd", r, s) / n
    naive = prob @ np.einsum("opd,q,oqd->op", g, np.asarray(mu), g)
    np.testing.assert_allclose(expected, exact, rtol=1e-10, atol=1e-14)
    assert np.max(np.abs(naive - np.asarray(exact))) > 1e-4


def test_agreement_and_cosine_work_under_jit_and_vmap():
    rng = np.random.default_rng(1)
    grads = jnp.asarray(rng.normal(size=(3, 6, 4)))
    p = jnp.asarray(rng.uniform(size=(3, 6)))
    a = jax.vmap(theory.agreement_scores)(grads)
    np.testing.assert_allclose(a[1], theory.agreement_scores(grads[1]), rtol=1e-12)
    cos = jax.jit(jax.vmap(lambda g, q: theory.gradient_cosine(g, q, jnp.arange(1, 5))))(grads, p)
    assert cos.shape == (3, 4)
    inner = jax.jit(theory.conflict_inner_product)(p, a, jnp.arange(1, 4))
    assert inner.shape == (3, 3)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: theory.conflict_inner_product([0.1, 0.2], [1.0], 2), ValueError, "same shape"),
        (lambda: theory.conflict_inner_product([0.1, 1.2], [1.0, 2.0], 2), ValueError, r"p must lie in \[0, 1\].*1\.2"),
        (lambda: theory.weighted_mean_agreement([0.1, 0.2], [1.0, np.nan], 2), ValueError, "agreement must be finite"),
        (lambda: theory.weighted_mean_agreement([0.1, 0.2], [1.0, 1.0], 0), ValueError, "k must be >= 1"),
        (lambda: theory.agreement_scores(np.ones((2, 3)), mu=[0.5, 0.6]), ValueError, "mu must sum to 1"),
        (lambda: theory.gradient_cosine(np.ones((2, 3)), [0.5, 0.5, 0.5], 2), ValueError, "leading axis of length 2"),
        (lambda: theory.conflict_inner_product([0.1, 0.2], [1.0, 2.0], 1.5), TypeError, "k must be an integer"),
        (
            lambda: theory.conflict_inner_product([0.1, 0.2], [1.0, 2.0], None),
            TypeError,
            "k must be an integer; got None",
        ),
        (
            lambda: theory.weighted_mean_agreement([0.1, 0.2], [1.0, 2.0], None),
            TypeError,
            "k must be an integer; got None",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_safe_cosine_is_the_cosine_and_zero_without_an_angle():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 7))
    cos = theory.safe_cosine(a @ b, np.linalg.norm(a) * np.linalg.norm(b))
    assert float(cos) == pytest.approx(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-14)
    assert float(theory.safe_cosine(0.0, 0.0)) == 0.0
    grad = jax.grad(lambda parts: theory.safe_cosine(parts[0], parts[1]))(jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(grad)))
