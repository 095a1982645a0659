"""`passk.lm_diagnosis`: per-step checks against the exact values, their pooling, and the estimand gap."""

import json
import math

import numpy as np
import pytest

from passk import lm_diagnosis as D
from passk import runs
from passk.frameworks import Options

N_PROMPTS, N_ANSWERS, N_FOLDS, DIM, K = 16, 8, 4, 4, 3


def _write_run(folder, *, steps=6, seed=0, inner=0.05, k_star=5, sketch=True):
    """A run folder of `passk lm`'s layout: verl dumps with alignments (and scores) and a run.json."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for t in range(steps):
        lines = []
        for i in range(N_PROMPTS):
            fold = i % N_FOLDS
            p = rng.uniform(0.2, 0.8)
            for _ in range(N_ANSWERS):
                r = int(rng.random() < p)
                align = [None if f == fold else float(1.0 + 0.5 * rng.normal()) for f in range(N_FOLDS)]
                score = (1.0 + rng.normal(size=DIM)).tolist() if sketch else r
                lines.append(
                    json.dumps(
                        {
                            "input": f"P:{i}",
                            "output": "0",
                            "gts": "0",
                            "score": score,
                            "acc": r,
                            "step": t,
                            "uid": f"{t}-{i}",
                            "fold": fold,
                            "alignment": align,
                        }
                    )
                )
        (folder / f"{t}.jsonl").write_text("\n".join(lines) + "\n")
        records.append({"step": t, "inner": inner, "k_star": k_star})
    record = {
        "setting": "few-hard",
        "seed": seed,
        "sketch_dim": DIM if sketch else 0,
        "config": {"k": K, "n_folds": N_FOLDS, "estimator": "grouped-passk"},
        "records": records,
    }
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def _mutate(folder, **fields):
    record = json.loads((folder / "run.json").read_text())
    for r in record["records"]:
        r.update(fields)
    (folder / "run.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("lmdiag")
    return [_write_run(base / f"run{s}", seed=s) for s in range(2)]


def test_pooled_counts_are_the_per_step_booleans_summed(two_runs):
    diagnoses = [D.diagnose_lm_run(f) for f in two_runs]
    assert all(set(d["sections"]) == {"population", "batch"} for d in diagnoses)
    summary = D.summarise(diagnoses)
    for section in ("population", "batch"):
        checks = [c for d in diagnoses for c in d["sections"][section]]
        pooled = summary[section]["all"]
        assert pooled["steps"] == len(checks) == 12
        covered = [c["inner_covered"] for c in checks if c["degenerate"] is False]
        assert pooled["inner_coverage"]["steps"]["count"] == sum(covered)
        assert pooled["inner_coverage"]["steps"]["n"] == len(covered)
        readings = [c["k_star_covered"] for c in checks if c["k_star_covered"] is not None]
        assert pooled["k_star_coverage"]["steps"]["count"] == sum(readings)
        assert pooled["no_reading"] == len(checks) - len(readings)
        power = [c["established"] for c in checks if c["conflict"]]
        assert pooled["power"]["steps"]["n"] == len(power) and pooled["power"]["steps"]["count"] == sum(power)
        # the over-runs interval is the t interval of the two runs' own shares
        shares = [
            np.mean([c["inner_covered"] for c in d["sections"][section] if c["degenerate"] is False]) for d in diagnoses
        ]
        assert pooled["inner_coverage"]["runs"]["value"] == pytest.approx(np.mean(shares))
        for c in checks:  # each interval is the estimate +- q se at the trained k
            assert c["lower"] <= c["estimate"] <= c["upper"]
            assert c["inner_covered"] == (c["lower"] <= c["exact_inner"] <= c["upper"])
    # the population interval uses the t quantile with F - 1 = 3 degrees of freedom
    report = runs.diagnose_run(two_runs[0], options=Options(reward_field="acc"), ks=[K], section="population")
    cell = report["steps"][0]["inner"][0]
    check = diagnoses[0]["sections"]["population"][0]
    assert (check["upper"] - check["estimate"]) / cell["stderr"] == pytest.approx(3.182446305, rel=1e-6)


def test_exact_value_moved_outside_every_interval_gives_coverage_zero(tmp_path):
    folder = _write_run(tmp_path / "run")
    before = D.summarise([D.diagnose_lm_run(folder)])
    assert before["population"]["all"]["inner_coverage"]["steps"]["count"] > 0
    _mutate(folder, inner=1e6, k_star=0)
    after = D.summarise([D.diagnose_lm_run(folder)])
    for section in ("population", "batch"):
        pooled = after[section]["all"]
        assert pooled["inner_coverage"]["steps"]["count"] == 0 and pooled["inner_coverage"]["steps"]["n"] > 0
        assert pooled["k_star_coverage"]["steps"]["count"] == 0
        assert pooled["inner_coverage"]["runs"]["value"] == 0


def test_k_star_interval_reading():
    base = {"estimate": 4, "lower": 3, "upper": 6, "k_max": 15, "signal": True}
    cell = [{"k": K, "estimate": -1.0, "stderr": 0.25}]

    def check(exact_k, **crit):
        row = {"step": 0, "inner": cell, "k_star": {**base, **crit}}
        return D.step_check(row, {"inner": -0.6, "k_star": exact_k}, trained_k=K, quantile=2.0)

    assert check(3)["k_star_covered"] and check(6)["k_star_covered"] and not check(7)["k_star_covered"]
    assert not check(2)["k_star_covered"]
    # no upper end: conflict not established up to k_max, so any larger k* (or none) is inside
    assert check(40, upper=None)["k_star_covered"] and check(None, upper=None)["k_star_covered"]
    assert not check(None)["k_star_covered"]
    # no lower end: the interval lies above k_max
    assert not check(15, lower=None, upper=None)["k_star_covered"]
    assert check(16, lower=None, upper=None)["k_star_covered"]
    # no signal: no reading, and not established
    quiet = check(3, signal=False)
    assert quiet["k_star_covered"] is None and quiet["established"] is False
    # power: conflict at the trained k (exact k* = 2 <= 3), established when the upper end <= 3
    assert check(2, upper=3)["established"] and check(2, upper=3)["conflict"]
    assert not check(2, upper=4)["established"]
    one = check(2)
    assert one["inner_covered"] and one["negative"] and math.isclose(one["upper"], -0.5)


def test_section_choice_is_checked(tmp_path):
    folder = _write_run(tmp_path / "plain", steps=1, sketch=False)
    report = runs.diagnose_run(folder, options=Options(), ks=[K], section="batch")
    assert report["steps"][0]["inner"] == [] and report["steps"][0]["k_star"] is None
    assert any("no score vectors" in n for n in report["notes"])
    assert set(D.diagnose_lm_run(folder)["sections"]) == {"population"}
    with pytest.raises(ValueError, match="section must be one of"):
        runs.diagnose_run(folder, options=Options(), section="both")
    with pytest.raises(ValueError, match="no run.json"):
        D.diagnose_lm_run(tmp_path)


@pytest.mark.slow  # a real run of a few steps, then exact evaluations: about a minute
def test_on_a_short_run_and_the_estimand_gap(tmp_path):
    from passk.lm import run_lm

    sizes = dict(n_digits=3, prompt_digits=3, n_eval=8, d_model=8, n_layers=1, d_mlp=16, batch_prompts=8, n_answers=4)
    out = tmp_path / "run"
    record = run_lm(
        setting="many-hard",
        estimator="grouped-passk",
        k=2,
        steps=3,
        seed=0,
        out=out,
        plot=False,
        sketch_dim=8,
        checkpoint_every=1,
        **sizes,
    )
    d = D.diagnose_lm_run(out)
    assert [c["step"] for c in d["sections"]["batch"]] == [0, 1, 2]
    for checks in d["sections"].values():
        for c, r in zip(checks, record["records"]):
            assert c["exact_inner"] == r["inner"] and c["exact_k_star"] == r["k_star"]
    result = D.report([d], [{"run": out.name, **D.estimand_gap(out, n_eval=8, batches=2)}], sketch_dim=8)
    gap = result["gap"][0]
    assert gap["step"] == 3 and gap["k"] == 2 and len(gap["batch"]["inner"]) == 2
    # a "larger" set of the run's own size is the run's evaluation set: no gap
    assert gap["eval_minus_large"] == 0 and gap["eval"] == {**gap["large"], "n": 8}
    assert json.dumps(result, allow_nan=False)
    assert any("section 10" in key for key in result["headline"])
