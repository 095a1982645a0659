"""The five bandit confirmations (`sim.studies`) at small size: numbers, their JSON, and the figures."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from passk.presets import QUICK
from sim.studies import critical_k, first_order
from sim.studies import serialise as J
from sim.studies.confirmations import run_all
from sim.studies.dynamics import SUMMARISED, dynamics
from sim.studies.estimator_check import estimator_check
from sim.studies.one_step import one_step
from sim.studies.phase import phase_diagram
from sim.train import ESTIMATORS
from sim.train import RECORD_NAMES as R

KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module")
def critical_result():
    return critical_k.critical_k_agreement(
        key=KEY, p_hards=(0.1, 0.3), separations=(0.5, 2.5), start_logits=(2.0, 3.0), n_seeds=1, n_prompts=24, k_grid=64
    )


def test_confirmation_1_differentiates_its_own_pass_at_k():
    """The objective confirmation 1 differentiates, `sum_i mu_i (1 - (1 - p_i)^k)` written out,
    equals the bandit's `J_k` and its gradient `sum_i mu_i w_k(p_i) grad p_i` to float64 rounding
    (the check does not run through `theory.pass_at_k` or its derivative rule)."""
    from sim import toy_bandit

    with jax.enable_x64(True):
        b, theta = toy_bandit(KEY, n_prompts=24, dtype=jax.numpy.float64)
        for k in (1, 3, 17, 64):
            value = critical_k._pass_at_k_objective(b, theta, k)
            grad = jax.grad(critical_k._pass_at_k_objective, argnums=1)(b, theta, k)
            np.testing.assert_allclose(value, b.objective(theta, k), rtol=1e-14)
            np.testing.assert_allclose(grad, b.pass_at_k_grad(theta, k), rtol=1e-12, atol=1e-15 * np.abs(grad).max())


@pytest.fixture(scope="module")
def phase_result():
    return phase_diagram(key=KEY, n_p_hard=5, n_separation=3, n_seeds=2, n_prompts=32)


def test_confirmation_1_critical_k_equals_autodiff_crossing(critical_result):
    np.testing.assert_array_equal(critical_result.k_star_predicted, critical_result.k_star_autodiff)
    res = J.to_json(critical_result)
    json.dumps(res, allow_nan=False)
    assert res["n_regimes"] == 8
    assert res["n_conflict"] >= 4
    assert res["all_match"], res["mismatches"]
    assert res["n_match"] == res["n_regimes"]


def test_confirmation_2_phase_diagram(phase_result):
    assert phase_result.k_star.shape == (2, 5, 3) and phase_result.median_k_star.shape == (5, 3)
    res = J.to_json(phase_result)
    json.dumps(res, allow_nan=False)
    k_star = res["k_star"]
    assert np.shape(k_star) == (2, 5, 3)
    assert len(res["median_k_star"]) == 5 and len(res["median_k_star"][0]) == 3
    assert 0 < res["share_cells_with_conflict"] <= 1
    # the area in conflict is a mean over seeds of each seed's share of cells, with a t interval
    conflict = phase_result.k_star <= phase_result.k_max  # (S, I, J)
    per_seed = conflict.mean(axis=(1, 2))
    area = res["area_in_conflict"]
    assert area["n"] == 2 and area["value"] == pytest.approx(per_seed.mean())
    assert area["lower"] <= area["value"] <= area["upper"]
    agree = conflict.all(axis=0) | (~conflict).all(axis=0)
    np.testing.assert_array_equal(phase_result.seeds_agree, agree)
    assert res["cells_seeds_disagree"] == int((~agree).sum())
    # k* is drawn only where every seed conflicts
    np.testing.assert_array_equal(np.isfinite(phase_result.k_star_agreed), conflict.all(axis=0))
    # direct check of one cell against the bandit's own diagnostics
    from sim import toy_bandit

    key = jax.random.split(KEY, 2)[1]
    b, t0 = toy_bandit(key, n_prompts=32, p_hard=float(res["p_hard"][2]), separation=float(res["separation"][1]))
    direct = int(b.diagnostics(t0, 1, k_max=res["k_max"]).k_star)
    assert k_star[1][2][1] == (None if direct > res["k_max"] else direct)


@pytest.fixture(scope="module")
def one_step_result():
    return one_step(key=KEY, n_instances=200)


@pytest.mark.slow
def test_confirmation_3_one_step(one_step_result):
    res = J.to_json(one_step_result)
    json.dumps(res, allow_nan=False)
    assert res["n_conflict"] >= 20 and res["conflict"]["n"] == 200
    assert res["conflict"]["value"] == res["n_conflict"] / 200
    for field in ("share_pass1_down", "share_passk_up", "share_both"):
        share = res["sgd"][field]
        assert share["value"] == 1.0 and share["n"] >= 20 and share["lower"] < 1.0, field
    assert res["sgd"]["max_descent_lemma_gap_over_rounding"] <= 1.0
    assert res["project_safe"]["share_pass1_down"]["value"] == 0.0
    # Adam's shares count the same resolved instances as its first-order sign
    assert res["adam"]["share_pass1_down"]["n"] == res["adam_predictors"]["raises"]["n"]
    assert res["hessian"]["max_ratio_to_bound"] <= 1.0
    # Inside the window both changes have the right sign, so the largest working step is at
    # least the window's step (every looseness ratio >= 1)
    loose = res["window_looseness"]
    for key in ("both", "pass1", "passk"):
        assert loose[key]["below_one"]["value"] == 0.0 and loose[key]["n"] == res["n_conflict"], key
        assert min(loose[key]["log10_sample"]) >= 0.0
    # Adam's first step is a sign step: the |g_1|-weighted sign agreement decides, to first order
    rules = res["adam_predictors"]["rules"]
    assert rules["weighted_sign_agreement"]["value"] >= 0.97
    assert rules["weighted_sign_agreement"]["value"] > rules["sign_agreement"]["value"]


def test_first_turn_finds_the_crossing_and_censors():
    grid = jax.numpy.asarray(first_order.LOOSENESS_GRID)
    with jax.enable_x64(True):
        grid = grid.astype(jax.numpy.float64)
        got = float(first_order.first_turn(lambda e: e >= 3.7, grid))
        assert 3.7 <= got <= 3.7 * (1 + 1e-9)
        assert float(first_order.first_turn(lambda e: e >= 0.5, grid)) == pytest.approx(
            0.5, rel=1e-9
        )  # before the grid
        assert float(first_order.first_turn(lambda e: e < 0, grid)) == np.inf  # never turns: censored


def test_window_looseness_factors_multiply_to_the_pass1_ratio():
    """The four factors of `eta_max1 / eta_1` multiply back to it, instance by instance."""
    rng = np.random.default_rng(3)
    n = 64
    mean_abs = rng.uniform(0.1, 1.0, n)
    r = {
        "eta1": rng.uniform(0.1, 1.0, n),
        "etak": rng.uniform(0.1, 1.0, n),
        "eta_max1": rng.uniform(1.0, 50.0, n),
        "eta_maxk": rng.uniform(1.0, 50.0, n),
        "L1": np.full(n, 0.5 * 9.0),
        "inner": -rng.uniform(0.01, 1.0, n),
        "gk_sq": rng.uniform(0.1, 2.0, n),
        "mean_hess_norm": mean_abs * rng.uniform(1.0, 3.0, n),
        "mean_abs_curv": mean_abs,
        "curv": mean_abs * rng.uniform(-0.5, 1.0, n),
    }
    # make eta_1 the window of L_1 as one_step computes it
    r["eta1"] = 2 * -r["inner"] / (r["L1"] * r["gk_sq"])
    out = J.to_json(first_order.window_looseness(r, np.ones(n, bool)))
    pos = r["curv"] > 0
    assert out["negative_curvature"]["value"] == pytest.approx(1 - pos.mean())
    total = sum(
        np.asarray(out["factors"][f]["log10_sample"]) for f in ("constant", "norm", "cancellation", "higher_order")
    )
    np.testing.assert_allclose(total, np.log10(r["eta_max1"][pos] / r["eta1"][pos]), rtol=1e-12, atol=1e-12)
    dominant = sum(v["value"] for v in out["dominant"].values())
    assert dominant == pytest.approx(1.0)


@pytest.fixture(scope="module")
def dynamics_result():
    return dynamics(key=KEY, steps=12, n_seeds=2, n_samples=36, n_prompts=64, sampled=("pkpo-loo/sgd",))


@pytest.mark.slow
def test_confirmation_4_dynamics(dynamics_result):
    summary = dynamics_result.runs["exact/sgd"]["passk"]
    assert summary.mean.j1.shape == (3, 13) and summary.mean.k_star is None
    res = J.to_json(dynamics_result)
    json.dumps(res, allow_nan=False)
    assert set(res["runs"]["exact/sgd"]["passk"]) >= set(SUMMARISED) | {"k_star_median", "trend"}
    assert res["ks"] == [1, res["k_low"], res["k_high"]]
    assert res["k_low"] < res["k_star0"] <= res["k_high"]
    for name in ("exact/sgd", "pkpo-loo/sgd", "exact/adam"):
        t = res["runs"][name]["passk"]["trend"]
        assert t[0][R.j1]["end"] > t[0][R.j1]["start"], name  # pass@1 ascent raises J_1
        assert t[1][R.j1]["end"] > t[1][R.j1]["start"] and t[1][R.jk]["end"] > t[1][R.jk]["start"], name
        assert t[2][R.jk]["end"] > t[2][R.jk]["start"], name
    for name in ("exact/sgd", "pkpo-loo/sgd"):  # plain steps above k*: J_1 falls
        t = res["runs"][name]["passk"]["trend"][2]
        assert t[R.j1]["end"] < t[R.j1]["start"], name
    ex = res["runs"]["exact/sgd"]
    assert ex["passk"]["trend"][2][R.j1]["monotone_down_steps"] == 12
    assert ex["project-safe"]["trend"][2][R.j1]["min"] >= ex["project-safe"]["trend"][2][R.j1]["start"]
    assert ex["project-safe"]["trend"][2][R.jk]["end"] > ex["project-safe"]["trend"][2][R.jk]["start"]
    assert len(ex["passk"]["k_star_median"][2]) == 13
    # means over seeds carry a 95% t interval (none for the one exact seed)
    from sim.intervals import mean_interval

    sampled = dynamics_result.runs["pkpo-loo/sgd"]["passk"]
    assert sampled.n_seeds == 2
    j1 = res["runs"]["pkpo-loo/sgd"]["passk"][R.j1]
    m, s = j1["mean"][2][-1], j1["std"][2][-1]
    assert s > 0
    check = mean_interval([m - s / np.sqrt(2), m + s / np.sqrt(2)])  # two seeds with this mean and sd
    assert j1["lower"][2][-1] == pytest.approx(check["lower"]) and j1["upper"][2][-1] == pytest.approx(check["upper"])
    assert ex["passk"][R.j1]["lower"] == ex["passk"][R.j1]["mean"] == ex["passk"][R.j1]["upper"]


@pytest.fixture(scope="module")
def estimator_result():
    return estimator_check(key=KEY, n_draws=3000, n_prompts=24, k=4, n_samples=8)


@pytest.mark.slow
def test_confirmation_5_estimators(estimator_result):
    res = J.to_json(estimator_result)
    json.dumps(res, allow_nan=False)
    rows = res["estimators"]
    assert set(rows) == set(ESTIMATORS[1:])
    for name, row in rows.items():
        # the mean of 3000 updates is within Monte-Carlo error of the exact expectation
        assert row["z_max"] < 5.0, (name, row)
    for name in ("pkpo", "pkpo-loo", "pkpo-loo-1"):
        assert rows[name]["cos_expected_vs_grad_jk"] == pytest.approx(1.0, abs=1e-12)
    # baselines reduce variance: no baseline > leave-one-out > (k-1) baseline here
    assert rows["pkpo"]["relative_total_variance"] > rows["pkpo-loo"]["relative_total_variance"]
    assert rows["reinforce"]["relative_variance_along_grad_jk"] is not None


@pytest.mark.slow
def test_figures(tmp_path, critical_result, phase_result, one_step_result, dynamics_result, estimator_result):
    from passk.plots.bandit import draw
    from sim import toy_diagnostics

    results = J.to_json(
        {
            "toy": toy_diagnostics(0.2, 1.0, 8, n_prompts=32),
            "critical_k": critical_result,
            "phase_diagram": phase_result,
            "one_step": one_step_result,
            "dynamics": dynamics_result,
            "estimators": estimator_result,
        }
    )
    paths = draw(json.loads(json.dumps(results, allow_nan=False)), tmp_path / "figs")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"bandit_{n}.{ext}"
        for n in ("toy", "critical_k", "phase", "one_step", "first_order", "dynamics", "estimators")
        for ext in ("png", "pdf")
    )
    for p in paths:
        assert p.stat().st_size > 1000
    assert not list((tmp_path / "figs").glob(".*.tmp"))


@pytest.mark.slow
def test_run_all_quick(tmp_path):
    """The whole `run_all` at the quick preset's sizes (about a minute on two loaded cores), then every figure."""
    from passk.plots.bandit import draw

    lines = []
    res = J.to_json(run_all(sizes=QUICK.bandit, key=KEY, progress=lines.append))
    text = json.dumps(res, allow_nan=False)
    assert set(res) == {"toy", "critical_k", "phase_diagram", "one_step", "dynamics", "estimators", "meta"}
    assert res["critical_k"]["all_match"] and res["one_step"]["sgd"]["share_both"]["value"] == 1.0
    assert res["critical_k"]["mismatch_rate"]["value"] == 0.0
    assert len(lines) == 6 and len(text) > 10_000
    assert len(draw(res, tmp_path)) == 14


def test_run_all_refuses_sizes_it_cannot_place():
    with pytest.raises(ValueError, match="unknown confirmations.*'phase_diagram'"):
        run_all(sizes={"phase_diagram": {}}, key=KEY)
    with pytest.raises(TypeError, match="sizes must be a dict"):
        run_all(sizes=[("phase", {})], key=KEY)
