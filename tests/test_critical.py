"""SPEC section 4: the critical k, single crossing, the two-group closed form, large k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import random_agreements, realizable_gradients

import theory

seeds = st.integers(0, 2**32 - 1)
K_SCAN = 3000
KS = np.arange(1, K_SCAN + 1)


def first_conflict_by_scan(p, a, mu):
    """Reference: scan every k up to K_SCAN with the underflow-free mean agreement."""
    neg = np.nonzero(np.asarray(theory.weighted_mean_agreement(p, a, KS, mu)) < 0)[0]
    return None if neg.size == 0 else int(KS[neg[0]])


@given(seed=seeds)
def test_critical_k_matches_exhaustive_scan(seed):
    p, a, mu = random_agreements(np.random.default_rng(seed), 6)
    assert theory.critical_k(p, a, mu, k_max=K_SCAN) == first_conflict_by_scan(p, a, mu)


@given(seed=seeds)
def test_critical_k_is_first_negative_inner_product_of_realised_gradients(seed):
    """k* from (p, a) equals the first k where <grad J_k, grad J_1> < 0 for explicit gradients."""
    rng = np.random.default_rng(seed)
    p = np.sort(rng.uniform(0.01, 0.99, size=5))
    a = np.concatenate([-rng.uniform(0.1, 2, 2), rng.uniform(0.1, 2, 3)])
    mu = rng.dirichlet(np.ones(5))
    # realisable needs sum mu a > 0: shrink the negative agreements until the positive ones
    # outweigh them twice (drawn so, not filtered: every example asserts)
    pull, push = -(mu[:2] @ a[:2]), mu[2:] @ a[2:]
    a[:2] *= min(1.0, push / (2 * pull))
    assert mu @ a >= push / 2 * (1 - 1e-12) > 0
    grads = realizable_gradients(rng, a, mu, dim=7)
    g1 = mu @ grads
    weights = np.asarray(theory.pass_at_k_weight(p, np.arange(1, 400)[:, None]))  # (k, prompt)
    inner = (mu * weights) @ grads @ g1
    neg = np.nonzero(inner < 0)[0]
    expected = None if neg.size == 0 else int(neg[0]) + 1
    assert theory.critical_k(p, theory.agreement_scores(grads, mu), mu, k_max=399) == expected


def test_critical_k_jax_sentinel_and_vmap():
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.uniform(size=(16, 5)))
    a = jnp.asarray(rng.normal(size=(16, 5)))
    batched = jax.jit(jax.vmap(lambda q, b: theory.critical_k_jax(q, b, k_max=500)))(p, a)
    for i in range(16):
        single = theory.critical_k(p[i], a[i], k_max=500)
        assert int(batched[i]) == (501 if single is None else single)
    none = theory.critical_k_jax(jnp.array([0.2, 0.8]), jnp.array([1.0, 1.0]), k_max=50)
    assert int(none) == 51


def ordered_single_crossing_instance(rng, n):
    """Agreements negative on the hardest prompts, positive on the rest (one sign change)."""
    p = np.sort(rng.uniform(0.0, 0.98, size=n))
    n_neg = rng.integers(1, n)
    a = np.concatenate([-rng.uniform(0.01, 3, n_neg), rng.uniform(0.01, 3, n - n_neg)])
    mu = rng.dirichlet(np.ones(n))
    return p, a, mu


@given(seed=seeds, n=st.sampled_from([3, 6]))
def test_single_crossing_theorem(seed, n):
    """One sign change, negative on the hardest: the conflict set is exactly {k >= k*}."""
    rng = np.random.default_rng(seed)
    p, a, mu = ordered_single_crossing_instance(rng, n)
    assert theory.single_crossing(p, a, mu)
    conflict = np.asarray(theory.weighted_mean_agreement(p, a, KS, mu)) < 0
    k_star = theory.critical_k(p, a, mu, k_max=K_SCAN)
    if k_star is None:
        assert not conflict.any()
    else:
        assert not conflict[: k_star - 1].any() and conflict[k_star - 1 :].all()


@given(seed=seeds)
def test_descartes_bound_on_sign_changes(seed):
    """I_k changes sign at most as often as mu a, ordered by increasing p (equal p merged)."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(size=7), 1)  # ties exercise the merging
    a = rng.normal(size=7)
    mu = rng.dirichlet(np.ones(7))
    signs = np.sign(np.asarray(theory.weighted_mean_agreement(p, a, KS, mu)))
    signs = signs[signs != 0]
    observed = int(np.count_nonzero(signs[1:] != signs[:-1]))
    assert observed <= theory.conflict_sign_changes(p, a, mu)


def test_inner_product_can_cross_twice():
    """When the condition fails, I_k can be negative only on a middle range of k."""
    p = np.array([0.01, 0.3, 0.9])
    a = np.array([0.1, -1.0, 1.0]) * 3  # (+, -, +) by increasing p
    mu = np.full(3, 1 / 3)
    assert not theory.single_crossing(p, a, mu)
    conflict = np.asarray(theory.weighted_mean_agreement(p, a, KS, mu)) < 0
    k_star = theory.critical_k(p, a, mu, k_max=K_SCAN)
    assert k_star == 2 and conflict[1]
    assert not conflict[0] and not conflict[-1]  # no conflict at k = 1 nor at large k
    changes = np.count_nonzero(conflict[1:] != conflict[:-1])
    assert changes == 2
    assert theory.asymptotic_conflict(p, a, mu) is False
    # and it is realisable by gradients with exactly these agreements
    grads = realizable_gradients(np.random.default_rng(0), a, mu, dim=5)
    np.testing.assert_allclose(theory.agreement_scores(grads, mu), a, rtol=1e-10)


@given(seed=seeds)
def test_critical_k_exact_with_several_crossings(seed):
    """Instances with up to 4 coefficient sign changes: still the first negative k."""
    rng = np.random.default_rng(seed)
    p = np.sort(rng.uniform(0, 0.9, size=5))
    a = rng.normal(size=5) * np.array([1, -1, 1, -1, 1])
    mu = np.full(5, 0.2)
    assert theory.critical_k(p, a, mu, k_max=K_SCAN) == first_conflict_by_scan(p, a, mu)


@given(
    q=st.floats(0.01, 0.99),
    p_hard=st.floats(0.0, 0.9),
    gap=st.floats(0.01, 1.0),
    a_hard=st.floats(0.01, 10.0),
    a_easy=st.floats(0.01, 10.0),
)
def test_two_group_closed_form_matches_exhaustive_scan(q, p_hard, gap, a_hard, a_easy):
    p_easy = p_hard + gap * (1 - p_hard)
    assume(p_easy > p_hard)
    x = theory.two_group_conflict_threshold(q, p_hard, -a_hard, p_easy, a_easy)
    assume(x < K_SCAN - 1 and (not np.isfinite(x) or abs(x - round(x)) > 1e-7))  # ties: rounding decides
    k_star = theory.two_group_critical_k(q, p_hard, -a_hard, p_easy, a_easy)
    p = np.array([p_hard, p_easy])
    a = np.array([-a_hard, a_easy])
    mu = np.array([q, 1 - q])
    assert k_star == first_conflict_by_scan(p, a, mu)
    assert k_star == theory.critical_k(p, a, mu, k_max=K_SCAN)
    assert k_star == (1 if x < 1 else int(np.floor(x)) + 1)  # x = -inf: p_easy = 1, hard group wins at k = 1


def test_two_group_easy_group_solved():
    # p_easy = 1: its weight vanishes for k >= 2, so k* = 2 unless the hard group wins at k = 1
    assert theory.two_group_critical_k(0.2, 0.3, -1.0, 1.0, 1.0) == 2
    assert theory.two_group_critical_k(0.9, 0.3, -1.0, 1.0, 1.0) == 1


@given(k_target=st.integers(10, 10**6 - 10), seed=seeds)
def test_critical_k_at_extreme_k(k_target, seed):
    """k* near 10^6 (p near 0): the search is exact without scanning, and agrees with the
    closed form."""
    rng = np.random.default_rng(seed)
    p_hard = 1e-9
    p_easy = float(rng.uniform(1e-6, 1e-5))
    q = 0.5
    # choose a_easy so that the threshold sits at k_target - 0.5
    log_gap = np.log1p(-p_hard) - np.log1p(-p_easy)
    a_easy = float(np.exp((k_target - 1.5) * log_gap))
    k_star = theory.two_group_critical_k(q, p_hard, -1.0, p_easy, a_easy)
    got = theory.critical_k([p_hard, p_easy], [-1.0, a_easy], [q, 1 - q], k_max=10**6)
    assert got == k_star
    assert abs(got - k_target) <= 1


@given(seed=seeds, spread=st.sampled_from([0.0, 1e-9, 1e-6, 1e-3]))
def test_critical_k_with_tied_and_nearly_tied_success(seed, spread):
    """Equal or nearly equal p with agreements of both signs: f(t) nearly cancels everywhere."""
    rng = np.random.default_rng(seed)
    p = np.clip(0.25 + spread * rng.normal(size=64), 0, 1)
    a = rng.normal(size=64)
    a += rng.choice([-0.02, 0.02]) - a.mean()
    assert theory.critical_k(p, a, k_max=K_SCAN) == first_conflict_by_scan(p, a, None)
    if spread == 0.0:
        assert theory.critical_k(p, a, k_max=10**6) == (1 if a.mean() < 0 else None)


def test_critical_k_with_solved_and_unsolvable_prompts():
    # p = 1 drops out for k >= 2; p = 0 has the largest weight; equal p merge
    p = np.array([0.0, 0.0, 0.5, 1.0])
    a = np.array([-1.0, 0.5, 2.0, 5.0])
    assert theory.critical_k(p, a) == first_conflict_by_scan(p, a, None)
    assert theory.critical_k(np.ones(3), np.array([-1.0, 2.0, 3.0])) is None


def test_safe_k():
    assert theory.safe_k(5, 100) == 4
    assert theory.safe_k(None, 100) == 100
    assert theory.safe_k(1, 100) == 0


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: theory.critical_k([0.1, 0.2], [1.0, 2.0], k_max=0), ValueError, "k_max must be >= 1"),
        (lambda: theory.critical_k([0.1, 0.2], [1.0, 2.0], k_max=2.5), TypeError, "k_max must be an integer"),
        (lambda: theory.critical_k([0.1, 0.2], [1.0], k_max=5), ValueError, "same shape"),
        (lambda: theory.critical_k([[0.1, 0.2]], [[1.0, 2.0]]), ValueError, r"shape \(P,\)"),
        (lambda: theory.two_group_critical_k(1.2, 0.1, -1, 0.5, 1), ValueError, "q .* must lie in"),
        (lambda: theory.two_group_critical_k(0.5, 0.6, -1, 0.5, 1), ValueError, "p_hard < p_easy"),
        (lambda: theory.two_group_critical_k(0.5, 0.1, 1, 0.5, 1), ValueError, "a_hard must be negative"),
        (lambda: theory.two_group_critical_k(0.5, 0.1, -1, 0.5, "x"), TypeError, "a_easy must be a real"),
        (lambda: theory.safe_k(0, 10), ValueError, "k_star must be >= 1"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
