"""SPEC section 6: implied prompt weights of each trainer, at finite n and as n -> infinity.

The invariants every trainer shares (the weight against the enumerated expectation of its own
coefficients, its limit) run over the whole table in `tests/test_estimator_table.py`; this file
holds the SPEC's numbers, the extremes, tracing, bad input and the unbiased count estimate.
"""

import warnings
from math import comb, sqrt

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from enumeration import binary_outcomes, expected_binary_update  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import theory  # noqa: E402
from theory.implied import IMPLIED_METHODS, implied_prompt_weight  # noqa: E402


def coefficients(method, r, k):
    """The table entry's per-sample coefficients, without grouped-passk's sigma = 0 warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(theory.gradient_estimator(method).coefficients(r, k))


@pytest.mark.parametrize("method", ["pkpo", "pkpo-loo", "pkpo-loo-1"])
@settings(max_examples=30)
@given(p=st.floats(0.0, 1.0), n=st.sampled_from([2, 7, 64, 1000]), k_frac=st.floats(0.0, 1.0))
def test_pkpo_implied_weight_is_w_k_at_every_n(method, p, n, k_frac):
    # PKPO is unbiased: its implied weight is w_k(p) at every finite n, not only in the limit.
    k_max = n - 1 if method == "pkpo-loo" else n
    k = 1 + int(k_frac * (k_max - 1))
    want = k * (1 - p) ** (k - 1)  # w_k(p), written independently of theory
    got = float(implied_prompt_weight(method, p, k=k, n=n))
    assert got == pytest.approx(want, rel=1e-11, abs=1e-300)


def test_grouped_passk_spec_numbers_p005_k4_n8():
    # SPEC: at p = 0.05, k = 4 the group-normalised weight is 0.89 at N = 8, limit 2.21
    # (mean-over-group normalisation).
    finite = float(implied_prompt_weight("grouped-passk", 0.05, k=4, n=8))
    limit = float(implied_prompt_weight("grouped-passk", 0.05, k=4))
    assert round(finite, 2) == 0.89
    assert round(limit, 2) == 2.21
    outcomes = binary_outcomes(8)
    enumerated = expected_binary_update(coefficients("grouped-passk", outcomes, 4), outcomes, 0.05)
    assert finite == pytest.approx(enumerated, rel=1e-12)


@pytest.mark.parametrize("method", IMPLIED_METHODS)
def test_implied_weight_at_p_0_and_1_is_finite_and_continuous(method):
    # At finite n the weight is a polynomial in p: finite at the ends, the limit of nearby values.
    k = 3
    ends = np.asarray(implied_prompt_weight(method, np.array([0.0, 1.0]), k=k, n=8))
    near = np.asarray(implied_prompt_weight(method, np.array([1e-9, 1 - 1e-9]), k=k, n=8))
    assert np.all(np.isfinite(ends))
    np.testing.assert_allclose(ends, near, rtol=1e-6, atol=1e-7)


def test_limit_weights_at_p_0_and_1_are_documented_values_not_nan():
    ends = np.array([0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(implied_prompt_weight("grpo", ends)), [np.inf, np.inf])
    for k, at_one in ((1, np.inf), (2, 1.0), (3, 0.0), (50, 0.0)):
        got = np.asarray(implied_prompt_weight("grouped-passk", ends, k=k))
        np.testing.assert_array_equal(got, [np.inf, at_one])
    for method in ("pkpo", "pkpo-loo", "pkpo-loo-1"):
        np.testing.assert_array_equal(np.asarray(implied_prompt_weight(method, ends, k=3)), [3.0, 0.0])


def test_implied_weight_vectorised_and_under_jit_vmap():
    ps = jnp.linspace(0.0, 1.0, 7)
    eager = implied_prompt_weight("grouped-passk", ps, k=4, n=16)
    jitted = jax.jit(lambda q: implied_prompt_weight("grouped-passk", q, k=4, n=16))(ps)
    mapped = jax.vmap(lambda q: implied_prompt_weight("grouped-passk", q, k=4, n=16))(ps)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), rtol=1e-14)
    by_k = implied_prompt_weight("pkpo", 0.3, k=np.array([1, 2, 8]), n=8)
    np.testing.assert_allclose(np.asarray(by_k), [k * 0.7 ** (k - 1) for k in (1, 2, 8)], rtol=1e-13)


def test_grpo_implied_weight_matches_closed_sum():
    # Independent closed form: sum_c' C(n-1,c') p^c' (1-p)^(n-1-c') [A1(c'+1) - A0(c')].
    n, p = 9, 0.27

    def adv(c):
        m = c / n
        sd = sqrt(m * (1 - m))
        return (0.0, 0.0) if sd == 0 else ((1 - m) / sd, -m / sd)

    want = sum(comb(n - 1, j) * p**j * (1 - p) ** (n - 1 - j) * (adv(j + 1)[0] - adv(j)[1]) for j in range(n))
    assert float(implied_prompt_weight("grpo", p, n=n)) == pytest.approx(want, rel=1e-13)
    assert float(implied_prompt_weight("grpo", p, n=1)) == 0.0


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: implied_prompt_weight("ppo", 0.5), ValueError, r"method must be one of .*'ppo'"),
        (lambda: implied_prompt_weight("pkpo", 0.5), ValueError, r"k is required for method='pkpo'"),
        (lambda: implied_prompt_weight("grouped-passk", 0.5, n=8), ValueError, r"k is required"),
        (lambda: implied_prompt_weight("pkpo", 1.5, k=2), ValueError, r"p must lie in \[0, 1\].*1.5"),
        (lambda: implied_prompt_weight("grpo", float("nan")), ValueError, r"p must lie in .*nan"),
        (lambda: implied_prompt_weight("pkpo", 0.5, k=2.0), TypeError, r"k must be an integer; got 2.0"),
        (lambda: implied_prompt_weight("pkpo", 0.5, k=0), ValueError, r"k must be >= 1; got 0"),
        (lambda: implied_prompt_weight("pkpo", 0.5, k=9, n=8), ValueError, r"k must be <= n = 8 .*got k=9"),
        (lambda: implied_prompt_weight("pkpo-loo", 0.5, k=8, n=8), ValueError, r"k must be <= n-1 = 7"),
        (lambda: implied_prompt_weight("grpo", 0.5, n=8.0), TypeError, r"n must be an integer; got 8.0"),
        (lambda: implied_prompt_weight("rloo", 0.5, n=1), ValueError, r"n must be >= 2; got 1"),
        (lambda: implied_prompt_weight("grpo", 0.5, n=0), ValueError, r"n must be >= 1; got 0"),
    ],
)
def test_bad_inputs_raise_naming_argument_and_value(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Unbiased estimate of the finite-n implied weight from one group's count


@pytest.mark.parametrize("method", IMPLIED_METHODS)
@pytest.mark.parametrize("n", [3, 8, pytest.param(2, marks=pytest.mark.slow), pytest.param(13, marks=pytest.mark.slow)])
def test_implied_weight_unbiased_expectation_is_finite_n_weight(method, n):
    from scipy.stats import binom

    from theory.implied import implied_weight_unbiased

    counts = np.arange(n + 1)
    k_top = n - 1 if method == "pkpo-loo" else n
    for k in sorted({1, 2, k_top // 2 or 1, k_top}):
        if k < 1 or (method == "pkpo-loo" and k > n - 1):
            continue
        t = np.asarray(implied_weight_unbiased(n, counts, method, k))
        assert t.shape == counts.shape and np.isfinite(t).all()
        p = np.array([0.0, 0.01, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0])
        expected = np.asarray(implied_prompt_weight(method, p, k=np.full(p.shape, k), n=n))
        got = binom.pmf(counts[None, :], n, p[:, None]) @ t
        assert np.all(np.abs(got - expected) <= 1e-12 * np.maximum(1.0, np.abs(expected))), (
            method,
            n,
            k,
            got,
            expected,
        )


@pytest.mark.parametrize("method", ["pkpo", "pkpo-loo", "pkpo-loo-1"])
def test_implied_weight_unbiased_pkpo_is_unbiased_w_k(method):
    from theory.estimators import pass_at_k_weight_unbiased
    from theory.implied import implied_weight_unbiased

    n = 8
    counts = np.arange(n + 1)
    for k in range(1, n if method == "pkpo-loo" else n + 1):
        np.testing.assert_allclose(
            implied_weight_unbiased(n, counts, method, k),
            pass_at_k_weight_unbiased(n, counts, k),
            rtol=1e-12,
            atol=1e-15,
        )


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n=4, c=5, method="grpo"), ValueError, r"c must be <= n = 4; got c=5"),
        (dict(n=4, c=-1, method="grpo"), ValueError, r"c must be >= 0"),
        (dict(n=4, c=1.5, method="grpo"), TypeError, r"c must be an integer"),
        (dict(n=4, c=1, method="pkpo"), ValueError, r"k is required"),
        (dict(n=4, c=1, method="pkpo-loo", k=4), ValueError, r"k must be <= n-1 = 3"),
        (dict(n=4, c=1, method="sgd", k=2), ValueError, r"method must be one of"),
        (dict(n=1, c=1, method="rloo"), ValueError, r"n must be >= 2; got 1"),
    ],
)
def test_implied_weight_unbiased_bad_inputs(kwargs, exc, match):
    from theory.implied import implied_weight_unbiased

    with pytest.raises(exc, match=match):
        implied_weight_unbiased(**kwargs)
