"""SPEC section 6: sampled estimators (unbiased pass@k, PKPO weights, group-normalised advantages).

Exact checks enumerate all `2^n` binary outcomes (or all `m^n` outcomes of an `m`-answer policy
with continuous rewards), or compare with exact rationals (`fractions.Fraction`, `math.comb`).
Shapes are kept to a few fixed ones: JAX compiles once per shape.
"""

import itertools
import warnings
from fractions import Fraction
from math import comb

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from enumeration import binary_outcomes, binomial_expectation, count_groups, expected_binary_update  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from theory.binomial import pass_at_k_from_counts  # noqa: E402
from theory.estimators import (  # noqa: E402
    grouped_passk_advantages,
    grpo_advantages,
    pass_at_k_unbiased,
    pass_at_k_weight_unbiased,
    pkpo_weights,
    rloo_advantages,
)
from theory.pkpo_engine import (  # noqa: E402
    _COUNT_MAX_N,
    _count_sorted,
    _exclusive_suffix_sum,
    max_at_k_coefficients,
    sort_rewards,
)
from theory.weights import pass_at_k_weight  # noqa: E402

ENUM_N = 5  # group size of the exhaustive 2^n enumerations (one compiled shape)
RTOL_EXACT = 1e-10  # SPEC: relative error against exact rationals
BASELINES = [None, "loo", "loo-1"]
BASELINE_IDS = ["no-baseline", "loo", "loo-1"]


# ------------------------------------------------------------------------------------------
# Exact references
# ------------------------------------------------------------------------------------------


def exact_rho(n, c, k) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


_TINY = Fraction(float(np.finfo(np.float64).tiny))


def rel_err(value: float, exact: Fraction) -> float:
    """Relative error against an exact rational. Below the normal float64 range (exact values
    such as C(n-c, k-1)/C(n, k-1) ~ 1e-400) a float cannot carry relative precision and XLA on
    CPU flushes to 0: any value below the smallest normal counts as exact there, and a larger
    one as wrong by its size relative to the smallest normal."""
    if abs(exact) < _TINY:
        return 0.0 if abs(Fraction(value)) < _TINY else float(abs(Fraction(value) - exact) / _TINY)
    return float(abs(Fraction(value) - exact) / abs(exact))


def subsets_max_weights(r, k):
    """Brute force `s_i = (1/C(n,k)) sum_{|S|=k, i in S} max_S r`."""
    n = len(r)
    s = np.zeros(n)
    for subset in itertools.combinations(range(n), k):
        top = max(r[j] for j in subset)
        for i in subset:
            s[i] += top
    return s / comb(n, k)


def brute_force_pkpo(r, k, baseline):
    """PKPO weights from their subset definitions (no closed forms)."""
    r = list(r)
    n = len(r)
    s = subsets_max_weights(r, k)
    if baseline is None:
        return s
    out = np.zeros(n)
    for i in range(n):
        others = r[:i] + r[i + 1 :]
        if baseline == "loo":
            # mean of the weights recomputed on the group without sample i
            out[i] = s[i] - np.mean(subsets_max_weights(others, k))
        else:
            # k-1 baseline: in every subset {i} + T, max of the subset replaced by max T
            total = sum(max(T, default=0.0) for T in itertools.combinations(others, k - 1))
            out[i] = s[i] - total / comb(n, k)
    return out


# ------------------------------------------------------------------------------------------
# Unbiased pass@k rho(n, c, k)
# ------------------------------------------------------------------------------------------


@st.composite
def counts(draw, n_max=10**4):
    n = draw(st.integers(1, n_max))
    # Bias c and k towards the extremes (near 0 and near n), where accuracy is hardest.
    near = st.one_of(st.integers(0, min(3, n)), st.integers(max(0, n - 3), n), st.integers(0, n))
    c = draw(near)
    k = draw(near.filter(lambda v: v >= 1))
    return n, c, k


@settings(max_examples=40)
@given(counts())
def test_rho_matches_exact_rationals_up_to_n_1e4(nck):
    n, c, k = nck
    value = float(pass_at_k_unbiased(n, c, k))
    assert rel_err(value, exact_rho(n, c, k)) < RTOL_EXACT


def test_rho_vectorised_extremes_match_exact_rationals():
    n = 10**4
    cases = [(n, c, k) for c in (0, 1, 2, 5000, n - 2, n - 1, n) for k in (1, 2, 3, 77, 5000, n - 1, n)]
    cases += [(1, 0, 1), (1, 1, 1), (2, 1, 1), (137, 60, 61)]
    ns, cs, ks = (np.array(v) for v in zip(*cases))
    values = np.asarray(pass_at_k_unbiased(ns, cs, ks))
    for (n_, c_, k_), v in zip(cases, values):
        assert rel_err(float(v), exact_rho(n_, c_, k_)) < RTOL_EXACT, (n_, c_, k_, v)


def test_rho_5_2_1_is_two_fifths_to_4_ulp():
    # 1 - C(3,1)/C(5,1) = 2/5: the term log(1 - 2/5) falls where XLA's float64 log1p on CPU is
    # off by up to about 130 ulp; the binomial ratio must not go through it there.
    assert abs(float(pass_at_k_unbiased(5, 2, 1)) - 0.4) <= 4 * np.spacing(0.4)


GRID_N = 32
# Worst relative error measured over every (n, c, k) with 1 <= k <= n <= 60 (76k points): rho
# 2.64 eps, the weight estimator 0.99 eps x (4 + |log(exact / k)|) (exp of a log-sum carries the
# sum's absolute error as relative error). Before the log1p threshold moved from 1/2 to 1/4 the
# same grid gave 88.9 eps and 17.8 eps x (4 + |log(exact / k)|).
GRID_RHO_EPS = 4.0
GRID_WEIGHT_EPS = 1.5


def test_rho_and_weight_on_full_grid_match_exact_rationals():
    cases = [(n, c, k) for n in range(1, GRID_N + 1) for c in range(n + 1) for k in range(1, n + 1)]
    ns, cs, ks = (np.array(v) for v in zip(*cases))
    rho = np.asarray(pass_at_k_unbiased(ns, cs, ks))
    weight = np.asarray(pass_at_k_weight_unbiased(ns, cs, ks))
    eps = float(np.finfo(np.float64).eps)
    worst_rho = worst_weight = 0.0
    for (n, c, k), r, w in zip(cases, rho, weight):
        worst_rho = max(worst_rho, rel_err(float(r), exact_rho(n, c, k)) / eps)
        exact_w = k * Fraction(comb(n - c, k - 1), comb(n, k - 1))
        if exact_w == 0:
            assert w == 0.0, (n, c, k, w)
            continue
        scale = 4 + abs(np.log(float(exact_w / k)))
        worst_weight = max(worst_weight, rel_err(float(w), exact_w) / (eps * scale))
    assert worst_rho < GRID_RHO_EPS
    assert worst_weight < GRID_WEIGHT_EPS


def test_rho_exactly_one_when_fewer_than_k_incorrect():
    n = 50
    c = np.arange(n + 1)[:, None]
    k = np.array([1, 7, 50])[None, :]
    value = np.asarray(pass_at_k_unbiased(n, c, k))
    assert np.all(value[n - c < k] == 1.0)
    assert np.all((value >= 0.0) & (value <= 1.0))


def test_rho_internal_k_zero_is_zero():
    assert float(pass_at_k_from_counts(jnp.array(10), jnp.array(4), jnp.array(0), jnp.float64)) == 0.0
    assert float(pass_at_k_from_counts(jnp.array(10), jnp.array(10), jnp.array(0), jnp.float64)) == 0.0


@settings(max_examples=20)
@given(p=st.floats(0.0, 1.0), k=st.integers(1, 12))
def test_rho_unbiased_for_pass_at_k(p, k):
    n = 12
    expected = binomial_expectation(lambda c: pass_at_k_unbiased(n, c, k), n, p)
    assert expected == pytest.approx(1 - (1 - p) ** k, rel=1e-12, abs=1e-14)


def test_rho_under_jit_and_vmap():
    ns = jnp.array([10, 100, 10**4, 7])
    cs = jnp.array([3, 1, 9000, 7])
    ks = jnp.array([2, 100, 17, 1])
    eager = pass_at_k_unbiased(ns, cs, ks)
    jitted = jax.jit(pass_at_k_unbiased)(ns, cs, ks)
    mapped = jax.vmap(pass_at_k_unbiased)(ns, cs, ks)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), rtol=1e-15)


# ------------------------------------------------------------------------------------------
# Unbiased prompt weight k C(n-c,k-1)/C(n,k-1)
# ------------------------------------------------------------------------------------------


@settings(max_examples=25)
@given(counts())
@example((2332, 213, 2119))  # the exact weight is ~1e-400: rounds to 0 in float64
def test_weight_estimator_matches_exact_rationals(nck):
    n, c, k = nck
    k = min(k + 1, n + 1)  # k - 1 <= n is the domain
    exact = k * Fraction(comb(n - c, k - 1), comb(n, k - 1))
    assert rel_err(float(pass_at_k_weight_unbiased(n, c, k)), exact) < RTOL_EXACT


@settings(max_examples=20)
@given(p=st.floats(0.0, 1.0), k=st.integers(1, 11))
def test_weight_estimator_unbiased_for_w_k(p, k):
    n = 10
    expected = binomial_expectation(lambda c: pass_at_k_weight_unbiased(n, c, k), n, p)
    assert expected == pytest.approx(float(pass_at_k_weight(p, k)), rel=1e-12, abs=1e-14)


def test_plugin_weight_is_biased_but_estimator_is_not():
    # SPEC 2: w_k(c/n) is biased; the estimator is not (n = 4, k = 3, p = 0.5).
    n, k, p = 4, 3, 0.5
    pmf = np.array([comb(n, j) * p**n for j in range(n + 1)])
    plugin = np.sum(pmf * np.asarray(pass_at_k_weight(np.arange(n + 1) / n, k)))
    unbiased = np.sum(pmf * np.asarray(pass_at_k_weight_unbiased(n, np.arange(n + 1), k)))
    assert unbiased == pytest.approx(0.75, rel=1e-14)
    assert abs(plugin - 0.75) > 0.05


# ------------------------------------------------------------------------------------------
# PKPO per-sample weights
# ------------------------------------------------------------------------------------------


SPEC_REFERENCE = {
    None: [Fraction(1, 2), Fraction(1, 2), Fraction(1, 3), Fraction(1, 3)],
    "loo": [Fraction(1, 18), Fraction(1, 18), Fraction(-1, 3), Fraction(-1, 3)],
    "loo-1": [Fraction(1, 3), Fraction(1, 3), Fraction(0), Fraction(0)],
}


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
def test_pkpo_spec_reference_values_n4_c2_k2(baseline):
    got = np.asarray(pkpo_weights(np.array([1.0, 1.0, 0.0, 0.0]), 2, baseline=baseline))
    np.testing.assert_allclose(got, [float(v) for v in SPEC_REFERENCE[baseline]], rtol=1e-15, atol=1e-16)
    # the same values whatever the order of the group
    got = np.asarray(pkpo_weights(np.array([0.0, 1.0, 0.0, 1.0]), 2, baseline=baseline))
    np.testing.assert_allclose(got, [float(SPEC_REFERENCE[baseline][i]) for i in (2, 0, 2, 0)], rtol=1e-15, atol=1e-16)


def test_pkpo_no_baseline_binary_count_form():
    # correct k/n, incorrect (k/n) rho(n-1, c, k-1), for every c and k at n = 9.
    n = 9
    groups = count_groups(n)
    for k in range(1, n + 1):
        s = np.asarray(pkpo_weights(groups, k))
        for c in range(n + 1):
            if c:
                assert s[c, 0] == pytest.approx(k / n, rel=1e-15)
            if c < n:
                want = k / n * float(exact_rho(n - 1, c, k - 1))
                assert s[c, -1] == pytest.approx(want, rel=1e-13, abs=1e-16)


def test_pkpo_k_minus_1_baseline_binary_count_form():
    # correct C(n-c,k-1)/C(n,k), incorrect exactly 0.
    n = 9
    groups = count_groups(n)
    for k in range(1, n + 1):
        s = np.asarray(pkpo_weights(groups, k, baseline="loo-1"))
        for c in range(n + 1):
            assert np.all(s[c, c:] == 0.0)
            if c:
                want = comb(n - c, k - 1) / comb(n, k)
                assert s[c, 0] == pytest.approx(want, rel=1e-13, abs=1e-300)


rewards_6 = st.lists(st.sampled_from([0.0, 0.25, 0.3, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0), min_size=6, max_size=6)


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
@settings(max_examples=15)
@given(r=rewards_6, k=st.integers(1, 6))
def test_pkpo_continuous_max_at_k_matches_subset_enumeration(baseline, r, k):
    if baseline == "loo" and k > 5:
        k = 5
    got = np.asarray(pkpo_weights(np.array(r), k, baseline=baseline))
    np.testing.assert_allclose(got, brute_force_pkpo(r, k, baseline), rtol=1e-12, atol=1e-14)


def test_spec_ties_need_no_rule_holds_only_up_to_rounding():
    # SPEC 6 says ties need no rule. In exact arithmetic that is Pascal's rule
    # (C(i-1,k-1) + C(i-1,k-2) = C(i,k-1)); in floating point the formula evaluated at each sorted
    # position gives tied samples weights that differ in the last bit. pkpo_weights reads every
    # tied sample's weight at one position of its tie run, so ties are bit-for-bit equal.
    r = np.array([0.3, 0.3, 0.7, 0.7, 1.0, 1.0])
    a, b = max_at_k_coefficients(6, jnp.asarray(2), jnp.float64)
    raw = np.asarray(a * r + _exclusive_suffix_sum(b * r))
    assert raw[0] != raw[1]
    assert raw[0] == pytest.approx(raw[1], rel=1e-15)
    for k in range(1, 7):
        s = np.asarray(pkpo_weights(r, k))
        assert s[0] == s[1] and s[2] == s[3] and s[4] == s[5]


def test_pkpo_k_minus_1_baseline_is_positive_part_form():
    # Derived form of the continuous k-1 baseline: s_i = (1/C(n,k)) sum_T (r_i - max T)_+.
    rng = np.random.default_rng(3)
    r = rng.uniform(size=6).round(2)
    for k in range(1, 7):
        want = [
            sum(max(r[i] - max(T, default=0.0), 0.0) for T in itertools.combinations(np.delete(r, i), k - 1))
            / comb(6, k)
            for i in range(6)
        ]
        got = np.asarray(pkpo_weights(r, k, baseline="loo-1"))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
def test_pkpo_unbiased_by_enumeration_of_binary_outcomes(baseline):
    # SPEC check: E over all 2^n outcomes of sum_i s_i d/dp log pi(y_i) = d/dp (1-(1-p)^k).
    outcomes = binary_outcomes(ENUM_N)
    for k in range(1, ENUM_N + (0 if baseline == "loo" else 1)):
        s = pkpo_weights(outcomes, k, baseline=baseline)
        for p in (0.03, 0.3, 0.5, 0.8, 0.97):
            assert expected_binary_update(s, outcomes, p) == pytest.approx(
                float(pass_at_k_weight(p, k)), rel=1e-12, abs=1e-14
            )


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
def test_pkpo_continuous_unbiased_for_max_at_k_by_enumeration(baseline):
    # A 4-answer softmax policy with rewards [0, 0.4, 0.4, 1] (ties included): enumerate all
    # 4^5 groups; the expected update equals grad E[max of k rewards] (by autodiff).
    values = np.array([0.0, 0.4, 0.4, 1.0])
    theta = jnp.array([0.3, -0.2, 0.5, -0.7])
    n = ENUM_N
    groups = np.array(list(itertools.product(range(4), repeat=n)))
    rewards = values[groups]
    pi = np.asarray(jax.nn.softmax(theta))
    prob = np.prod(pi[groups], axis=1)
    eye = np.eye(4)

    def expected_max(th, k):
        q = jax.nn.softmax(th)
        # distinct reward levels 0, 0.4, 1 with CDFs F; E[max] = sum_v v (F(v)^k - F(v-)^k)
        f0 = q[0]
        f1 = q[0] + q[1] + q[2]
        return 0.4 * (f1**k - f0**k) + 1.0 * (1.0 - f1**k)

    for k in range(1, n + (0 if baseline == "loo" else 1)):
        s = np.asarray(pkpo_weights(rewards, k, baseline=baseline))
        score = eye[groups] - pi  # grad_theta log pi(y) for a softmax
        update = np.einsum("o,oi,oij->j", prob, s, score)
        np.testing.assert_allclose(update, np.asarray(jax.grad(expected_max)(theta, k)), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("baseline", [None, "loo-1"], ids=["no-baseline", "loo-1"])
def test_pkpo_binary_n_1e4_matches_exact_rationals(baseline):
    n = 10**4
    cs = [1, 2, 5000, n - 2, n - 1]
    rewards = np.zeros((len(cs), n))
    for row, c in enumerate(cs):
        rewards[row, :c] = 1.0
    for k in (1, 2, 17, 5000, n - 1, n):
        s = np.asarray(pkpo_weights(rewards, k, baseline=baseline))
        for row, c in enumerate(cs):
            if baseline is None:
                want_correct = Fraction(k, n)
                want_incorrect = Fraction(k, n) * exact_rho(n - 1, c, k - 1)
            else:
                want_correct = Fraction(comb(n - c, k - 1), comb(n, k))
                want_incorrect = Fraction(0)
            for got, want in ((s[row, 0], want_correct), (s[row, -1], want_incorrect)):
                if want != 0 and want < Fraction(1, 10**300):  # below the normal float range
                    assert 0 <= got < 1e-290
                else:
                    assert rel_err(float(got), want) < RTOL_EXACT, (k, c, got, float(want))


def test_pkpo_loo_binary_n_1e4_matches_exact_rationals():
    # The leave-one-out weights are differences: compare on the scale k/n of the plain weights.
    n = 10**4
    cs = [1, 2, 5000, n - 2, n - 1]
    rewards = np.zeros((len(cs), n))
    for row, c in enumerate(cs):
        rewards[row, :c] = 1.0
    for k in (1, 2, 17, 5000, n - 1):
        s = np.asarray(pkpo_weights(rewards, k, baseline="loo"))
        scale = k / n
        for row, c in enumerate(cs):
            base = lambda cc: Fraction(k, n - 1) * exact_rho(n - 1, cc, k)  # noqa: E731
            want_correct = Fraction(k, n) - base(c - 1)
            want_incorrect = Fraction(k, n) * exact_rho(n - 1, c, k - 1) - base(c)
            assert abs(float(Fraction(float(s[row, 0])) - want_correct)) < RTOL_EXACT * scale
            assert abs(float(Fraction(float(s[row, -1])) - want_incorrect)) < RTOL_EXACT * scale


def test_pkpo_continuous_n_300_matches_exact_rationals():
    rng = np.random.default_rng(0)
    n = 300
    r = rng.uniform(size=n)
    r[:40] = 0.0
    r[40:50] = 1.0
    r[50:60] = r[60]  # a tie run
    order = np.argsort(r, kind="stable")
    rs = [Fraction(float(v)) for v in r[order]]
    for k in (1, 2, 7, 150, n - 1, n):
        total = comb(n, k)
        suffix = [Fraction(0)] * (n + 1)
        for j in range(n, 0, -1):  # 1-based j; suffix[j] = sum_{l >= j} C(l-2,k-2) r_(l)
            coef = comb(j - 2, k - 2) if j >= 2 and k >= 2 else 0
            suffix[j - 1] = suffix[j] + coef * rs[j - 1]
        exact_sorted = [(comb(i - 1, k - 1) * rs[i - 1] + suffix[i]) / total for i in range(1, n + 1)]
        got = np.asarray(pkpo_weights(r, k))[order]
        for g, e in zip(got, exact_sorted):
            assert rel_err(float(g), e) < RTOL_EXACT


# ------------------------------------------------------------------------------------------
# The binary (count) path and the sorting path
# ------------------------------------------------------------------------------------------


def _all_counts_and_ks(n, k_max, seed=0):
    """Binary groups of size n for every (c, k), c = 0..n, k = 1..k_max, correct ones shuffled."""
    rng = np.random.default_rng(seed)
    cs, ks = np.meshgrid(np.arange(n + 1), np.arange(1, k_max + 1), indexing="ij")
    cs, ks = cs.ravel(), ks.ravel()
    groups = (np.arange(n)[None, :] < cs[:, None]).astype(np.float64)
    return rng.permuted(groups, axis=1), cs, ks


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
@pytest.mark.parametrize("n", [1, 2, 8, 100])
def test_pkpo_binary_path_equals_sorting_path_bit_for_bit(baseline, n):
    # Every c (c = 0 and c = n included) and every k (k = 1 and k = n included), per-group k,
    # tied samples in random positions; and a scalar k (the tables then have shape (n+1,)).
    if baseline == "loo" and n < 2:
        return
    k_max = n - 1 if baseline == "loo" else n
    groups, cs, ks = _all_counts_and_ks(n, k_max)
    fast = np.asarray(pkpo_weights(groups, ks, baseline=baseline, binary=True))
    slow = np.asarray(pkpo_weights(groups, ks, baseline=baseline, binary=False))
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(np.asarray(pkpo_weights(groups, ks, baseline=baseline)), fast)
    for k in sorted({1, k_max}):
        np.testing.assert_array_equal(
            np.asarray(pkpo_weights(groups, k, baseline=baseline, binary=True)),
            np.asarray(pkpo_weights(groups, k, baseline=baseline, binary=False)),
        )


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
def test_pkpo_binary_path_matches_count_forms_exactly_all_c_and_k(baseline):
    # SPEC count forms against exact rationals for every c and k at n = 9 (both paths, as they
    # are equal bit for bit): plain correct k/n, incorrect (k/n) rho(n-1,c,k-1); loo subtracts
    # (k/(n-1)) rho(n-1, c', k) with c' the count of the others; loo-1 correct C(n-c,k-1)/C(n,k),
    # incorrect exactly 0.
    n = 9
    k_max = n - 1 if baseline == "loo" else n
    groups, cs, ks = _all_counts_and_ks(n, k_max, seed=1)
    s = np.asarray(pkpo_weights(groups, ks, baseline=baseline, binary=True))
    for row, (c, k) in enumerate(zip(cs, ks)):
        c, k = int(c), int(k)
        if baseline == "loo-1":
            want = {1: Fraction(comb(n - c, k - 1), comb(n, k)), 0: Fraction(0)}
        else:
            # (an entry for an answer the group does not hold is never read)
            want = {1: Fraction(k, n), 0: Fraction(k, n) * exact_rho(n - 1, min(c, n - 1), k - 1)}
            if baseline == "loo":
                want[1] -= Fraction(k, n - 1) * exact_rho(n - 1, max(c - 1, 0), k)
                want[0] -= Fraction(k, n - 1) * exact_rho(n - 1, min(c, n - 1), k)
        for i in range(n):
            exact = want[int(groups[row, i])]
            if baseline == "loo":
                assert abs(float(Fraction(float(s[row, i])) - exact)) < RTOL_EXACT * k / n
            elif exact == 0:
                assert s[row, i] == 0.0
            else:
                assert rel_err(float(s[row, i]), exact) < RTOL_EXACT


@pytest.mark.parametrize("baseline", BASELINES, ids=BASELINE_IDS)
def test_pkpo_sorting_path_equals_binary_path_at_n_1e4(baseline):
    # The n = 10^4 exact-rational tests above take the binary path; the sorting path (here
    # XLA's sort, n being above the sorting network's limit) gives the same numbers.
    n = 10**4
    cs = [0, 1, 2, 5000, n - 2, n - 1, n]
    k_list = [1, 2, 17, 5000, n - 1] + ([] if baseline == "loo" else [n])
    rows = [(c, k) for c in cs for k in k_list]
    rng = np.random.default_rng(2)
    rewards = np.zeros((len(rows), n))
    for row, (c, _) in enumerate(rows):
        rewards[row, rng.choice(n, size=c, replace=False)] = 1.0
    ks = np.array([k for _, k in rows])
    fast = np.asarray(pkpo_weights(rewards, ks, baseline=baseline, binary=True))
    slow = np.asarray(pkpo_weights(rewards, ks, baseline=baseline, binary=False))
    np.testing.assert_array_equal(fast, slow)


def test_pkpo_binary_path_float32_equals_sorting_path():
    groups, cs, ks = _all_counts_and_ks(64, 8)
    groups = groups.astype(np.float32)
    for baseline in BASELINES:
        fast = pkpo_weights(groups, ks, baseline=baseline, binary=True)
        slow = pkpo_weights(groups, ks, baseline=baseline, binary=False)
        assert fast.dtype == slow.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))


def test_pkpo_binary_flag_under_jit_and_detection():
    groups, _, _ = _all_counts_and_ks(6, 1)
    eager = np.asarray(pkpo_weights(groups, 3, baseline="loo"))  # detected: binary path
    for binary in (None, True, False):  # under jit, None takes the sorting path
        f = jax.jit(lambda r, b=binary: pkpo_weights(r, 3, baseline="loo", binary=b))
        np.testing.assert_array_equal(np.asarray(f(groups)), eager)
    # A non-binary group takes the sorting path when detected; forcing binary=True refuses it.
    r = np.array([[1.0, 0.5, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(pkpo_weights(r, 2)), brute_force_pkpo(r[0], 2, None)[None], rtol=1e-14)
    with pytest.raises(ValueError, match=r"must be binary \(0 or 1\) with binary=True; got 0.5 at index \(0, 1\)"):
        pkpo_weights(r, 2, binary=True)
    with pytest.raises(TypeError, match="binary must be None, True or False; got 'yes'"):
        pkpo_weights(r, 2, binary="yes")


@pytest.mark.parametrize("n", [1, 3, 64, 100, 4096, 4097])
def test_sort_rewards_network_and_xla_sort_agree_with_numpy(n):
    # The sorting network (n <= 4096, padded to a power of two) and XLA's sort of the bit
    # patterns (larger n), with ties, exact 0 and 1, and -0.0 (sorted as a zero). Subnormals are
    # left out: XLA on CPU flushes them to zero in min/max, as in all its arithmetic.

    rng = np.random.default_rng(n)
    r = rng.choice([0.0, -0.0, 0.25, 0.5, 1.0], size=(3, n)) if n > 1 else np.array([[0.5]] * 3)
    r[0] = rng.uniform(size=n)
    got = np.asarray(jax.jit(sort_rewards)(jnp.asarray(r)))
    np.testing.assert_array_equal(got, np.sort(r, axis=-1))


@pytest.mark.parametrize("n", [2, 64, _COUNT_MAX_N, _COUNT_MAX_N + 1, 300])
def test_read_positions_count_entries_below_each_sample(n):
    # Where each sample reads its tie run: the number of its group's entries < x (strict) or
    # <= x, by summed comparisons (n <= _COUNT_MAX_N) or binary search (larger n), with ties.
    rng = np.random.default_rng(n)
    r = rng.choice([0.0, 0.25, 0.5, 1.0], size=(2, 3, n))
    r[0, 0] = rng.uniform(size=n)
    srt = jnp.asarray(np.sort(r, axis=-1))
    for strict in (True, False):
        got = np.asarray(jax.jit(lambda s, x, st=strict: _count_sorted(s, x, strict=st))(srt, jnp.asarray(r)))
        cmp = np.less if strict else np.less_equal
        want = cmp(r[..., None, :], r[..., :, None]).sum(axis=-1)
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------
# Group-normalised analytic pass@k advantage, GRPO, RLOO
# ------------------------------------------------------------------------------------------


def exact_grouped(n, c, k):
    """SPEC closed form, squared (exact rationals): (correct^2, incorrect^2, sign)."""
    big_r = exact_rho(n, c, k)
    var = big_r * (1 - big_r)
    correct = 1 - big_r
    n_neg = n - c
    qp = Fraction(comb(n_neg - 1, k - 1), comb(n - 1, k - 1)) if n_neg >= 1 else Fraction(0)
    incorrect = 1 - big_r - qp
    return correct**2 / var, incorrect**2 / var, incorrect


@pytest.mark.parametrize("n", [9, 10**4])
def test_grouped_passk_matches_spec_formula_exactly(n):
    cs = [1, 2, 3, n // 2, n - 9]
    rewards = np.zeros((len(cs), n))
    for row, c in enumerate(cs):
        rewards[row, :c] = 1.0
    for k in (1, 2, 9):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            adv = np.asarray(grouped_passk_advantages(rewards, k))
        for row, c in enumerate(cs):
            if c == 0 or n - c < k:
                assert np.all(adv[row] == 0)
                continue
            c2, i2, incorrect = exact_grouped(n, c, k)
            assert rel_err(float(adv[row, 0]) ** 2, c2) < RTOL_EXACT
            assert rel_err(float(adv[row, -1]) ** 2, i2) < RTOL_EXACT
            assert adv[row, 0] > 0 and (adv[row, -1] < 0) == (incorrect < 0)


def test_grouped_passk_sigma_zero_gives_zeros_and_warns():
    # all incorrect (R = 0), fewer than k incorrect (R = 1), and N = k (always R in {0, 1})
    rewards = np.array([[0.0, 0, 0, 0], [1.0, 1, 1, 0], [1.0, 0, 1, 0]])
    with pytest.warns(RuntimeWarning, match="2 of 3 groups have sigma = 0"):
        adv = np.asarray(grouped_passk_advantages(rewards, 2))
    assert np.all(adv[:2] == 0) and np.all(adv[2] != 0)
    for c in range(5):
        r = np.array([1.0] * c + [0.0] * (4 - c))
        with pytest.warns(RuntimeWarning, match="sigma = 0"):
            assert np.all(np.asarray(grouped_passk_advantages(r, 4)) == 0)


def test_grouped_passk_under_jit_gives_zeros_without_warning():
    rewards = jnp.array([[0.0, 0, 0, 0], [1.0, 0, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adv = jax.jit(grouped_passk_advantages, static_argnums=1)(rewards, 2)
    assert np.all(np.asarray(adv[0]) == 0) and np.all(np.isfinite(np.asarray(adv)))


def test_grpo_population_std_and_zero_for_constant_groups():
    r = np.array([[1.0, 0.0, 0.0], [0.1, 0.1, 0.1], [0.2, 0.9, 0.5]])
    adv = np.asarray(grpo_advantages(r))
    np.testing.assert_allclose(adv[0], [np.sqrt(2), -1 / np.sqrt(2), -1 / np.sqrt(2)], rtol=1e-14)
    # A constant group gets exactly zero. SPEC's test "std = 0" is not enough in floating point:
    # the rounded mean of [0.1]*3 differs from 0.1 by an ulp, the population std comes out as
    # 1.4e-17, and (r - mean)/std would be -1 for every sample.
    x = r[1]
    assert np.sqrt(np.mean((x - x.sum() / 3) ** 2)) > 0
    assert np.all(adv[1] == 0)
    x = r[2]
    np.testing.assert_allclose(adv[2], (x - x.mean()) / x.std(ddof=0), rtol=1e-13)


def test_rloo_subtracts_mean_of_others():
    r = np.array([0.2, 0.9, 0.5, 0.4])
    want = [r[i] - np.delete(r, i).mean() for i in range(4)]
    np.testing.assert_allclose(np.asarray(rloo_advantages(r)), want, rtol=1e-14, atol=1e-16)


# ------------------------------------------------------------------------------------------
# Tracing, float32, bad inputs
# ------------------------------------------------------------------------------------------


def test_pkpo_works_under_jit_and_vmap_over_k():
    r = jnp.array([[0.2, 1.0, 0.2, 0.0, 0.7, 0.2]] * 3)
    eager = np.stack([np.asarray(pkpo_weights(r, k, baseline="loo")) for k in (1, 3, 5)])
    mapped = jax.jit(jax.vmap(lambda k: pkpo_weights(r, k, baseline="loo")))(jnp.array([1, 3, 5]))
    np.testing.assert_allclose(np.asarray(mapped), eager, rtol=1e-14, atol=1e-16)
    per_group_k = pkpo_weights(r, jnp.array([1, 3, 5]), baseline="loo")
    np.testing.assert_allclose(np.asarray(per_group_k), eager[[0, 1, 2], [0, 1, 2]], rtol=1e-14, atol=1e-16)


@pytest.mark.slow
def test_float32_inputs_stay_float32_with_documented_accuracy():
    # Float32 computes in float32: relative errors of order n * 6e-8 (here n = 64).
    rng = np.random.default_rng(1)
    r64 = rng.uniform(size=(2, 64))
    binary = (r64 > 0.6).astype(np.float64)
    pairs = [
        (lambda r: pkpo_weights(r, 8), r64),
        (lambda r: pkpo_weights(r, 8, baseline="loo-1"), r64),
        (lambda r: pkpo_weights(r, 8, baseline="loo"), r64),
        (lambda r: grpo_advantages(r), r64),
        (lambda r: rloo_advantages(r), r64),
        (lambda r: grouped_passk_advantages(r, 8), binary),
    ]
    for fn, x in pairs:
        lo = fn(x.astype(np.float32))
        hi = np.asarray(fn(np.asarray(x.astype(np.float32), np.float64)))
        assert lo.dtype == jnp.float32
        assert np.max(np.abs(np.asarray(lo) - hi)) <= 64 * 6e-8 * 4 * np.max(np.abs(hi))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: pass_at_k_unbiased(4, 2, 5), ValueError, r"k must be <= n; got k=5 with n=4"),
        (lambda: pass_at_k_unbiased(4, 5, 2), ValueError, r"c must be <= n .*got c=5 with n=4"),
        (lambda: pass_at_k_unbiased(4, -1, 2), ValueError, r"c must be >= 0; got -1"),
        (lambda: pass_at_k_unbiased(-1, 0, 1), ValueError, r"n must be >= 0; got -1"),
        (lambda: pass_at_k_unbiased(4, 2, 0), ValueError, r"k must be >= 1; got 0"),
        (lambda: pass_at_k_unbiased(4, 2, 2.0), TypeError, r"k must be an integer; got 2.0"),
        (lambda: pass_at_k_unbiased(4.0, 2, 2), TypeError, r"n must be an integer; got 4.0"),
        (
            lambda: pass_at_k_unbiased(np.array([4, 4]), np.array([1, 5]), 2),
            ValueError,
            r"c must be <= n .*got c=5 with n=4 at index \(1,\)",
        ),
        (lambda: pass_at_k_weight_unbiased(4, 2, 6), ValueError, r"k must be <= n \+ 1; got k=6"),
        (lambda: pass_at_k_unbiased(None, 2, 1), TypeError, r"n must be an integer; got None"),
        (lambda: pass_at_k_unbiased(5, None, 1), TypeError, r"c must be an integer; got None"),
        (lambda: pass_at_k_unbiased(5, 2, None), TypeError, r"k must be an integer; got None"),
        (lambda: pass_at_k_weight_unbiased(None, 2, 1), TypeError, r"n must be an integer; got None"),
        (lambda: pass_at_k_weight_unbiased(5, None, 1), TypeError, r"c must be an integer; got None"),
        (lambda: pass_at_k_weight_unbiased(5, 2, None), TypeError, r"k must be an integer; got None"),
        (lambda: pass_at_k_unbiased(np.array([5, None]), 2, 1), TypeError, r"n must be an integer"),
        (lambda: pkpo_weights(np.ones(4), 5), ValueError, r"k must be <= n = 4 .*got k=5"),
        (lambda: pkpo_weights(np.ones(4), 4, baseline="loo"), ValueError, r"k must be <= n-1"),
        (lambda: pkpo_weights(np.ones(4), 2, baseline="mean"), ValueError, r"baseline must be .*'mean'"),
        (lambda: pkpo_weights(np.array([0.5, 1.5]), 1), ValueError, r"rewards must lie in \[0, 1\].*1.5"),
        (lambda: pkpo_weights(np.array([0.5, np.nan]), 1), ValueError, r"rewards must lie in .*nan"),
        (lambda: pkpo_weights(np.ones(4), 2.0), TypeError, r"k must be an integer; got 2.0"),
        (lambda: pkpo_weights(np.ones(4), None), TypeError, r"k must be an integer; got None"),
        (lambda: grouped_passk_advantages(np.ones(4), None), TypeError, r"k must be an integer; got None"),
        (lambda: pkpo_weights(np.ones(4), 0), ValueError, r"k must be >= 1; got 0"),
        (lambda: pkpo_weights(0.5, 1), ValueError, r"rewards must have a group axis"),
        (lambda: pkpo_weights(np.ones((2, 4)), np.array([1, 2, 3])), ValueError, r"k must be a scalar or"),
        (
            lambda: grouped_passk_advantages(np.array([1.0, 0.5]), 1),
            ValueError,
            r"rewards must be binary .*0.5 at index \(1,\)",
        ),
        (lambda: grouped_passk_advantages(np.ones(3), 4), ValueError, r"k must be <= N = 3"),
        (lambda: grpo_advantages(np.array([-0.1, 0.5])), ValueError, r"rewards must lie in .*-0.1"),
        (lambda: rloo_advantages(np.ones(1)), ValueError, r"n >= 2"),
        (lambda: rloo_advantages("abc"), TypeError, r"rewards must be a number"),
    ],
)
def test_bad_inputs_raise_naming_argument_and_value(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
