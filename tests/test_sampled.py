"""SPEC section 10: interference from sampled answers (`theory.sampled`)."""

import itertools
import math
from fractions import Fraction

import jax
import numpy as np
import pytest
from enumeration import all_outcomes, gather_answers
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import answer_scores, log_policy, mixed_policy, per_prompt_grads, success

import theory

seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------------------------
# Independent references


def exact_inner(theta, features, rewards, mu, ks):
    """`I_k = sum_i mu_i k (1-p_i)^(k-1) <grad p_i, grad J_1>` from autodiff gradients (numpy)."""
    p = np.asarray(success(theta, features, rewards))
    g = np.asarray(per_prompt_grads(theta, features, rewards)).reshape(p.size, -1)
    mu = np.asarray(mu)
    a = g @ (mu @ g)
    return np.array([np.sum(mu * k * (1 - p) ** (k - 1) * a) for k in ks])


def u_statistic_inner(r, s, k, mu):
    """`I_k` as the average of its kernel over all disjoint answer sets (plain numpy, small `n`).

    Cross terms (`i != l`): prompt `i` gives one answer `j` and `k - 1` others that must all
    fail, prompt `l` one answer. Self terms: two distinct answers `j, j'` of prompt `i` and
    `k - 1` more, all failing.
    """
    r = np.asarray(r, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    n_prompts, n = r.shape
    g = np.einsum("pn,pnd->pd", r, s) / n
    total = 0.0
    for i in range(n_prompts):
        vec, count = np.zeros(s.shape[-1]), 0
        for j in range(n):
            others = [x for x in range(n) if x != j]
            for rest in itertools.combinations(others, k - 1):
                vec += k * r[i, j] * s[i, j] * np.prod(1 - r[i, list(rest)])
                count += 1
        vec /= count
        total += sum(mu[i] * mu[l] * vec @ g[l] for l in range(n_prompts) if l != i)
        acc, count = 0.0, 0
        for j, j2 in itertools.permutations(range(n), 2):
            others = [x for x in range(n) if x not in (j, j2)]
            for rest in itertools.combinations(others, k - 1):
                acc += k * r[i, j] * r[i, j2] * (s[i, j] @ s[i, j2]) * np.prod(1 - r[i, list(rest)])
                count += 1
        total += mu[i] ** 2 * acc / count
    return total


def draw(rng, theta, features, rewards, n, repeats):
    """`repeats` runs of `n` answers per prompt: rewards `(R, P, n)`, scores `(R, P, n, D)`."""
    logp = np.asarray(log_policy(theta, features))
    pi = np.exp(logp)
    n_prompts, n_actions = pi.shape
    cdf = np.cumsum(pi, axis=-1)
    u = rng.uniform(size=(repeats, n_prompts, n))
    ys = np.minimum((u[..., None] > cdf[None, :, None, :]).sum(-1), n_actions - 1)
    scores = np.asarray(answer_scores(theta, features))
    rows = np.arange(n_prompts)[None, :, None]
    return np.asarray(rewards)[rows, ys], scores[rows, ys]


# ---------------------------------------------------------------------------------------------
# Unbiasedness


@pytest.mark.parametrize("n_prompts, n_actions, n, seed", [(2, 3, 3, 0), (2, 3, 3, 1), (3, 2, 4, 2)])
def test_unbiased_by_enumeration_on_a_softmax_bandit(n_prompts, n_actions, n, seed):
    """SPEC's check: the expectation over all `A^(P n)` outcomes equals the exact `I_k`."""
    rng = np.random.default_rng(seed)
    theta, features, rewards, mu = mixed_policy(rng, n_prompts, n_actions, 2)
    ks = np.arange(1, n)
    prob, outcomes = all_outcomes(np.exp(np.asarray(log_policy(theta, features))), n)
    r, s = gather_answers(rewards, outcomes), gather_answers(answer_scores(theta, features), outcomes)
    est = jax.vmap(lambda rr, ss: theory.sampled_inner_product(rr, ss, ks, mu=mu).estimate)(r, s)
    plug = jax.vmap(lambda rr, ss: theory.plugin_inner_product(rr, ss, ks, mu=mu))(r, s)
    agree = jax.vmap(lambda rr, ss: theory.sampled_agreement_scores(rr, ss, mu))(r, s)
    exact = exact_inner(theta, features, rewards, mu, ks)
    np.testing.assert_allclose(prob @ np.asarray(est), exact, rtol=1e-10, atol=1e-15)
    g = np.asarray(per_prompt_grads(theta, features, rewards)).reshape(n_prompts, -1)
    np.testing.assert_allclose(prob @ np.asarray(agree), g @ (np.asarray(mu) @ g), rtol=1e-10, atol=1e-15)
    # the plug-in is biased beyond k = 1 (at k = 1 it is the unbiased agreement sum)
    np.testing.assert_allclose(prob @ np.asarray(plug)[:, 0], exact[0], rtol=1e-10, atol=1e-15)
    assert np.max(np.abs(prob @ np.asarray(plug)[:, 1:] - exact[1:])) > 1e-3 * np.max(np.abs(exact))


def test_naive_self_term_is_biased_by_enumeration():
    """Why the self term averages over pairs: `||g_i||^2` adds the variance of `g_i`."""
    rng = np.random.default_rng(4)
    theta, features, rewards, mu = mixed_policy(rng, 2, 3, 2)
    n = 3
    prob, outcomes = all_outcomes(np.exp(np.asarray(log_policy(theta, features))), n)
    r, s = gather_answers(rewards, outcomes), gather_answers(answer_scores(theta, features), outcomes)
    g = np.einsum("opn,opnd->opd", r, s) / n
    naive = np.einsum("opd,p,oqd,q->o", g, np.asarray(mu), g, np.asarray(mu))
    assert abs(prob @ naive - exact_inner(theta, features, rewards, mu, [1])[0]) > 1e-4


SMALL = [(2, 3), (2, 4), (3, 4), (2, 5)]  # (P, n): a few shapes, each compiled once


@given(seed=seeds, shape=st.sampled_from(SMALL))
@settings(max_examples=25)
def test_matches_plain_numpy_u_statistic(seed, shape):
    n_prompts, n = shape
    rng = np.random.default_rng(seed)
    r = (rng.uniform(size=(n_prompts, n)) < rng.uniform(0.2, 0.8)).astype(np.float64)
    s = rng.normal(size=(n_prompts, n, 2))
    mu = rng.dirichlet(np.ones(n_prompts))
    ks = np.arange(1, n)
    got = np.asarray(theory.sampled_inner_product(r, s, ks, mu=mu).estimate)
    want = np.array([u_statistic_inner(r, s, int(k), mu) for k in ks])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@given(seed=seeds)
def test_invariant_to_the_order_of_answers(seed):
    rng = np.random.default_rng(seed)
    r = (rng.uniform(size=(6, 8)) < 0.4).astype(np.float64)
    s = rng.normal(size=(6, 8, 3))
    ks = np.arange(1, 8)
    perm = np.argsort(rng.uniform(size=(6, 8)), axis=1)
    rp, sp = np.take_along_axis(r, perm, 1), np.take_along_axis(s, perm[..., None], 1)
    a, b = theory.sampled_inner_product(r, s, ks), theory.sampled_inner_product(rp, sp, ks)
    np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-10, atol=1e-15)


@given(seed=seeds)
def test_agreement_sum_is_the_inner_product_at_k_equal_1(seed):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2, size=(5, 6))
    s = rng.normal(size=(5, 6, 4))
    mu = rng.dirichlet(np.ones(5))
    a = theory.sampled_agreement_scores(r, s, mu)
    got = theory.sampled_inner_product(r, s, 1, mu=mu).estimate
    np.testing.assert_allclose(float(mu @ np.asarray(a)), float(got), rtol=1e-12, atol=1e-15)


def test_converges_to_the_exact_inner_product_as_n_grows():
    """Unbiased at every `n` and consistent: the spread over repeats falls like `1/sqrt(n)`."""
    rng = np.random.default_rng(7)
    theta, features, rewards, mu = mixed_policy(rng, 12, 4, 3)
    ks = np.array([1, 2, 3])
    exact = exact_inner(theta, features, rewards, mu, ks)
    spreads = {}
    for n in (32, 2048):
        r, s = draw(rng, theta, features, rewards, n, repeats=40)
        est = np.asarray(jax.vmap(lambda rr, ss: theory.sampled_inner_product(rr, ss, ks, mu=mu).estimate)(r, s))
        sd = est.std(axis=0, ddof=1)
        z = (est.mean(axis=0) - exact) / (sd / np.sqrt(len(est)))
        assert np.all(np.abs(z) < 4.5), (n, z)
        spreads[n] = sd
    assert np.all(spreads[2048] < spreads[32] / 4), spreads
    np.testing.assert_allclose(est.mean(axis=0), exact, rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Uncertainty


def test_jackknife_interval_coverage_on_a_bandit():
    """Nominal 95% intervals `I_k_hat +- 1.96 se` cover the exact `I_k` in at least 93% of 400 runs."""
    rng = np.random.default_rng(11)
    theta, features, rewards, mu = mixed_policy(rng, 64, 4, 3)
    ks = np.array([1, 2, 4, 8])
    exact = exact_inner(theta, features, rewards, mu, ks)
    r, s = draw(rng, theta, features, rewards, 16, repeats=400)
    out = jax.vmap(lambda rr, ss: theory.sampled_inner_product(rr, ss, ks, mu=mu))(r, s)
    covered = np.abs(np.asarray(out.estimate) - exact) <= 1.96 * np.asarray(out.stderr)
    assert np.all(covered.mean(axis=0) >= 0.93), covered.mean(axis=0)


def test_stderr_is_the_delete_one_prompt_jackknife():
    """Against a direct refit with each prompt deleted and `mu` renormalised."""
    rng = np.random.default_rng(5)
    r = rng.integers(0, 2, size=(7, 5))
    s = rng.normal(size=(7, 5, 3))
    mu = rng.dirichlet(np.ones(7))
    ks = np.arange(1, 5)
    got = theory.sampled_inner_product(r, s, ks, mu=mu)
    deleted = []
    for m in range(7):
        keep = np.arange(7) != m
        deleted.append(
            np.asarray(theory.sampled_inner_product(r[keep], s[keep], ks, mu=mu[keep] / mu[keep].sum()).estimate)
        )
    deleted = np.array(deleted)
    want = np.sqrt(6 / 7 * np.sum((deleted - deleted.mean(axis=0)) ** 2, axis=0))
    np.testing.assert_allclose(got.stderr, want, rtol=1e-10)
    # the deleted values themselves, on the scaled fields: what the band's correlation is built from
    np.testing.assert_allclose(
        np.asarray(got.deleted) * np.exp(np.asarray(got.log_scale))[:, None], deleted.T, rtol=1e-10, atol=1e-15
    )


def _bonferroni(level, n_orders):
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - level) / (2 * n_orders)))


def test_critical_k_interval_is_ordered_and_reads_the_bounds():
    rng = np.random.default_rng(2)
    theta, features, rewards, mu = mixed_policy(rng, 32, 4, 3)
    r, s = draw(rng, theta, features, rewards, 24, repeats=20)
    for rr, ss in zip(r, s):
        crit = theory.sampled_critical_k(rr, ss, mu=mu, level=0.9)
        inner = theory.sampled_inner_product(rr, ss, np.arange(1, 24), mu=mu)
        z = _bonferroni(0.9, 23)  # the band over k = 1 .. 23 without a key
        assert crit.band == "bonferroni" and crit.quantile == pytest.approx(z, rel=1e-9)
        first = lambda hits: int(np.argmax(hits)) + 1 if hits.any() else None
        est, se = np.asarray(inner.scaled_estimate), np.asarray(inner.scaled_stderr)
        assert crit.estimate == first(est < 0)
        assert crit.lower == first(est - z * se < 0)
        assert crit.upper == first(est + z * se < 0)
        assert crit.k_max == 23 and crit.level == 0.9
        if crit.upper is not None:
            assert crit.lower <= crit.estimate <= crit.upper
        if crit.estimate is not None:
            assert crit.lower <= crit.estimate


def test_jit_and_vmap_over_runs():
    rng = np.random.default_rng(3)
    r = rng.integers(0, 2, size=(4, 6, 8)).astype(np.float64)
    s = rng.normal(size=(4, 6, 8, 3))
    ks = np.arange(1, 8)
    batched = jax.jit(jax.vmap(lambda rr, ss: theory.sampled_inner_product(rr, ss, ks)))(r, s)
    crit = jax.jit(jax.vmap(lambda rr, ss: theory.sampled_critical_k_jax(rr, ss)))(r, s)
    for b in range(4):
        one = theory.sampled_inner_product(r[b], s[b], ks)
        np.testing.assert_allclose(batched.estimate[b], one.estimate, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(batched.stderr[b], one.stderr, rtol=1e-12, atol=1e-15)
        c = theory.sampled_critical_k(r[b], s[b])
        assert [theory.k_star_or_none(v[b], 7) for v in crit] == [c.estimate, c.lower, c.upper]


def test_bool_int_and_float_rewards_agree():
    rng = np.random.default_rng(8)
    r = rng.uniform(size=(5, 4)) < 0.5
    s = rng.normal(size=(5, 4, 2))
    outs = [theory.sampled_inner_product(x, s, np.arange(1, 4)).estimate for x in (r, r.astype(int), r.astype(float))]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


# ---------------------------------------------------------------------------------------------
# Signs without underflow, against exact rationals


def exact_scaled_signs(counts, vec_sums, pair_sums, n):
    """Signs of `I_k_hat` for every `k = 1..n-1` in exact integer arithmetic (uniform `mu`).

    With `G_i` (integer vectors) and `(||G_i||^2 - Q_i)` integers, multiplying `I_k_hat` by the
    positive `P^2 n^2 (n-1) C(n-1, k-1) / k` leaves
    `sum_i C(f_i, k-1) [ (n-1) <G_i, sum_{l != i} G_l> + n (n-1)/(n-k) (||G_i||^2 - Q_i) ]`
    (`C(n-1,k-1)/C(n-2,k-1) = (n-1)/(n-k)`); multiply once more by `n-k`.
    """
    total_g = [sum(col) for col in zip(*vec_sums)]
    cross = [(n - 1) * sum(a * (b - a_self) for a, b, a_self in zip(g, total_g, g)) for g in vec_sums]
    signs, margins = [], []
    binoms = [1] * len(counts)  # C(f_i, t), t = k - 1
    for k in range(1, n):
        t = k - 1
        if t > 0:
            binoms = [b * (n - c - t + 1) // t if n - c - t + 1 > 0 else 0 for b, c in zip(binoms, counts)]
        terms = [
            b * ((n - k) * x + n * (n - 1) * (y if c >= 2 else 0))
            for b, c, x, y in zip(binoms, counts, cross, pair_sums)
        ]
        value, size = sum(terms), sum(abs(term) for term in terms)
        signs.append((value > 0) - (value < 0))
        margins.append(float(Fraction(abs(value), size)) if size else 1.0)
    return np.array(signs), np.array(margins)


@pytest.mark.parametrize(
    "n, shares",
    [
        (64, (None, None, 1 / 4, 1 / 2, 3 / 4)),  # None: one and two successes (hard prompts)
        (4096, (None, None, 1 / 4, 1 / 2, 3 / 4)),
        (4096, (1 / 8, 1 / 8, 1 / 4, 1 / 2, 3 / 4)),  # no hard prompt: I_k_hat itself underflows
    ],
)
def test_signs_finite_and_exact_up_to_n_4096(n, shares):
    """Every `k <= n - 1` gives a finite scaled estimate with the sign of the exact rational value."""
    rng = np.random.default_rng(n)
    # prompts with few successes pulling against easier ones; integer scores
    counts = [int(share * n) if share else i + 1 for i, share in enumerate(shares)]
    r = np.zeros((len(counts), n))
    for i, c in enumerate(counts):
        r[i, rng.permutation(n)[:c]] = 1
    direction = [[-3, 1], [-2, 2], [1, 0], [2, 1], [1, 1]]
    s = np.zeros((len(counts), n, 2))
    for i in range(len(counts)):
        s[i] = np.asarray(direction[i]) + rng.integers(-1, 2, size=(n, 2))
    vec_sums = [[int(v) for v in (r[i] @ s[i])] for i in range(len(counts))]
    pair_sums = [
        int(sum(v * v for v in vec_sums[i]) - np.sum(r[i] * np.sum(s[i] ** 2, -1))) for i in range(len(counts))
    ]
    want, margin = exact_scaled_signs(counts, vec_sums, pair_sums, n)
    got = theory.sampled_inner_product(r, s, np.arange(1, n))
    scaled = np.asarray(got.scaled_estimate)
    assert np.all(np.isfinite(scaled)) and np.all(np.isfinite(np.asarray(got.scaled_stderr)))
    # where the terms cancel to below 1e-9 of their total, float64 rounding may decide the sign
    clear = margin > 1e-9
    np.testing.assert_array_equal(np.sign(scaled)[clear], want[clear])
    assert np.count_nonzero(~clear) <= 2, np.flatnonzero(~clear)
    assert (want < 0).any() and (want > 0).any()  # the instance crosses
    estimate = np.asarray(got.estimate)
    if shares[0] is not None:
        assert np.any((estimate == 0) & (want != 0))  # the unscaled value underflows; its sign does not


# ---------------------------------------------------------------------------------------------
# The plug-in


def test_plugin_critical_k_is_critical_k_at_the_observed_shares():
    rng = np.random.default_rng(9)
    r = rng.integers(0, 2, size=(10, 8))
    s = rng.normal(size=(10, 8, 3))
    a = np.asarray(theory.sampled_agreement_scores(r, s))
    ks = np.arange(1, 501)[:, None]
    w = ks * (1 - r.mean(1)) ** (ks - 1)  # shares in multiples of 1/8: no underflow up to k = 500
    plugin = (w * a).mean(1)
    assert (plugin < 0).any()  # the instance has a plug-in k*, found by the scan
    assert theory.plugin_critical_k(r, s, k_max=500) == int(np.argmax(plugin < 0)) + 1
    np.testing.assert_allclose(theory.plugin_inner_product(r, s, np.arange(1, 20)), plugin[:19], rtol=1e-12)


def test_a_hard_prompt_with_one_success_gets_weight_k():
    """SPEC section 10: the unbiased estimate weights a single success by `k`, the plug-in by
    `k (1 - 1/n)^(k-1)`."""
    n, k = 8, 5
    r = np.zeros((2, n))
    r[0, 0] = 1
    r[1, :4] = 1
    s = np.zeros((2, n, 1))
    s[0, 0] = 1.0
    # only prompt 0's cross term with itself absent: make prompt 1 contribute <g_0, g_1> only
    s[1, :4] = 1.0
    est = theory.sampled_inner_product(r, s, k).estimate
    g0, g1 = 1 / n, 4 / n
    c1_easy = k * math.comb(4, k - 1) / math.comb(n - 1, k - 1)
    c2_easy = k * math.comb(4, k - 1) / math.comb(n - 2, k - 1)
    pair_easy = (16 - 4) / (n * (n - 1))
    want = 0.25 * (k * g0 * g1 + c1_easy * g1 * g0 + c2_easy * pair_easy)
    np.testing.assert_allclose(float(est), want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad input


R = np.array([[1, 0, 1], [0, 0, 1]])
S = np.ones((2, 3, 2))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: theory.sampled_inner_product([[1, 2, 0], [0, 0, 1]], S, 1),
            ValueError,
            r"rewards must be 0 or 1; got 2 at prompt 0 \(answer 1\)",
        ),
        (
            lambda: theory.sampled_inner_product([[1, 0, 0], [0, np.nan, 1]], S, 1),
            ValueError,
            r"rewards must be 0 or 1; got nan at prompt 1",
        ),
        (
            lambda: theory.sampled_inner_product(R, np.where(np.arange(12).reshape(2, 3, 2) == 9, np.inf, 1.0), 1),
            ValueError,
            r"scores must be finite; got inf at prompt 1 \(answer 1",
        ),
        (
            lambda: theory.sampled_inner_product(R, np.ones((2, 4, 2)), 1),
            ValueError,
            r"scores must have shape \(P, n, D\)",
        ),
        (lambda: theory.sampled_inner_product(R, np.ones((2, 3)), 1), ValueError, r"scores must have shape"),
        (lambda: theory.sampled_inner_product(R, S, 3), ValueError, r"ks must be <= n - 1 = 2.*got 3"),
        (lambda: theory.sampled_inner_product(R, S, np.array([1, 0])), ValueError, r"ks must be >= 1; got .*0"),
        (lambda: theory.sampled_inner_product(R, S, 1.0), TypeError, r"ks must be an integer"),
        (lambda: theory.sampled_inner_product([[1], [0]], np.ones((2, 1, 2)), 1), ValueError, r"n >= 2 answers"),
        (lambda: theory.sampled_inner_product([1, 0, 1], S, 1), ValueError, r"rewards must have shape \(P, n\)"),
        (lambda: theory.sampled_inner_product(R, S, 1, mu=[1.2, -0.2]), ValueError, r"mu must be non-negative.*-0.2"),
        (lambda: theory.sampled_inner_product(R, S, 1, mu=[0.5, 0.6]), ValueError, r"mu must sum to 1"),
        (lambda: theory.sampled_inner_product(R, S, 1, mu=[1.0, 0.0]), ValueError, r"at least two prompts"),
        (lambda: theory.sampled_inner_product(R, S, 1, mu=[1.0]), ValueError, r"mu must have 2 entries"),
        (lambda: theory.sampled_inner_product(None, S, 1), TypeError, r"rewards must be an array"),
        (lambda: theory.sampled_inner_product(np.array([["a", "b", "c"]] * 2), S, 1), TypeError, r"rewards must be"),
        (lambda: theory.sampled_critical_k(R, S, level=1.5), ValueError, r"level must lie in \(0, 1\)"),
        (lambda: theory.sampled_critical_k(R, S, level="high"), TypeError, r"level must be a real number"),
        (
            lambda: theory.sampled_agreement_scores(R, np.full((2, 3, 2), np.nan)),
            ValueError,
            r"scores must be finite; got nan at prompt 0",
        ),
        (
            lambda: theory.plugin_critical_k([[1, 0.5, 0], [0, 0, 1]], S),
            ValueError,
            r"rewards must be 0 or 1; got 0.5 at prompt 0",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("n", [2, 128, 129])  # both sides of the answer-by-answer sum's limit
def test_answer_statistics_match_plain_numpy(n):
    rng = np.random.default_rng(n)
    r = rng.integers(0, 2, size=(3, n))
    s = rng.normal(size=(3, n, 2))
    stats = theory.answer_statistics(r, s)
    big_g = np.einsum("pn,pnd->pd", r, s)
    q = np.einsum("pn,pnd->p", r, s**2)
    c = r.sum(1)
    np.testing.assert_array_equal(stats.correct, c)
    np.testing.assert_allclose(stats.mean_score, big_g / n, rtol=1e-12, atol=1e-14)
    pair = np.where(c >= 2, ((big_g**2).sum(1) - q) / (n * (n - 1)), 0.0)
    np.testing.assert_allclose(stats.pair, pair, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n", [1, 5, 128, 129])  # both sides of the answer-by-answer sum's limit
def test_answer_sums_match_plain_numpy_on_host_and_under_jit(n):
    rng = np.random.default_rng(n)
    r = rng.integers(0, 2, size=(2, 3, n))  # two leading axes
    s = rng.normal(size=(2, 3, n, 4)) * rng.choice([1e-3, 1.0, 1e3], size=(2, 3, n, 1))
    want = (r.sum(-1), np.einsum("...n,...nd->...d", r, s), np.einsum("...n,...nd->...", r, s * s))
    host = theory.answer_sums(r, s)
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float64 for x in host)
    traced = jax.jit(theory.answer_sums)(r, s)
    for got in (host, traced):
        assert isinstance(got, theory.AnswerSums)
        for x, y in zip(got, want):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-12)
    # on the host the dtype is the scores' own, whatever JAX's precision setting
    assert theory.answer_sums(r.astype(bool), s.astype(np.float32)).score_sq_sum.dtype == np.float32
    # real-valued rewards weigh each answer
    w = rng.random((2, 3, n))
    np.testing.assert_allclose(
        theory.answer_sums(w, s).score_sq_sum, np.einsum("...n,...nd->...", w, s * s), rtol=1e-13
    )


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 40), st.integers(1, 6))
def test_answer_sums_accumulated_over_chunks_equal_the_whole(seed, n, dim):
    """Consecutive chunks of answers, their sums added in order, give the sums of all the answers
    at once: on the host bit for bit when each chunk is one answer (the order a file is read in,
    line by line); within rounding for longer chunks and under `jit` (XLA may sum a squared norm
    in another order for another shape)."""
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2, size=(3, n)).astype(float)
    s = rng.normal(size=(3, n, dim)) * 10.0 ** rng.integers(-3, 4, size=(3, n, 1))
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, rng.integers(1, 4)), replace=False))
    for run, host in ((theory.answer_sums, True), (jax.jit(theory.answer_sums), False)):
        whole = run(r, s)
        for bounds, exact in ((list(range(n + 1)), host), ([0, *cuts, n], False)):
            total = None
            for a, b in zip(bounds[:-1], bounds[1:]):
                part = run(r[:, a:b], s[:, a:b])
                total = part if total is None else [x + y for x, y in zip(total, part)]
            for x, y in zip(total, whole):
                if exact:
                    np.testing.assert_array_equal(x, y)
                else:
                    np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13 * float(np.abs(y).max(initial=1.0)))


def test_answer_sums_bad_input():
    r, s = np.ones((2, 3)), np.ones((2, 3, 4))
    with pytest.raises(
        ValueError,
        match=r"scores must have shape \(\.\.\., n, D\) = \(2, 3, 'D'\).*got rewards \(2, 3\), scores \(2, 4, 4\)",
    ):
        theory.answer_sums(r, np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"n >= 1"):
        theory.answer_sums(np.ones((2, 0)), np.ones((2, 0, 4)))
    with pytest.raises(TypeError, match="scores must be floating point; got dtype int64"):
        theory.answer_sums(r, s.astype(np.int64))
    with pytest.raises(TypeError, match="rewards must be bool, integer or float"):
        theory.answer_sums(np.array([["a", "b", "c"]] * 2), s)


def test_statistics_from_sums_equal_the_answers_own():
    """Sums accumulated over chunks of answers give the same estimates as the answers themselves."""
    rng = np.random.default_rng(12)
    r = rng.integers(0, 2, size=(6, 8))
    s = rng.normal(size=(6, 8, 5))
    halves = [theory.answer_sums(r[:, :4], s[:, :4]), theory.answer_sums(r[:, 4:], s[:, 4:])]
    correct, score_sum, sq_sum = (a + b for a, b in zip(*halves))
    stats = theory.statistics_from_sums(correct, score_sum, sq_sum, n=8)
    ks = np.arange(1, 8)
    a = theory.inner_product_from_statistics(stats, ks)
    b = theory.sampled_inner_product(r, s, ks)
    np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-12, atol=1e-15)
    assert theory.critical_k_from_statistics(stats) == theory.sampled_critical_k(r, s)
    np.testing.assert_allclose(
        theory.agreement_from_statistics(stats), theory.sampled_agreement_scores(r, s), rtol=1e-12
    )
    with pytest.raises(ValueError, match=r"correct must be integer counts in \[0, n = 8\]; got 9.0 at prompt 2"):
        theory.statistics_from_sums(np.where(np.arange(6) == 2, 9, correct), score_sum, sq_sum, n=8)
    with pytest.raises(TypeError, match="stats must be an AnswerStatistics"):
        theory.inner_product_from_statistics((correct, score_sum), 1)


def test_answers_stderr_is_the_delete_one_column_jackknife():
    """Against a direct refit with answer `j` of every prompt deleted (`n - 1` answers)."""
    rng = np.random.default_rng(6)
    r = rng.integers(0, 2, size=(7, 6))
    s = rng.normal(size=(7, 6, 3))
    mu = rng.dirichlet(np.ones(7))
    got = theory.sampled_inner_product(r, s, np.arange(1, 6), mu=mu, stderr="answers")
    deleted = np.array(
        [
            np.asarray(
                theory.sampled_inner_product(np.delete(r, j, 1), np.delete(s, j, 1), np.arange(1, 5), mu=mu).estimate
            )
            for j in range(6)
        ]
    )
    want = np.sqrt(5 / 6 * np.sum((deleted - deleted.mean(axis=0)) ** 2, axis=0))
    np.testing.assert_allclose(np.asarray(got.stderr)[:4], want, rtol=1e-10)
    assert np.isinf(np.asarray(got.stderr)[4])  # k = n - 1 has no delete-one refit
    base = theory.sampled_inner_product(r, s, np.arange(1, 6), mu=mu)
    np.testing.assert_allclose(got.estimate, base.estimate, rtol=1e-14)


def test_answers_stderr_is_calibrated_and_prompts_stderr_conservative():
    """Over 400 runs on a bandit: the answers standard error matches the spread of the estimate
    (ratio within [0.85, 1.25]) and covers at >= 93%; the prompts one is at least as wide."""
    rng = np.random.default_rng(13)
    theta, features, rewards, mu = mixed_policy(rng, 64, 4, 3)
    ks = np.array([1, 2, 4, 8])
    exact = exact_inner(theta, features, rewards, mu, ks)
    r, s = draw(rng, theta, features, rewards, 24, repeats=400)
    run = lambda kind: jax.vmap(lambda rr, ss: theory.sampled_inner_product(rr, ss, ks, mu=mu, stderr=kind))(r, s)
    answers, prompts = run("answers"), run("prompts")
    spread = np.asarray(answers.estimate).std(axis=0, ddof=1)
    ratio = np.asarray(answers.stderr).mean(axis=0) / spread
    assert np.all((0.85 <= ratio) & (ratio <= 1.25)), ratio
    covered = np.abs(np.asarray(answers.estimate) - exact) <= 1.96 * np.asarray(answers.stderr)
    assert np.all(covered.mean(axis=0) >= 0.93), covered.mean(axis=0)
    assert np.all(np.asarray(prompts.stderr).mean(axis=0) >= 0.95 * np.asarray(answers.stderr).mean(axis=0))


def test_critical_k_with_answers_stderr():
    rng = np.random.default_rng(2)
    theta, features, rewards, mu = mixed_policy(rng, 32, 4, 3)
    r, s = draw(rng, theta, features, rewards, 12, repeats=3)
    for rr, ss in zip(r, s):
        crit = theory.sampled_critical_k(rr, ss, mu=mu, stderr="answers")
        inner = theory.sampled_inner_product(rr, ss, np.arange(1, 12), mu=mu, stderr="answers")
        est, se = np.asarray(inner.scaled_estimate), np.asarray(inner.scaled_stderr)
        first = lambda hits: int(np.argmax(hits)) + 1 if hits.any() else None
        z = _bonferroni(0.95, 11)
        assert crit.lower == first(est - z * se < 0)
        assert crit.upper == first(est + z * se < 0)
        triple = theory.sampled_critical_k_jax(rr, ss, mu=mu, stderr="answers")
        assert [theory.k_star_or_none(v, 11) for v in triple] == [crit.estimate, crit.lower, crit.upper]
    with pytest.raises(ValueError, match=r'stderr must be "prompts" or "answers"; got \'both\''):
        theory.sampled_critical_k(r[0], s[0], stderr="both")


def test_critical_k_from_inner_reads_what_sampled_critical_k_reads():
    rng = np.random.default_rng(21)
    r = rng.integers(0, 2, size=(20, 10))
    s = rng.normal(size=(20, 10, 3)) + np.where(r.mean(1) < 0.3, -1.0, 1.0)[:, None, None]
    inner = theory.sampled_inner_product(r, s, np.arange(1, 10))
    crit = theory.critical_k_from_inner(inner, level=0.9)
    est, se = np.asarray(inner.scaled_estimate), np.asarray(inner.scaled_stderr)
    first = lambda hits: int(np.argmax(hits)) + 1 if hits.any() else None
    z = _bonferroni(0.9, 9)
    assert (crit.estimate, crit.lower, crit.upper) == (first(est < 0), first(est - z * se < 0), first(est + z * se < 0))
    assert crit == theory.sampled_critical_k(r, s, level=0.9)
    # with a key: the max-t quantile of the jackknife correlation of the refit deleted estimates
    deleted = np.array(
        [
            np.asarray(theory.sampled_inner_product(np.delete(r, m, 0), np.delete(s, m, 0), np.arange(1, 10)).estimate)
            for m in range(20)
        ]
    ).T
    want_q = theory.bands.simultaneous_quantile(
        theory.bands.jackknife_correlation(deleted), level=0.9, key=jax.random.key(4)
    )
    banded = theory.critical_k_from_inner(inner, level=0.9, key=jax.random.key(4))
    assert banded.band == "max-t" and banded.quantile == pytest.approx(want_q, rel=1e-6)
    assert 1.6448536269514722 < banded.quantile < z  # between pointwise and Bonferroni: the estimates correlate
    assert (banded.estimate, banded.lower, banded.upper) == (
        first(est < 0),
        first(est - banded.quantile * se < 0),
        first(est + banded.quantile * se < 0),
    )
    assert banded == theory.sampled_critical_k(r, s, level=0.9, key=jax.random.key(4))
    assert theory.normal_quantile(0.95) == pytest.approx(1.959963984540054, rel=1e-12)
    with pytest.raises(ValueError, match="level must lie in"):
        theory.normal_quantile(0.0)
    with pytest.raises(TypeError, match="inner must be a SampledInner"):
        theory.critical_k_from_inner((1.0, 2.0))
