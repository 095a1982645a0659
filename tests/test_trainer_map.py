"""`sim.studies.trainer_map`: every trainer's own conflict over the toy's regimes (SPEC sections 6, 8)."""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from enumeration import binary_outcomes, expected_binary_update  # noqa: E402

import theory  # noqa: E402
from sim.studies.trainer_map import trainer_conflicts, trainer_map, trainer_map_summary  # noqa: E402
from sim.toy import toy_bandit  # noqa: E402

SIZES = dict(
    n_p_hard=2,
    n_separation=3,
    n_seeds=2,
    n_prompts=16,
    group_sizes=(4, 6),
    p_hard_range=(0.2, 0.5),
    separation_range=(0.5, 3.0),
)


@pytest.fixture(scope="module")
def result():
    return trainer_map(key=jax.random.key(3), **SIZES)


def cell(result, seed, i, j):
    """The toy bandit's `p`, `a`, `mu` at its start in one cell (float32, as the map draws it)."""
    key = jax.random.split(jax.random.key(3), SIZES["n_seeds"])[seed]
    bandit, theta0 = toy_bandit(
        key,
        n_prompts=SIZES["n_prompts"],
        p_hard=jnp.float32(result.p_hard[i]),
        separation=jnp.float32(result.separation[j]),
    )
    return (
        np.asarray(bandit.success(theta0), np.float64),
        np.asarray(bandit.agreement_scores(theta0), np.float64),
        np.asarray(bandit.prompt_weights, np.float64),
    )


def test_shapes_and_orders(result):
    for method, est in theory.ESTIMATOR_TABLE.items():
        inner = result.inner[method]
        n_k = est.max_k(6) if est.needs_k else 1
        assert inner.shape == (2, n_k, 2, 2, 3)
        if est.needs_k:  # orders beyond max_k(n) are NaN, the others finite
            assert np.all(np.isnan(inner[0, est.max_k(4) :])) and np.all(np.isfinite(inner[0, : est.max_k(4)]))


def test_reinforce_and_rloo_never_conflict(result):
    # v = 1: I_v = sum mu a = ||grad J_1||^2 >= 0
    for method in ("reinforce", "rloo"):
        assert np.all(result.inner[method] > 0)


def test_pkpo_critical_order_is_the_exact_k_star_capped_at_max_k(result):
    # PKPO is unbiased, so its trainer's critical order is theory.critical_k of the same (p, a).
    checked = 0
    for s in range(2):
        for i in range(2):
            for j in range(3):
                p, a, mu = cell(result, s, i, j)
                exact = theory.critical_k(p, a, mu, k_max=10**4)
                for g, n in enumerate(SIZES["group_sizes"]):
                    for method in ("pkpo", "pkpo-loo", "pkpo-loo-1"):
                        top = theory.gradient_estimator(method).max_k(n)
                        want = exact if exact is not None and exact <= top else 0
                        assert result.critical_k[method][g, s, i, j] == want, (method, n, s, i, j, exact)
                        checked += 1
    assert checked == 2 * 2 * 3 * 2 * 3


@pytest.mark.parametrize("method", ["grpo", "grouped-passk"])
def test_biased_trainers_inner_product_matches_enumerated_weights(result, method):
    # I_v from v(p_i) enumerated over all 2^n outcomes of the trainer's own coefficients.
    n = 4
    outcomes = binary_outcomes(n)
    est = theory.gradient_estimator(method)
    k = est.max_k(n) if est.needs_k else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grouped-passk's documented sigma = 0 groups
        s_coef = np.asarray(est.coefficients(outcomes, k))
    p, a, mu = cell(result, 1, 1, 2)
    v = np.array([expected_binary_update(s_coef, outcomes, float(np.clip(pi, 1e-12, 1 - 1e-12))) for pi in p])
    want = float(np.sum(mu * v * a))
    got = float(result.inner[method][0, (k or 1) - 1, 1, 1, 2])
    assert got == pytest.approx(want, rel=2e-4, abs=1e-7)  # the map runs in float32


def test_summary_counts_and_intervals(result):
    summary = trainer_map_summary(result)
    assert set(summary) == set(theory.ESTIMATOR_TABLE)
    total = SIZES["n_seeds"] * SIZES["n_p_hard"] * SIZES["n_separation"]
    for method, rows in summary.items():
        for row, n in zip(rows, SIZES["group_sizes"]):
            share = row["conflict_at_some_k"] if row["uses_k"] else row["conflict"]
            assert share["n"] == total and share["lower"] <= share["value"] <= share["upper"]
            g = SIZES["group_sizes"].index(n)
            if row["uses_k"]:  # some allowed k has I_v < 0
                top = theory.gradient_estimator(method).max_k(n)
                want = np.mean(np.any(result.inner[method][g, :top] < 0, axis=0))
            else:
                want = np.mean(result.inner[method][g, 0] < 0)
            assert share["value"] == pytest.approx(want)
    assert summary["rloo"][0]["conflict"]["value"] == 0.0


@pytest.mark.slow
def test_trainer_conflicts_at_one_policy_match_the_map_entry(result):
    p, a, mu = cell(result, 1, 1, 2)
    out = trainer_conflicts(p, a, mu, group_sizes=SIZES["group_sizes"])
    for method, rows in out.items():
        est = theory.gradient_estimator(method)
        for g, row in enumerate(rows):
            if est.needs_k:
                want = result.inner[method][g, : est.max_k(row["n"]), 1, 1, 2]
                np.testing.assert_allclose(row["inner"], want, rtol=1e-10)
                crit = result.critical_k[method][g, 1, 1, 2]
                assert row["critical_k"] == (int(crit) or None)
            else:
                assert row["inner"] == pytest.approx(float(result.inner[method][g, 0, 1, 1, 2]), rel=1e-10)
                assert row["conflict"] == (row["inner"] < 0)


def test_trainer_conflicts_run_in_float64_under_jax_default_precision():
    """At JAX's default precision (float32) the conflicts at one policy are still computed in
    float64: no truncation warning, the numbers of a float64 session."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 40)
    a = rng.normal(size=40) * 1e-3
    want = trainer_conflicts(p, a, group_sizes=(4, 8))  # this module runs with x64 on
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = trainer_conflicts(p, a, group_sizes=(4, 8))
    assert got == want
