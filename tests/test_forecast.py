"""The forecast of "pass@1 lower T steps later": its scores against hand-computed cases, the fit
against independent solutions, the design's disjointness, no skill from shuffled outcomes, and
`passk diagnose --forecast` on a fresh `passk lm` run."""

import json
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from passk import forecast as fc
from passk import forecast_study as fs
from sim.studies import forecast as sf

# --------------------------------------------------------------------------------------------
# Scores on small cases computed by hand


def test_event_labels_by_hand():
    j1 = [0.5, 0.4, 0.6, 0.6, 0.3]
    assert sf.event_labels(j1, 1).tolist() == [1, 0, 0, 1]  # 0.4<0.5, 0.6>0.4, 0.6=0.6 (not lower), 0.3<0.6
    assert sf.event_labels(j1, 3).tolist() == [0, 1]
    assert sf.event_labels(j1, 5).size == 0
    with pytest.raises(ValueError, match="horizon"):
        sf.event_labels(j1, 0)
    with pytest.raises(ValueError, match="j1"):
        sf.event_labels([0.1, float("nan")], 1)


def test_brier_skill_and_ece_by_hand():
    p = np.array([0.1, 0.15, 0.8, 0.9, 0.85])
    y = np.array([0, 1, 1, 1, 0])
    brier = (0.01 + 0.7225 + 0.04 + 0.01 + 0.7225) / 5
    assert sf.brier_score(p, y) == pytest.approx(brier, abs=1e-15)
    reference = (0.09 + 0.49 + 0.49 + 0.49 + 0.09) / 5  # the constant forecast 0.3 (not the share 0.6)
    assert sf.brier_skill(p, y, 0.3) == pytest.approx(1 - brier / reference, abs=1e-15)
    # bins of width 0.1: [0.1, 0.2) holds 0.1, 0.15 (forecast 0.125, observed 0.5);
    # [0.8, 0.9) holds 0.8, 0.85 (0.825 vs 0.5); [0.9, 1] holds 0.9 (vs 1)
    ece = (2 * 0.375 + 2 * 0.325 + 1 * 0.1) / 5
    assert sf.calibration_error(p, y, 10) == pytest.approx(ece, abs=1e-15)
    assert sf.calibration_error(p, y, 1) == pytest.approx(abs(p.mean() - y.mean()), abs=1e-15)
    assert sf.calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0  # p = 1 in the last bin
    with pytest.raises(ValueError, match="undefined"):
        sf.brier_skill(np.array([0.2, 0.3]), np.array([1, 1]), 1.0)
    with pytest.raises(ValueError, match="probabilities"):
        sf.brier_score(np.array([1.2]), np.array([1]))


def test_reliability_bins_carry_wilson_intervals_by_hand():
    p = np.array([0.12, 0.14, 0.16, 0.18, 0.7])
    y = np.array([0, 1, 1, 0, 1])
    table = sf.reliability_table(p, y, n_bins=10)
    assert [(b["lower_edge"], b["n"]) for b in table] == [(0.1, 4), (0.7, 1)]
    assert table[0]["mean_forecast"] == pytest.approx(0.15)
    z = 1.959963984540054
    centre = (0.5 + z * z / 8) / (1 + z * z / 4)
    half = z * math.sqrt(0.25 / 4 + z * z / 64) / (1 + z * z / 4)
    obs = table[0]["observed"]
    assert obs["value"] == 0.5 and obs["n"] == 4
    assert obs["lower"] == pytest.approx(centre - half, abs=1e-12)
    assert obs["upper"] == pytest.approx(centre + half, abs=1e-12)
    assert table[1]["observed"]["upper"] == 1.0 and table[1]["observed"]["lower"] > 0


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=8, max_size=8),
    st.lists(st.integers(0, 1), min_size=8, max_size=8),
)
def test_ece_bounds_and_perfect_calibration(p, y):
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    ece = sf.calibration_error(p, y)
    assert 0 <= ece <= 1
    assert ece <= np.mean(np.abs(p - y)) + 1e-12  # the bin gaps are averages of the row gaps
    # forecasting each bin's observed share (a constant within the bin) is perfectly calibrated
    table = sf.reliability_table(p, y)
    edges = {b["lower_edge"]: b["observed"]["value"] for b in table}
    bins = np.minimum((p * 10).astype(int), 9)
    share = np.array([edges[b / 10] for b in bins])
    assert sf.calibration_error(share, y, 1) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# The fit against independent solutions


def test_irls_on_one_binary_feature_is_the_closed_form():
    # with one 0/1 feature and no penalty the MLE fits each group's share exactly:
    # sigmoid(b + w (x - m)/s) = share of y at x
    x = np.array([0] * 10 + [1] * 6, np.float64)[:, None]
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0] + [1, 1, 1, 1, 1, 0], np.float64)
    model = sf.fit_logistic(x, y, ridge=1e-12)
    p = sf.predict_logistic(model, np.array([[0.0], [1.0]]))
    np.testing.assert_allclose(p, [0.3, 5 / 6], rtol=1e-9)
    logit = lambda q: math.log(q / (1 - q))  # noqa: E731
    assert model["coef"][0] / model["scale"][0] == pytest.approx(logit(5 / 6) - logit(0.3), rel=1e-9)


def test_irls_matches_a_generic_optimiser_on_the_penalised_likelihood():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 3)) * [1.0, 4.0, 0.1] + [0.0, 2.0, -1.0]
    y = (rng.random(120) < 1 / (1 + np.exp(-(x @ [1.0, -0.3, 5.0])))).astype(float)
    ridge = 0.7
    model = sf.fit_logistic(x, y, ridge=ridge)
    z = (x - x.mean(0)) / x.std(0)

    def loss(beta):
        eta = beta[0] + z @ beta[1:]
        return np.sum(np.logaddexp(0, eta) - y * eta) + ridge / 2 * np.sum(beta[1:] ** 2)

    ref = optimize.minimize(loss, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose([model["intercept"], *model["coef"]], ref, atol=1e-5)
    with pytest.raises(ValueError, match="ridge"):
        sf.fit_logistic(x, y, ridge=0.0)
    with pytest.raises(ValueError, match="0/1"):
        sf.fit_logistic(x, y + 0.5)
    with pytest.raises(ValueError, match="only 0s"):
        sf.fit_logistic(x, np.zeros(120))


def test_bootstrap_over_runs_resamples_whole_runs_under_its_key():
    run_ids = np.repeat(np.arange(4), [1, 2, 3, 4])
    values = np.repeat([0.0, 1.0, 2.0, 3.0], [1, 2, 3, 4])
    mean = lambda i: float(values[i].mean())  # noqa: E731
    a = sf.bootstrap_over_runs(mean, run_ids, key=jax.random.key(0), n_boot=300)
    b = sf.bootstrap_over_runs(mean, run_ids, key=jax.random.key(0), n_boot=300)
    assert a == b and a["runs"] == 4 and a["n"] == 10 and a["value"] == pytest.approx(2.0)
    # runs, not rows, are drawn: every replicate mean is a mean of whole runs, so it lies in [0, 3]
    # and a single-run replicate (all four draws the same run) can reach an end
    assert 0 <= a["lower"] < a["value"] < a["upper"] <= 3
    # the pooled size varies from replicate to replicate only when whole runs (of unequal sizes) are drawn
    size = sf.bootstrap_over_runs(lambda i: float(i.size), run_ids, key=jax.random.key(0), n_boot=300)
    assert size["value"] == 10 and size["lower"] < 10 < size["upper"]
    one_run = sf.bootstrap_over_runs(mean, np.zeros(10), key=jax.random.key(1), n_boot=100)
    assert one_run["lower"] == one_run["upper"] == one_run["value"]


# --------------------------------------------------------------------------------------------
# Fit on some runs, judge on others: the design, and no skill from shuffled outcomes


def test_judging_runs_share_no_setting_seed_or_k_with_the_fitting_runs():
    shipped = fc.load_coefficients()
    for size in ("full", "quick"):
        fit, judge = fs.DESIGN[size]["fit"], fs.DESIGN[size]["judge"]
        assert fit["setting"] != judge["setting"]
        assert not set(fit["seeds"]) & set(judge["seeds"])
        assert not {k for _, k in fit["trainers"]} & {k for _, k in judge["trainers"]}
    names = {r["name"] for r in shipped["fit_runs"]}
    full = fs.DESIGN["full"]
    for run in shipped["fit_runs"]:
        assert run["setting"] == full["fit"]["setting"] and run["seed"] in full["fit"]["seeds"]
        assert (run["estimator"], run["k"]) in full["fit"]["trainers"]
        assert run["setting"] != full["judge"]["setting"] and run["seed"] not in full["judge"]["seeds"]
        assert run["k"] not in {k for _, k in full["judge"]["trainers"]}
    assert len(names) == len(full["fit"]["seeds"]) * len(full["fit"]["trainers"])
    assert set(shipped["models"]) == {str(h) for h in fc.HORIZONS}
    assert shipped["features"] == list(fc.FEATURES)


def _synthetic_runs(n_runs, steps, *, seed):
    """Runs whose pass@1 drifts against a slowly varying first feature (the others are noise)."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n_runs):
        signal = np.zeros(steps)
        for t in range(1, steps):
            signal[t] = 0.95 * signal[t - 1] + rng.normal(scale=0.3)
        j1 = 0.5 + np.concatenate([[0.0], np.cumsum(0.02 * signal[:-1] + rng.normal(scale=0.01, size=steps - 1))])
        x = np.column_stack([signal, rng.normal(size=(steps, len(fc.FEATURES) - 1))])
        runs.append(
            {"name": f"r{i}", "setting": "s", "estimator": "e", "k": 2, "trained_k": 2, "seed": i}
            | {"x": x, "z": -signal, "rule": (signal > 0).astype(float), "j1": j1}
        )
    return runs


def test_a_forecast_fitted_on_shuffled_outcomes_has_no_skill():
    fit_runs, judge_set = _synthetic_runs(6, 120, seed=0), _synthetic_runs(6, 120, seed=1)
    key = jax.random.key(2)
    real = fs.judge_runs(fs.fit(fit_runs, horizons=(10,)), judge_set, key=key, n_boot=300)
    shuffled = fs.judge_runs(fs.fit(fit_runs, horizons=(10,), shuffle_key=key), judge_set, key=key, n_boot=300)
    # the test could fail: the real fit finds the drift...
    assert real["10"]["scores"]["logistic"]["skill"]["lower"] > 0.2
    # ...and the shuffled one finds none (its interval reaches 0 or lies below it)
    assert shuffled["10"]["scores"]["logistic"]["skill"]["lower"] <= 0.0


def test_naive_forecast_and_rule():
    np.testing.assert_allclose(fc.naive_forecast([0.0, 1.0, -2.0]), stats.norm.cdf([0.0, -1.0, 2.0]), rtol=1e-12)
    rows = [
        {"k_star": {"first_negative": 3, "signal": False, "k_max": 8}},
        {"k_star": {"first_negative": 5, "signal": True, "k_max": 8}},
        {"k_star": {"first_negative": None, "signal": True, "k_max": 8}},
    ]
    assert fc.rule_forecast(rows, 4).tolist() == [1.0, 0.0, 0.0]


# --------------------------------------------------------------------------------------------
# The command on a fresh run (a seed never used in fitting)

NEW_SEED = 987


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from passk import cli

    assert NEW_SEED not in {r["seed"] for r in fc.load_coefficients()["fit_runs"]}
    out = tmp_path_factory.mktemp("forecast") / "run"
    argv = ["lm", "--out", str(out), "--estimator", "grouped-passk", "--k", "2", "--steps", "4"]
    argv += ["--seed", str(NEW_SEED), "--batch-prompts", "8", "--n-answers", "4", "--quiet", "--no-plot"]
    assert cli.main(argv) == 0
    return out


def test_diagnose_forecast_on_verl_dumps_with_alignments(tmp_path, capsys):
    from dumps import bandit_step, write_verl

    from passk import cli

    for t in range(5):
        write_verl(tmp_path / "run", bandit_step(t, key_seed=40 + t, n_prompts=12, n=8, n_folds=4)[0])
    argv = ["diagnose", str(tmp_path / "run"), "--trained-k", "4", "--forecast", "--k", "2"]
    assert cli.main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert [r["step"] for r in rows] == list(range(5))
    record = fc.load_coefficients()
    for t, row in enumerate(rows):
        f = row["forecast"]
        # the basis is the features of the rows up to this step, and the probability the model's
        x, z = fc.run_features(rows[: t + 1], 4)
        assert [f["basis"][name] for name in fc.FEATURES] == pytest.approx(x[-1].tolist(), abs=1e-12)
        assert f["probability"] == pytest.approx(float(sf.predict_logistic(record["models"]["10"], x[-1])))
        assert f["naive"] == pytest.approx(float(stats.norm.cdf(-z[-1])))
    assert "P(exact pass@1 lower 10 steps later)" in capsys.readouterr().out


@pytest.mark.slow  # a `passk lm` run: about a minute on 2 busy cores
def test_diagnose_forecast_gives_a_probability_per_step(lm_run, tmp_path, capsys):
    from passk import cli

    capsys.readouterr()
    argv = ["diagnose", str(lm_run), "--trained-k", "2", "--forecast", "--horizon", "5"]
    argv += ["--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["steps"]
    assert len(rows) == 4 and report["forecast"] == {"horizon": 5, "trained_k": 2}
    for row in rows:
        f = row["forecast"]
        assert 0 < f["probability"] < 1 and f["horizon"] == 5 and set(f["basis"]) == set(fc.FEATURES)
    text = capsys.readouterr().out
    assert "forecast: P(exact pass@1 lower 5 steps later)" in text
    assert (tmp_path / "r.png").stat().st_size > 0
    # one step file: one probability
    assert (
        cli.main(
            [
                "diagnose",
                str(lm_run / "3.jsonl"),
                "--trained-k",
                "2",
                "--forecast",
                "--json",
                str(tmp_path / "one.json"),
            ]
        )
        == 0
    )
    one = json.loads((tmp_path / "one.json").read_text())
    assert len(one["steps"]) == 1 and 0 < one["steps"][0]["forecast"]["probability"] < 1


@pytest.mark.parametrize(
    "extra, match",
    [([], "--forecast needs --trained-k"), (["--trained-k", "2", "--horizon", "7"], "--horizon must be one of")],
)
def test_diagnose_forecast_bad_flags_are_one_line_exit_2(tmp_path, capsys, extra, match):
    from dumps import bandit_step, write_verl

    from passk import cli

    capsys.readouterr()
    run = tmp_path / "run"
    write_verl(run, bandit_step(0, key_seed=1, n_folds=4)[0])
    assert cli.main(["diagnose", str(run), "--forecast", "--json", str(tmp_path / "r.json"), *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # four short `passk lm` runs: a few minutes on 2 busy cores
def test_reproduce_part_quick_draws_the_diagram_and_scores_every_forecast(tmp_path):
    from passk import reproduce

    record = reproduce.reproduce(outdir=tmp_path, quick=True, seed=0, parts=("forecast",), progress=lambda m: None)
    entry = record["forecast"]
    assert "forecast_reliability.png" in entry["figures"] and (tmp_path / "forecast_reliability.png").stat().st_size
    results = entry["results"]
    fit_names = {r["name"] for r in results["coefficients"]["fit_runs"]}
    assert not fit_names & set(results["judge_runs"]) and len(results["judge_runs"]) == 2
    assert list(results["horizons"]) == ["5"] == [str(h) for h in results["design"]["horizons"]]
    for horizon in ("5",):
        h = results["horizons"][horizon]
        assert h["n"] == 2 * (40 - int(horizon)) and h["runs"] == 2
        assert set(h["scores"]) == set(fs.LABELS)
        for s in h["scores"].values():
            assert s["skill"]["lower"] <= s["skill"]["value"] <= s["skill"]["upper"]
        assert h["scores"]["base_rate"]["skill"]["value"] == pytest.approx(0.0, abs=1e-12)  # the reference itself
    assert any("Brier skill" in name for name in results["headline"])
    # the coefficients written beside the figure load as the shipped ones do
    assert (
        fc.load_coefficients(tmp_path / "forecast_coefficients.json")["fit_runs"] == results["coefficients"]["fit_runs"]
    )
    # a second run reads the cached diagnoses and gives the same numbers
    again = reproduce.reproduce(outdir=tmp_path, quick=True, seed=0, parts=("forecast",), progress=lambda m: None)
    assert again["forecast"]["results"]["horizons"] == results["horizons"]


def test_the_shipped_coefficients_are_those_the_reproduce_part_fitted():
    # `passk diagnose --forecast` applies passk/forecast_coefficients.json; the forecast part of
    # `passk reproduce` writes what it fitted to figures/forecast_coefficients.json.
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shipped = json.loads((root / "passk" / "forecast_coefficients.json").read_text())
    fitted = json.loads((root / "figures" / "forecast_coefficients.json").read_text())
    assert shipped == fitted
