"""Correctness of the benchmark baselines and of the `passk bench` runner (no timings asserted)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from passk.benchmarks import agreement, bandit_sweep, estimators, run
from passk.benchmarks._timing import CompileCounter


@pytest.mark.slow
def test_numpy_bandit_training_matches_train_sweep():
    bandits, theta0s = bandit_sweep.make_bandits(
        jax.random.key(3), n_regimes=2, n_prompts=64, n_actions=3, dim=4, dtype=jnp.float64
    )
    kw = dict(ks=(1, 3, 8), steps=6, k_max=8, learning_rate=2.0)
    ours = bandit_sweep.run_sweep(bandits, theta0s, **kw)
    ref = bandit_sweep.numpy_sweep(bandits, theta0s, **kw)
    for name in ("j1", "jk", "inner", "mean_agreement", "cos", "update_inner", "update_norm", "theta"):
        np.testing.assert_allclose(np.asarray(ours[name])[:, :, 0], ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(np.asarray(ours["k_star"])[:, :, 0], ref["k_star"])
    np.testing.assert_array_equal(np.asarray(ours["k_used"])[:, :, 0], ref["k_used"])
    slow = bandit_sweep.numpy_sweep(bandits, theta0s, **kw, prompts_fast=False)
    for name in ref:
        np.testing.assert_allclose(slow[name], ref[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_numpy_k_star_finds_a_conflict():
    # Two prompts: the easy one agrees, the hard one interferes; I_k turns negative at k = 2.
    p = np.array([0.1, 0.9], np.float32)
    c = np.array([-1.0, 3.0], np.float32)
    assert bandit_sweep._k_star(p, c, 10, np.dtype(np.float32)) == theory.critical_k(p, c, k_max=10)
    assert bandit_sweep._k_star(p, np.abs(c), 10, np.dtype(np.float32)) == 11  # sentinel: none


@pytest.mark.parametrize("baseline", estimators.BASELINES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_numpy_pkpo_reference_matches_theory(baseline, k):
    key = jax.random.key(k)
    binary = estimators.make_rewards(key, 16, 12)
    continuous = np.asarray(jax.random.uniform(key, (16, 12)), np.float32)
    continuous[:, :3] = continuous[:, 3:6]  # ties in continuous rewards too
    generated = estimators.make_rewards(key, 16, 12, kind="continuous")
    assert 0 < len(np.unique(generated)) < generated.size  # real-valued, with ties
    for rewards in (binary, continuous, generated):
        got = np.asarray(theory.pkpo_weights(jnp.asarray(rewards), k, baseline=baseline))
        ref = estimators.numpy_pkpo_loop(rewards, k, baseline)
        np.testing.assert_allclose(ref, got, rtol=1e-5, atol=1e-6)


def test_markdown_table_rows():
    rows = [
        {
            "name": "estimators[none]",
            "ours_s": 0.001,
            "baseline_s": 0.1,
            "ratio": 100.0,
            "target": ">= 30x",
            "met": True,
        },
        {
            "name": "scaling[configs]",
            "ours_s": 0.4,
            "baseline_s": 1.2,
            "ratio": 3.0,
            "target": "t",
            "met": False,
            "exponent": 0.76,
            "exponent_upper": 1.0,
            "fit_points": 3,
        },
        {"name": "multi-device", "ours_s": 0.2, "baseline_s": 0.28, "ratio": 1.4, "target": "report", "met": None},
    ]
    lines = run.markdown_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2] == "| `estimators[none]` | 0.001 | 0.1 | 100 | >= 30x | yes |"
    assert "(exponent 1.00 largest 3, 0.76 all)" in lines[3] and lines[3].endswith("| no |")
    assert lines[4].endswith("| - |")


def test_median_of_runs_keeps_the_median_run_and_the_spread():
    def row(ratio, met, ours):
        return {"name": "b", "ours_s": ours, "baseline_s": ours * ratio, "ratio": ratio, "target": ">= 10x", "met": met}

    runs = [
        [
            row(12.0, True, 1.0),
            {"name": "c", "ours_s": 1, "baseline_s": 1, "ratio": 1.0, "target": "report", "met": None},
        ],
        [
            row(8.0, False, 2.0),
            {"name": "c", "ours_s": 1, "baseline_s": 2, "ratio": 2.0, "target": "report", "met": None},
        ],
        [
            row(11.0, True, 3.0),
            {"name": "c", "ours_s": 1, "baseline_s": 3, "ratio": 3.0, "target": "report", "met": None},
        ],
    ]
    b, c = run.median_of_runs(runs)
    assert b["ratio"] == 11.0 and b["ours_s"] == 3.0 and b["met"] is True  # the whole median run's row
    assert (b["ratio_min"], b["ratio_max"], b["met_runs"], b["runs"]) == (8.0, 12.0, 2, 3)
    assert c["ratio"] == 2.0 and c["met_runs"] is None
    line = run.markdown_table([b]).splitlines()[2]
    assert "| 11 [8, 12] |" in line and line.endswith("| yes (2 of 3) |")
    # a time target: the row picked by its ratio met it in one run of three, so it is not met
    timed = [
        [{"name": "t", "ours_s": s, "baseline_s": 3.0, "ratio": 3.0 / s, "target": "< 2 s", "met": s < 2}]
        for s in (1.9, 2.2, 2.1)
    ]
    (t_row,) = run.median_of_runs(timed)
    assert t_row["ours_s"] == 2.1 and t_row["met"] is False and t_row["met_runs"] == 1
    with pytest.raises(ValueError, match="lacks 'c'"):
        run.median_of_runs([runs[0], runs[1][:1]])


def test_median_of_runs_shows_the_median_exponent_not_the_picked_runs():
    # the row is picked by its ratio (run 0 here), but the target is on the exponent over the largest
    # sizes: the table shows the median of the three exponents and their range
    runs = [
        [
            {
                "name": "scaling[configs]",
                "ours_s": 1.0,
                "baseline_s": 2.0,
                "ratio": r,
                "target": "band",
                "met": 0.85 <= up <= 1.15,
                "exponent": e,
                "exponent_upper": up,
                "fit_points": 3,
            }
        ]
        for r, up, e in ((2.0, 0.79, 0.82), (2.4, 0.95, 0.84), (1.8, 0.90, 0.80))
    ]
    (row,) = run.median_of_runs(runs)
    assert row["ratio"] == 2.0 and row["exponent_upper"] == 0.79
    assert row["exponent_upper_runs"] == [0.79, 0.95, 0.90] and row["met_runs"] == 2 and row["met"] is True
    line = run.markdown_table([row]).splitlines()[2]
    assert "(exponent 0.90 [0.79, 0.95] largest 3, 0.82 all)" in line and line.endswith("| yes (2 of 3) |")


def test_make_rewards_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind.*'ternary'"):
        estimators.make_rewards(jax.random.key(0), 2, 4, kind="ternary")


def test_numpy_pkpo_reference_values():
    r = np.array([1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(estimators.numpy_pkpo_weights(r, 2), [1 / 2, 1 / 2, 1 / 3, 1 / 3])
    np.testing.assert_allclose(estimators.numpy_pkpo_weights(r, 2, "loo"), [1 / 18, 1 / 18, -1 / 3, -1 / 3])
    np.testing.assert_allclose(estimators.numpy_pkpo_weights(r, 2, "loo-1"), [1 / 3, 1 / 3, 0, 0])


@pytest.mark.slow
def test_agreement_jvp_matches_per_prompt_gradients():
    params, prompts, answers, config = agreement.setup(jax.random.key(0), modulus=3, d_model=16, n_layers=1)
    fns = agreement._functions(config, chunk_size=5)
    a_jvp = np.asarray(fns["jvp"](params, prompts, answers))
    a_ref = np.asarray(fns["pergrad"](params, prompts, answers))
    np.testing.assert_allclose(a_jvp, a_ref, rtol=1e-4, atol=1e-7 * np.max(np.abs(a_ref)))


def test_compile_counter_sees_one_compile_per_shape():
    f = jax.jit(lambda x: x * 2)
    with CompileCounter() as c:
        f(jnp.ones(3))
        f(jnp.ones(3))
    assert c.names.count("jit(<lambda>)") == 1


def test_runner_writes_json_with_documented_keys(tmp_path, monkeypatch, capsys):
    # The smallest sizes: shrink the quick estimator benchmark further.
    real = estimators.make_rewards
    monkeypatch.setattr(
        estimators,
        "make_rewards",
        lambda key, g, n, dtype=jnp.float32, kind="binary": real(key, 8, n, dtype, kind=kind),
    )
    path = tmp_path / "bench.json"
    from passk import cli

    assert cli.main(["bench", "--quick", "--json", str(path), "--only", "estimators"]) == 0
    rows = json.loads(path.read_text())
    assert [r["name"] for r in rows] == [
        "estimators[none]",
        "estimators[loo]",
        "estimators[loo-1]",
        "estimators[none, continuous]",
        "estimators[loo, continuous]",
        "estimators[loo-1, continuous]",
    ]
    for r in rows:
        assert {"name", "ours_s", "baseline_s", "ratio", "target"} <= set(r)
        assert r["ours_s"] > 0 and r["baseline_s"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_s"] / r["ours_s"])
        assert r["max_abs_diff"] < 1e-5
    assert "estimators[loo-1]" in capsys.readouterr().out


def test_runner_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown benchmark"):
        run.run(quick=True, only=["nope"])


def test_scaling_plot_writes_png_and_pdf(tmp_path):
    from passk.plots import bench as bench_plot

    rows = [
        {"name": "scaling[prompts]", "sizes": [1, 2, 4], "seconds": [1.0, 2.1, 3.9], "steps": 5},
        {"name": "scaling[configs]", "sizes": [8, 16, 32], "seconds": [1.0, 1.6, 3.1], "steps": 5, "fit_points": 2},
    ]
    paths = bench_plot.draw(rows, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert bench_plot.draw([{"name": "estimators[none]"}], tmp_path) == []


@pytest.mark.slow
def test_numpy_bandit_training_matches_train_sweep_with_sparse_diagnostics():
    bandits, theta0s = bandit_sweep.make_bandits(
        jax.random.key(4), n_regimes=2, n_prompts=64, n_actions=3, dim=4, dtype=jnp.float64
    )
    kw = dict(ks=(1, 3, 8), steps=7, k_max=8, learning_rate=2.0, record_every=3)
    ours = bandit_sweep.run_sweep(bandits, theta0s, **kw)
    ref = bandit_sweep.numpy_sweep(bandits, theta0s, **kw)
    for name in ("j1", "jk", "inner", "mean_agreement", "cos", "update_inner", "update_norm", "theta"):
        np.testing.assert_allclose(np.asarray(ours[name])[:, :, 0], ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(np.asarray(ours["k_star"])[:, :, 0], ref["k_star"])
    assert np.isnan(ref["inner"][0, 0, 1]) and ref["k_star"][0, 0, 1] == -1
    diff = bandit_sweep.max_record_diff(ours, ref)
    assert max(v for n, v in diff.items() if n != "k_star_equal_share") < 1e-9
    assert diff["k_star_equal_share"] == 1.0


def test_numpy_sampled_reference_matches_theory():
    """The `sampled` benchmark's numpy baseline reads the same `k*` interval as `theory`."""
    from passk.benchmarks import sampled

    for seed in range(3):
        rewards, scores = sampled.make_run(jax.random.key(seed), 128, 16, 8)
        got = theory.sampled_critical_k(rewards, np.asarray(scores, np.float64))
        assert sampled.numpy_sampled_critical_k(rewards, np.asarray(scores, np.float64)) == (
            got.estimate,
            got.lower,
            got.upper,
        )
    assert got.estimate is not None  # the run is built to cross


def test_sampled_row_is_met_by_reads_of_the_scores_alone():
    """The `sampled` row's target is on `ours / read-once floor` (at most `READS_TARGET` reads of the
    scores) with the same `k*` as the numpy closed form; the ratio to numpy is reported, no target."""
    from passk.benchmarks import sampled

    (got,) = sampled.bench(quick=True, key=jax.random.key(0), repeats=1)
    assert got["same_k_star"] is True and got["k_star"][0] is not None
    assert got["floor_s"] > 0 and got["ours_over_floor"] == pytest.approx(got["ours_s"] / got["floor_s"])
    assert got["met"] is (got["ours_over_floor"] <= sampled.READS_TARGET)
    assert got["target"].startswith(f"<= {sampled.READS_TARGET} reads of the scores") and ">=" not in got["target"]
    assert got["scores_bytes"] == 512 * 32 * 64 * 4


def test_diagnose_benchmark_writes_a_run_the_reader_accepts(tmp_path):
    from passk import diagnose as dg
    from passk.benchmarks.diagnose import write_run

    path = tmp_path / "run.jsonl"
    write_run(path, 5, n_answers=6, dim=3)
    run = dg.read_run(path)
    assert run.n == 6 and len(run.prompt_ids) == 5 and run.score_sum.shape == (5, 3)
    assert path.read_text().count("\n") == 30


def test_run_scale_benchmark_writes_a_verl_run_the_step_reader_accepts(tmp_path):
    import json as json_

    from passk.benchmarks import run_scale
    from passk.frameworks import Options, list_steps
    from passk.runs import diagnose_run

    size = run_scale.write_run_dir(tmp_path, 3, n_prompts=8, n_answers=5)
    assert [(s, f) for s, _, f in list_steps(tmp_path)] == [(1, "verl"), (2, "verl"), (3, "verl")]
    text = (tmp_path / "2.jsonl").read_text()
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) == size and text.count("\n") == 40
    first = json_.loads(text.splitlines()[0])
    # verl's `_dump_generations` keys, then the reward extra `acc`, `uid` and the section 11 fields
    assert list(first) == ["input", "output", "gts", "score", "step", "acc", "uid", "fold", "alignment"]
    report = diagnose_run(tmp_path, options=Options(), ks=[1, 2])
    assert [r["n_answers"] for r in report["steps"]] == [40, 40, 40]
    assert all(r["k_star"]["kind"] == "population" for r in report["steps"])
    assert run_scale.read_floor(tmp_path) > 0


def test_bandit_sweep_profile_names_the_project_lines_that_cost_time():
    """The child process dumps the optimised HLO and traces the sweep; every kernel of the step
    loop is traced to a line of `sim/` or `theory/`, and the shares add up."""
    from passk.benchmarks.profile import bandit_sweep_profile, format_profile

    prof = bandit_sweep_profile(quick=True, record_every=1)
    sources = [row["source"] for row in prof["sources"]]
    assert any(s.startswith("sim/bandit.py:pullback:") for s in sources), sources
    assert any(s.startswith("theory/critical.py:") for s in sources), sources
    ms = [row["ms"] for row in prof["sources"]]
    assert ms == sorted(ms, reverse=True) and ms[0] > 0
    assert 0 < sum(row["share"] for row in prof["sources"]) <= 1 + 1e-9
    untraced = sum(row["share"] for row in prof["sources"] if row["source"].startswith("(not traced"))
    assert untraced < 0.2, prof["sources"]
    assert prof["total_ms"] >= sum(ms) - 1e-9
    assert "pullback" in format_profile(prof)


def test_interleaved_pauses_before_each_call_and_does_not_time_the_pause(monkeypatch):
    from passk.benchmarks import _timing

    slept, order = [], []
    monkeypatch.setattr(_timing.time, "sleep", lambda s: (slept.append(s), order.append("pause")))
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    out = _timing.interleaved(fns, 2, pause_s=0.25, warm_below_s=0.0)
    assert order == ["pause", "a", "pause", "b"] * 2  # the pause comes before the clock starts
    assert slept == [0.25] * 4 and set(out) == {"a", "b"}


def test_interleaved_keeps_the_second_of_two_calls_only_for_short_calls(monkeypatch):
    """A call under `warm_below_s` is made again at once and its second time is kept; a longer
    call is timed once. Durations come from a fake clock that each call advances."""
    from passk.benchmarks import _timing

    clock = [0.0]
    monkeypatch.setattr(_timing.time, "sleep", lambda s: None)
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock[0])
    durations = {"short": iter([0.010, 0.004] * 3), "long": iter([0.9, 0.8, 0.7])}
    calls = {name: 0 for name in durations}

    def call(name):
        calls[name] += 1
        clock[0] += next(durations[name])

    fns = {name: (lambda name=name: call(name)) for name in durations}
    out = _timing.interleaved(fns, 3, reduce=list, warm_below_s=0.5)
    assert calls == {"short": 6, "long": 3}
    assert out["short"] == pytest.approx([0.004] * 3)  # the back-to-back call, not the first
    assert out["long"] == pytest.approx([0.9, 0.8, 0.7])


def test_probe_row_reports_its_cost_in_training_steps():
    from passk.benchmarks import probe

    (r,) = probe.bench(quick=True, key=jax.random.key(0), repeats=1)
    assert r["name"].startswith("probe[") and r["F"] == probe.N_FOLDS
    assert r["steps"] == pytest.approx(r["ours_s"] / r["baseline_s"])
    assert r["met"] == (r["steps"] <= probe.TARGET_STEPS)
    assert r["ours_s"] > 0 and r["baseline_s"] > 0


@pytest.mark.slow  # compiles the trainer, the sampler, the probe and the sketch: minutes on a loaded machine
def test_lm_rows_sampler_agrees_with_the_python_loop_and_costs_are_in_training_updates():
    from passk.benchmarks import lm

    rows = {r["name"].split("[")[0]: r for r in lm.bench(quick=True, key=jax.random.key(0), repeats=1)}
    assert set(rows) == {"lm sampler", "lm trainer step", "lm probe", "lm sketch"}
    assert rows["lm sampler"]["agree"] is True
    step = rows["lm trainer step"]
    assert step["baseline_s"] == lm.STEP_BUDGET_S and step["steps_per_s"] == pytest.approx(1 / step["ours_s"])
    for name in ("lm probe", "lm sketch"):
        r = rows[name]
        assert r["steps"] == pytest.approx(r["ours_s"] / r["baseline_s"])
        assert r["baseline_s"] == rows["lm probe"]["baseline_s"]  # the same training update is the unit
    assert rows["lm probe"]["met"] == (rows["lm probe"]["steps"] <= lm.PROBE_TARGET_STEPS)


def test_python_loop_sampler_draws_what_the_compiled_sampler_draws():
    from passk.benchmarks import lm
    from sim.lm import policy as P
    from sim.lm import task as T

    task = T.LMTask(n_digits=3, prompt_digits=3, answer_len=3, need=2, hard_share=0.25, n_eval=8)
    model = P.model_config(task, d_model=8, n_heads=2, n_layers=1, d_mlp=16)
    from sim.transformer import model as M

    params = M.init(jax.random.key(0), model)
    prompts = T.draw_prompts(task, 4, key=jax.random.key(1))
    key = jax.random.key(2)
    a, la = P.sample_answers(params, prompts, 5, model, task, key=key)
    b, lb = lm.python_loop_sampler(params, prompts, 5, model, task, key=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=1e-6)
    c, _ = lm.python_loop_sampler(params, prompts, 5, model, task, key=jax.random.key(3))
    assert not np.array_equal(np.asarray(a), np.asarray(c))  # the key matters: the agreement is not trivial
