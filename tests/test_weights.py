"""SPEC section 2: pass@k is a reweighted pass@1 gradient; properties of `w_k` and `omega`."""

import math
from decimal import Decimal, getcontext, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import theory

getcontext().prec = 60
# Digits for the references: 1 - p must be exact for p down to the smallest float64 (~5e-324).
_EXACT_DIGITS = 400

probs = st.floats(0.0, 1.0, allow_nan=False)
ks = st.integers(1, 10**6)
small_ks = st.integers(2, 200)


def exact_log_weight(p: float, k: int):
    """`log k + (k-1) log(1-p)` in 400-digit decimal arithmetic (p converted exactly from float64);
    None for `log 0`."""
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS  # 1 - p exactly, also for p ~ 1e-300
        one_minus = 1 - Decimal(p)
        if one_minus == 0:
            return Decimal(0) if k == 1 else None
        return +(Decimal(k).ln() + one_minus.ln() * (k - 1))


def exact_pass_at_k(p: float, k: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS
        one_minus = 1 - Decimal(p)
        if one_minus == 0:
            return Decimal(1)
        return 1 - (one_minus.ln() * k).exp()


@given(p=probs)
def test_w1_is_one_exactly(p):
    assert float(theory.pass_at_k_weight(p, 1)) == 1.0
    assert float(theory.pass_at_k_weight(1.0, 1)) == 1.0


@given(k=small_ks)
def test_wk_endpoints(k):
    assert float(theory.pass_at_k_weight(0.0, k)) == k
    assert float(theory.pass_at_k_weight(1.0, k)) == 0.0


@given(k=small_ks, p=st.lists(probs, min_size=8, max_size=8))
def test_wk_decreasing_and_bounded_for_k_at_least_2(k, p):
    p = np.sort(np.asarray(p))
    w = np.asarray(theory.pass_at_k_weight(p, k))
    assert np.all(np.diff(w) <= 0)
    # from w_k(0) = k down to w_k(1) = 0, along k (1-p)^(k-1) written out here
    np.testing.assert_allclose(w, k * (1 - p) ** (k - 1), rtol=1e-9, atol=1e-300)


@given(p=st.floats(0.0, 0.999), gap=st.floats(1e-3, 0.999), k=st.integers(1, 500))
def test_weight_ratio_grows_geometrically_in_k(p, gap, k):
    p_hi = p + gap * (1 - p)  # 1 - p_hi >= 1e-6: never solved (that case is the test below)
    log_ratio = lambda kk: float(theory.log_pass_at_k_weight(p, kk) - theory.log_pass_at_k_weight(p_hi, kk))
    # log(w_k(p)/w_k(p')) = (k-1) log((1-p)/(1-p')): each step in k adds the same positive amount
    step = np.log1p(-p) - np.log1p(-p_hi)
    assert step > 0
    np.testing.assert_allclose(log_ratio(k + 1) - log_ratio(k), step, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 500])
def test_weight_ratio_against_a_solved_prompt(k):
    """`w_k(1) = 0` for `k >= 2`: any unsolved prompt outweighs a solved one infinitely."""
    log_ratio = float(theory.log_pass_at_k_weight(0.3, k) - theory.log_pass_at_k_weight(1.0, k))
    assert log_ratio == (np.log(k) + (k - 1) * np.log1p(-0.3) if k == 1 else np.inf)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("k", [1, 2, 7, 64])
def test_weight_is_derivative_of_pass_at_k_autodiff(dtype, k):
    # The reference differentiates 1 - (1-q)^k written here, not theory's own derivative rule
    # (which returns the same w_k helper as pass_at_k_weight).
    p = jnp.linspace(0.0, 0.95, 11, dtype=dtype)
    reference = jax.vmap(jax.grad(lambda q: 1 - (1 - q) ** k))(p)
    grad = jax.vmap(jax.grad(lambda q: theory.pass_at_k(q, k)))(p)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(theory.pass_at_k_weight(p, k), reference, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, reference, rtol=tol, atol=tol)
    # and a central difference of pass_at_k itself, in float64
    p64 = np.linspace(0.05, 0.9, 11)
    h = 1e-6
    fd = (np.asarray(theory.pass_at_k(p64 + h, k)) - np.asarray(theory.pass_at_k(p64 - h, k))) / (2 * h)
    np.testing.assert_allclose(
        np.asarray(jax.vmap(jax.grad(lambda q: theory.pass_at_k(q, k)))(p64)), fd, rtol=1e-7, atol=1e-8
    )
    assert theory.pass_at_k_weight(p, k).dtype == dtype


def test_pass_at_k_gradient_is_finite_at_p_equal_1():
    grad = jax.grad(theory.pass_at_k)
    assert float(grad(1.0, 1)) == 1.0
    assert float(grad(1.0, 2)) == 0.0 and float(grad(1.0, 10**6)) == 0.0
    assert float(grad(0.0, 7)) == 7.0
    second = jax.grad(jax.grad(theory.pass_at_k))(0.5, 3)  # d w_3 / dp = -6 (1-p)
    np.testing.assert_allclose(float(second), -3.0, rtol=1e-12)


unsolved = st.one_of(
    st.floats(0.0, 1.0, exclude_max=True), st.floats(0, 1e-12), st.floats(1 - 1e-12, 1.0, exclude_max=True)
)


@given(k=ks, p=unsolved)
# (1-p)^(k-1) ~ 1e-309 is subnormal (flushed to 0 by XLA on CPU) while w_k ~ 4.5e-303 is normal
@example(k=10**6, p=-math.expm1(-710.0 / (10**6 - 1)))
def test_weight_accuracy_at_extremes(k, p):
    exact_log = exact_log_weight(p, k)
    got = float(theory.pass_at_k_weight(p, k))
    log_got = float(theory.log_pass_at_k_weight(p, k))
    assert abs(Decimal(log_got) - exact_log) <= Decimal("1e-10") * max(Decimal(1), abs(exact_log))
    if exact_log > Decimal("2.3e-308").ln():  # a normal float64
        exact = exact_log.exp()
        assert abs(Decimal(got) - exact) <= Decimal("1e-10") * exact
    else:  # underflow: 0 (XLA on CPU flushes subnormals) or the subnormal value, never NaN
        assert abs(Decimal(got) - exact_log.exp()) <= Decimal("2.3e-308")


@pytest.mark.parametrize("k", [2, 3, 10**6])
def test_weight_of_a_solved_prompt(k):
    """`p = 1`: `w_k = 0` and `log w_k = -inf` for `k >= 2` (`w_1 = 1` is the test above)."""
    assert exact_log_weight(1.0, k) is None
    assert float(theory.pass_at_k_weight(1.0, k)) == 0.0
    assert float(theory.log_pass_at_k_weight(1.0, k)) == -np.inf


def test_underflow_carried_by_log_weight():
    p, k = 1 - 1e-12, 10**6
    assert float(theory.pass_at_k_weight(p, k)) == 0.0
    expected = np.log(k) + (k - 1) * np.log1p(-p)
    np.testing.assert_allclose(float(theory.log_pass_at_k_weight(p, k)), expected, rtol=1e-12)


@given(k=ks, p=st.one_of(probs, st.floats(0, 1e-12), st.floats(1 - 1e-12, 1.0)))
@example(k=1, p=7.779011329377063e-53)  # 1 - p needs 70 digits: the reference must not round it
def test_pass_at_k_accuracy_at_extremes(k, p):
    exact = exact_pass_at_k(p, k)
    got = float(theory.pass_at_k(p, k))
    # XLA on CPU reads a subnormal input (0 < p < 2.2e-308) as 0: relative accuracy from normal p.
    accurate = abs(Decimal(got) - exact) <= Decimal("1e-10") * exact  # exact = 0 only at p = 0
    if 0 < p < np.finfo(np.float64).tiny:
        assert got == 0.0 or accurate  # documented: XLA on CPU reads a subnormal p as 0
    else:
        assert accurate


@given(p=st.lists(probs, min_size=6, max_size=6), k=st.integers(1, 10**6), seed=st.integers(0, 2**32 - 1))
def test_normalized_weights_are_softmax_of_log_weights(p, k, seed):
    p = np.asarray(p)
    mu = np.random.default_rng(seed).dirichlet(np.ones(6))
    omega = np.asarray(theory.normalized_weights(p, k, mu))
    np.testing.assert_allclose(omega.sum(), 1.0, rtol=1e-12)
    with np.errstate(divide="ignore"):
        logits = (k - 1) * np.log1p(-p) + np.log(mu) if k > 1 else np.log(mu)
    if np.isfinite(logits).any():
        ref = np.exp(logits - logits.max())
        np.testing.assert_allclose(omega, ref / ref.sum(), rtol=1e-9, atol=1e-300)


@given(p=st.lists(st.floats(0.0, 0.99), min_size=5, max_size=5, unique=True), seed=st.integers(0, 1000))
def test_normalized_weights_concentrate_on_hardest_prompt(p, seed):
    p = np.asarray(p)
    mu = np.random.default_rng(seed).dirichlet(np.ones(5))
    hardest = int(np.argmin(p))
    ks_ = np.array([1, 2, 4, 16, 64, 256, 10**4, 10**6])
    share = np.asarray(theory.normalized_weights(p, ks_, mu))[:, hardest]
    assert np.all(np.diff(share) >= -1e-12)  # monotone in k
    gap = np.sort(np.log1p(-p))[-1] - np.sort(np.log1p(-p))[-2]
    if gap * (10**6 - 1) > 50:
        assert share[-1] > 1 - 1e-12


def test_normalized_weights_when_every_p_is_one_is_mu():
    mu = np.array([0.2, 0.3, 0.5])
    omega = theory.normalized_weights(np.ones(3), np.array([1, 2, 10**6]), mu)
    np.testing.assert_array_equal(np.asarray(omega), np.tile(mu, (3, 1)))
    assert not np.isnan(np.asarray(theory.log_normalized_weights(np.ones(3), 5, mu))).any()


def test_normalized_weights_batch_shapes():
    p = np.random.default_rng(0).uniform(size=(3, 4))
    assert theory.normalized_weights(p, np.array([1, 2]), None).shape == (2, 3, 4)
    assert theory.normalized_weights(p, 3).shape == (3, 4)


def test_jit_and_vmap_agree_with_eager():
    p = jnp.linspace(0, 1, 9)
    k = jnp.arange(1, 10)
    np.testing.assert_array_equal(jax.jit(theory.pass_at_k_weight)(p, k), theory.pass_at_k_weight(p, k))
    np.testing.assert_array_equal(jax.vmap(theory.pass_at_k)(p, k), theory.pass_at_k(p, k))


def test_float32_behaviour_documented():
    # float32: same formulas, float32 rounding; w_k at k = 10^6 underflows where float64 does not.
    p32 = jnp.float32(1e-5)
    assert theory.pass_at_k_weight(p32, 100).dtype == jnp.float32
    np.testing.assert_allclose(theory.pass_at_k_weight(p32, 100), 100 * (1 - 1e-5) ** 99, rtol=1e-6)
    assert float(theory.pass_at_k_weight(jnp.float32(0.5), 200)) == 0.0
    assert np.isfinite(float(theory.log_pass_at_k_weight(jnp.float32(0.5), 200)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: theory.pass_at_k_weight(0.5, 0), r"k must be >= 1; got 0"),
        (lambda: theory.pass_at_k(0.5, -3), r"k must be >= 1; got -3"),
        (lambda: theory.pass_at_k_weight(1.5, 2), r"p must lie in \[0, 1\].*1\.5"),
        (lambda: theory.pass_at_k_weight(-0.1, 2), r"p must lie in \[0, 1\].*-0\.1"),
        (lambda: theory.pass_at_k(float("nan"), 2), r"p must lie in \[0, 1\].*nan"),
        (lambda: theory.normalized_weights([0.1, 0.2], 2, mu=[0.7, 0.7]), r"mu must sum to 1"),
        (lambda: theory.normalized_weights([0.1, 0.2], 2, mu=[1.5, -0.5]), r"mu must be non-negative.*-0\.5"),
        (lambda: theory.normalized_weights([0.1, 0.2], 2, mu=[1.0]), r"mu must have 2 entries"),
    ],
)
def test_bad_input_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: theory.pass_at_k_weight(0.5, 2.5), r"k must be an integer; got 2\.5"),
        (lambda: theory.pass_at_k_weight(0.5, 2.0), r"k must be an integer; got 2\.0"),
        (lambda: theory.pass_at_k_weight(0.5, True), r"k must be an integer; got True"),
        (lambda: theory.pass_at_k_weight(0.5, None), r"k must be an integer; got None"),
        (lambda: theory.pass_at_k(0.5, None), r"k must be an integer; got None"),
        (lambda: theory.log_pass_at_k_weight(0.5, None), r"k must be an integer; got None"),
        (lambda: theory.normalized_weights([0.5, 0.2], None), r"k must be an integer; got None"),
        (lambda: theory.pass_at_k(0.5, np.array([1.0, 2.0])), r"k must be an integer"),
        (lambda: theory.pass_at_k("0.5", 2), r"p must be a number"),
    ],
)
def test_bad_input_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()
