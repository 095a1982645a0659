"""Every entry of `theory.ESTIMATOR_TABLE` through the same invariants (SPEC section 6).

A new trainer added to the table is picked up here without a line of test code. The checks
compare each entry's fields with one another through independent computations:

- `coefficients` against its own validation (order rule, group size), permutations and ties;
- the implied weight `theory.implied_prompt_weight` (which sums the entry's count-form `contrast`)
  against the exact expectation of the update built from `coefficients` over all `2^n` binary
  outcomes (`tests/enumeration.py`);
- `contrast` against `n (s_1(c'+1) - s_0(c'))` read off `coefficients` on explicit groups;
- `limit` against an independent closed form and against the implied weight as `n` grows.

(`tests/test_implied_weights.py` checks the unbiased count estimate of every entry.)
"""

import itertools
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from enumeration import binary_outcomes, count_groups, expected_binary_update  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import theory  # noqa: E402

NAMES = list(theory.ESTIMATOR_TABLE)
ENUM_N = 6  # group size of the 2^n enumerations (one compiled shape per entry)
TABLE_SHAPE = (3, 6)
LEVELS = [0.0, 0.25, 0.5, 1.0]  # few reward levels: ties in most draws


def coefficients(entry, rewards, k):
    """The entry's coefficients, without the documented sigma = 0 warning of grouped-passk."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(entry.coefficients(rewards, k))


def orders(entry, n):
    """A few orders `k` valid at group size `n` (`[None]` for the k-free entries)."""
    if not entry.needs_k:
        return [None]
    top = entry.max_k(n)
    return sorted({1, 2, top // 2 or 1, top} & set(range(1, top + 1)))


def test_table_names_match_entries_and_implied_methods():
    assert tuple(theory.ESTIMATOR_TABLE) == theory.IMPLIED_METHODS
    for name, entry in theory.ESTIMATOR_TABLE.items():
        assert entry.name == name
        assert theory.gradient_estimator(name) is entry
    with pytest.raises(ValueError, match=r"method must be one of .*'ppo'"):
        theory.gradient_estimator("ppo")
    with pytest.raises(TypeError):
        theory.ESTIMATOR_TABLE["new"] = theory.ESTIMATOR_TABLE["pkpo"]  # read-only


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_coefficients_shape_permutation_and_ties(name, data):
    entry = theory.ESTIMATOR_TABLE[name]
    n = TABLE_SHAPE[-1]
    pool = [0.0, 1.0] if entry.binary_only else LEVELS
    flat = data.draw(st.lists(st.sampled_from(pool), min_size=3 * n, max_size=3 * n))
    rewards = np.array(flat).reshape(TABLE_SHAPE)
    k = data.draw(st.sampled_from(orders(entry, n)))
    out = coefficients(entry, rewards, k)
    assert out.shape == rewards.shape and np.all(np.isfinite(out))
    # Permutation-equivariant: bit for bit for the sort-based PKPO weights; to rounding for the
    # mean-based advantages (a floating-point sum depends on the order of its terms).
    perm = np.array(data.draw(st.permutations(range(n))))
    out_perm = coefficients(entry, rewards[:, perm], k)
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-14, atol=1e-15)
    if name.startswith("pkpo"):
        np.testing.assert_array_equal(out_perm, out[:, perm])
    # Tied rewards get equal coefficients, bit for bit.
    for row in range(TABLE_SHAPE[0]):
        for i, j in itertools.combinations(range(n), 2):
            if rewards[row, i] == rewards[row, j]:
                assert out[row, i] == out[row, j]
    # Normalisation: the mean-based entries are their advantages divided by n.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        adv = np.asarray(entry.advantages(rewards, k))
    np.testing.assert_allclose(out, adv if entry.summed else adv / n, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_order_rule_and_group_size_match_the_functions_own_validation(name):
    entry = theory.ESTIMATOR_TABLE[name]
    n = 5
    rewards = np.array([[1.0, 0.0, 1.0, 0.0, 0.0]])
    if entry.needs_k:
        top = entry.max_k(n)
        assert top == n - entry.k_offset
        coefficients(entry, rewards, top)  # the largest allowed order is accepted
        with pytest.raises(ValueError, match=r"k must be <="):
            entry.coefficients(rewards, top + 1)
        with pytest.raises(ValueError, match=rf"k must be <= .* = {top} for method='{name}' at n={n}; got k={top + 1}"):
            entry.check_k(top + 1, n)
        assert entry.min_samples(top) <= n < entry.min_samples(top + 1)
    else:
        assert entry.max_k(n) is None and entry.min_samples(7) == entry.min_n
    small = np.ones((1, entry.min_n))
    coefficients(entry, small, 1 if entry.needs_k else None)
    if entry.min_n > 1:
        with pytest.raises(ValueError, match=r"n >= 2"):
            entry.coefficients(np.ones((1, entry.min_n - 1)), 1 if entry.needs_k else None)
    if entry.binary_only:
        with pytest.raises(ValueError, match=r"binary"):
            entry.coefficients(np.array([[0.5, 1.0, 0.0]]), 1)


@pytest.mark.parametrize("name", NAMES)
def test_implied_weight_is_the_enumerated_expectation_of_the_coefficients(name):
    # E over all 2^n outcomes of sum_i s_i d/dp log pi(y_i), from the coefficients themselves,
    # equals implied_prompt_weight (which sums the entry's count-form contrast instead).
    entry = theory.ESTIMATOR_TABLE[name]
    outcomes = binary_outcomes(ENUM_N)
    for k in orders(entry, ENUM_N):
        s = coefficients(entry, outcomes, k)
        for p in (0.02, 0.3, 0.5, 0.77, 0.98):
            want = expected_binary_update(s, outcomes, p)
            got = float(theory.implied_prompt_weight(name, p, k=k, n=ENUM_N))
            assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (k, p)
            if name.startswith("pkpo"):  # unbiased: w_k(p) at every n, written here independently
                assert want == pytest.approx(k * (1 - p) ** (k - 1), rel=1e-12, abs=1e-14)
            if name in ("reinforce", "rloo"):  # the baseline uses the other answers only
                assert want == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [2, 40])
def test_contrast_is_read_off_the_coefficients_at_every_count(name, n):
    # h(c') = n (s_1(c'+1) - s_0(c')): a correct answer in a group with c'+1 correct against an
    # incorrect one in a group with c' correct (the same c' others).
    entry = theory.ESTIMATOR_TABLE[name]
    assert n >= entry.min_n
    s = coefficients(entry, count_groups(n), None) if not entry.needs_k else None
    for k in orders(entry, n):
        if entry.needs_k:
            s = coefficients(entry, count_groups(n), k)
        others = np.arange(n)
        want = n * (s[others + 1, 0] - s[others, -1])  # row c: c correct first, then n - c incorrect
        if entry.contrast is None:
            np.testing.assert_allclose(want, 1.0, rtol=1e-13)
            continue
        contrast = jax.jit(entry.contrast, static_argnums=(2, 3))
        got = np.asarray(contrast(jnp.asarray(others), jnp.asarray(1 if k is None else k), n, jnp.float64))
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13 * scale)


LIMITS = {  # the n -> infinity weights, written independently (SPEC section 6)
    "reinforce": lambda p, k: 1.0,
    "rloo": lambda p, k: 1.0,
    "grpo": lambda p, k: 1 / np.sqrt(p * (1 - p)),
    "pkpo": lambda p, k: k * (1 - p) ** (k - 1),
    "pkpo-loo": lambda p, k: k * (1 - p) ** (k - 1),
    "pkpo-loo-1": lambda p, k: k * (1 - p) ** (k - 1),
    "grouped-passk": lambda p, k: (1 - p) ** (k - 1) / np.sqrt((1 - (1 - p) ** k) * (1 - p) ** k),
}


@pytest.mark.parametrize("name", NAMES)
def test_limit_matches_independent_form_and_large_n(name):
    entry = theory.ESTIMATOR_TABLE[name]
    assert name in LIMITS, f"add the n -> infinity weight of {name!r} to LIMITS"
    for p, k in ((0.05, 4), (0.3, 1), (0.6, 3), (0.2, 1)):
        kk = k if entry.needs_k else None
        want = LIMITS[name](p, k)
        got = float(theory.implied_prompt_weight(name, p, k=kk))
        assert got == pytest.approx(want, rel=1e-13)
        # The finite-n weight approaches the limit: monotonically where it differs from it (the
        # biased entries), to rounding where it equals it at every n (REINFORCE, RLOO, PKPO).
        errors = [abs(float(theory.implied_prompt_weight(name, p, k=kk, n=n)) - want) for n in (8, 32, 128, 512, 4096)]
        assert errors[-1] < 3e-3 * want
        if errors[0] > 1e-10 * want:
            assert all(b < a for a, b in zip(errors, errors[1:])), errors
        else:
            assert max(errors) <= 1e-11 * want, errors
