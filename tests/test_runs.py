"""`passk diagnose` over a run's steps (passk/runs.py) and the fixes found trying it as a new user."""

import json

import dumps
import numpy as np
import pytest
from scipy import stats

import theory
from passk import cli, runs
from passk.diagnose import example_path
from passk.frameworks import Options, StepData, read_step


def _counts_step(step, counts, n, fmt="verl"):
    c = np.asarray(counts)
    success = (np.arange(n)[None, :] < c[:, None]).astype(np.int64)
    return StepData(f"{step}.jsonl", step, fmt, [f"q{i}" for i in range(c.size)], success, np.ones((c.size, n), bool))


def test_pass_at_k_cells_are_the_unbiased_mean_with_a_t_interval():
    rng = np.random.default_rng(0)
    sizes = rng.integers(4, 9, size=30)
    c = np.array([rng.integers(0, s + 1) for s in sizes])
    success = np.zeros((30, 8), np.int64)
    mask = np.arange(8)[None, :] < sizes[:, None]
    for i in range(30):
        success[i, : c[i]] = 1
    row = runs.step_row(StepData("x", 1, "verl", [str(i) for i in range(30)], success, mask), [1, 2, 4, 5], 0.9)
    for k in (2, 4):
        rho = np.asarray(theory.pass_at_k_unbiased(sizes, c, k))
        half = stats.t.ppf(0.95, 29) * rho.std(ddof=1) / np.sqrt(30)
        cell = row["pass_at_k"][str(k)]
        np.testing.assert_allclose(
            [cell["value"], cell["lower"], cell["upper"]],
            [rho.mean(), rho.mean() - half, rho.mean() + half],
            rtol=1e-12,
        )
        assert cell["n"] == 30
    np.testing.assert_allclose(row["pass_at_1"]["value"], np.mean(c / sizes), rtol=1e-12)
    smallest = int(np.argmin(sizes))
    assert row["pass_at_k"]["5"]["value"] is None and f"prompt '{smallest}'" in row["pass_at_k"]["5"]["why"]
    assert row["share_unsolved"] == pytest.approx(np.mean(c == 0))
    assert row["n_answers"] == sizes.sum() and row["group_sizes"] == {"min": 4, "max": 8}


def test_trainers_effective_prompts_use_each_groups_own_size():
    step = _counts_step(1, [0, 1, 2, 3], 4)
    step.mask[2:, 3] = False  # the last two groups have 3 answers
    step.success[3, 2] = 1
    step.success[:, 3] *= step.mask[:, 3]
    row = runs.step_row(step, [2], 0.95)
    sizes, c = step.counts, step.correct
    t = np.array([float(theory.implied_weight_unbiased(int(n), int(ci), "pkpo", 2)) for n, ci in zip(sizes, c)])
    omega = t / t.sum()
    got = [e for e in row["trainers"]["pkpo"] if e["k"] == 2][0]["effective_prompts"]
    assert got == pytest.approx(1 / np.sum(omega**2), rel=1e-12)


@pytest.mark.parametrize("counts, noted", [([1, 2, 3], True), ([0, 2, 3], False), ([1, 2, 4], False)])
def test_filtered_groups_note_when_no_prompt_at_zero_or_n(counts, noted):
    row = runs.step_row(_counts_step(1, counts, 4), [1, 2], 0.95)
    assert any("dynamic sampling" in n for n in row["notes"]) == noted


def test_population_k_star_is_theorys_band_on_the_read_arrays(tmp_path):
    theta = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    step, (rewards, align, folds) = dumps.bandit_step(1, key_seed=3, n_prompts=200, n=8, n_folds=8, theta=theta)
    data = read_step(dumps.write_verl(tmp_path, step), "verl", 1, Options())
    row = runs.step_row(data, [1, 2, 4], 0.95)
    want = theory.population_critical_k(rewards, align, folds, level=0.95, key=None)
    ks = row["k_star"]
    assert ks["kind"] == "population" and ks["band"] == "bonferroni" and ks["signal"] is want.signal
    if want.signal:
        assert (ks["estimate"], ks["lower"], ks["upper"]) == (want.estimate, want.lower, want.upper)
    inner = theory.population_inner_product(rewards, align, folds, np.array([1, 2, 4]))
    np.testing.assert_allclose([e["estimate"] for e in row["inner"]], np.asarray(inner.estimate), rtol=1e-10)


def test_batch_k_star_from_score_vectors_and_no_signal_on_noise(tmp_path):
    rng = np.random.default_rng(1)
    rewards = rng.integers(0, 2, size=(40, 6))
    scores = rng.normal(size=(40, 6, 5))  # pure noise: E[G_i] = 0, so I_1 = 0
    sums = theory.answer_sums(rewards.astype(float), scores)
    data = _counts_step(1, rewards.sum(1), 6, fmt="jsonl")
    data.score_sum, data.score_sq_sum = np.asarray(sums.score_sum), np.asarray(sums.score_sq_sum)
    row = runs.step_row(data, [1, 2], 0.95)
    inner = theory.sampled_inner_product(rewards, scores, np.array([1, 2]))
    np.testing.assert_allclose([e["estimate"] for e in row["inner"]], np.asarray(inner.estimate), rtol=1e-10)
    assert row["k_star"]["kind"] == "batch"
    assert row["k_star"]["signal"] is False and row["k_star"]["estimate"] is None
    report = {"steps": [row], "reading": runs.run_reading([row], [1, 2], 0.95, 2)}
    assert runs.verdict(report).startswith("no signal")


def _rising_run(n_steps=8, n_prompts=40, n=8):
    """Counts whose pass@1 falls while pass@8 rises: half the prompts solved often, half never, evening out."""
    rows = []
    for s in range(n_steps):
        frac = s / (n_steps - 1)
        p = np.where(np.arange(n_prompts) % 2 == 0, 0.9 - 0.5 * frac, 0.3 * frac)
        c = np.round(p * n).astype(int)
        c[::5] = np.clip(c[::5] + 1, 0, n)  # spread within each half, so every step has a standard error
        rows.append(runs.step_row(_counts_step(s, c, n), [1, 8], 0.95))
    return rows


def test_run_reading_finds_pass1_falling_while_pass_k_rises():
    rows = _rising_run()
    reading = runs.run_reading(rows, [1, 8], 0.95, None)
    assert reading["slopes"]["pass_at_1"]["upper"] < 0 < reading["slopes"]["pass_at_8"]["lower"]
    assert reading["fell_rose_from"]["8"] == 0
    flat = [runs.step_row(_counts_step(s, [1, 2, 3, 4, 5, 6] * 5, 8), [1, 8], 0.95) for s in range(6)]
    assert runs.run_reading(flat, [1, 8], 0.95, None)["fell_rose_from"]["8"] is None
    # the slope's standard error comes from the steps' own: x-weights a_s = (s - mean) / sum (s - mean)^2
    steps = np.array([r["step"] for r in rows], float)
    a = (steps - steps.mean()) / np.sum((steps - steps.mean()) ** 2)
    se = np.sqrt(np.sum(a**2 * np.array([r["pass_at_1"]["stderr"] for r in rows]) ** 2))
    s1 = reading["slopes"]["pass_at_1"]
    assert s1["slope"] == pytest.approx(a @ [r["pass_at_1"]["value"] for r in rows], rel=1e-12)
    assert (s1["upper"] - s1["lower"]) / 2 == pytest.approx(1.959963984540054 * se, rel=1e-9)


def test_conflict_from_the_first_step_whose_interval_lies_at_or_below_the_trained_k():
    rows = [
        {"step": s, "k_star": ks, "pass_at_1": {"value": 0.5, "lower": None, "stderr": None}, "pass_at_k": {}}
        for s, ks in [
            (1, None),
            (2, {"upper": None, "lower": 3}),
            (3, {"upper": 5, "lower": 2}),
            (4, {"upper": 4, "lower": 2}),
            (5, {"upper": 3, "lower": 2}),
        ]
    ]
    assert runs.run_reading(rows, [1], 0.95, 4)["conflict_from_step"] == 4
    assert runs.run_reading(rows, [1], 0.95, 2)["conflict_from_step"] is None
    assert runs.run_reading(rows, [1], 0.95, None)["conflict_from_step"] is None


def test_command_on_a_run_directory_writes_json_and_figure(tmp_path, capsys):
    run = tmp_path / "verl_run"
    for s in (1, 2, 3):
        step, _ = dumps.bandit_step(s, key_seed=s, n_prompts=24, n=4, n_folds=4)
        dumps.write_verl(run, step)
    out_json, out_png = tmp_path / "o" / "r.json", tmp_path / "o" / "r.png"
    code = cli.main(["diagnose", str(run), "--trained-k", "4", "--json", str(out_json), "--plot", str(out_png)])
    printed = capsys.readouterr().out
    assert code == 0 and "pass@4" in printed
    report = json.loads(out_json.read_text())
    assert set(report) == {"run", "format", "level", "ks", "steps", "reading", "notes"}
    assert report["format"] == "verl" and [r["step"] for r in report["steps"]] == [1, 2, 3]
    assert report["ks"] == [1, 2, 4] and report["reading"]["trained_k"] == 4
    assert {
        "step",
        "n_prompts",
        "n_answers",
        "pass_at_1",
        "pass_at_k",
        "share_unsolved",
        "trainers",
        "inner",
        "k_star",
        "notes",
    } <= set(report["steps"][0])
    assert out_png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# Found when trying `passk diagnose` as a new user would


@pytest.mark.parametrize(
    "flags",
    [
        ["--json", "{readme}/r.json"],
        ["--json", "{dir}"],
        ["--json", "/proc/r.json"],
        ["--json", "{tmp}/fine.json", "--plot", "{readme}/p.png"],
        ["--json", "{tmp}/same.png", "--plot", "{tmp}/same.png"],
    ],
)
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, flags):
    readme = tmp_path / "README.md"
    readme.write_text("x")
    (tmp_path / "adir").mkdir()
    argv = [f.format(readme=readme, dir=tmp_path / "adir", tmp=tmp_path) for f in flags]
    code = cli.main(["diagnose", str(example_path("npz")), *argv])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "\n" not in captured.err.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "adir"] and not any(
        (tmp_path / "adir").iterdir()
    )


def _cli_error(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    return captured.err.strip()


def test_npz_that_is_empty_text_or_a_directory(tmp_path, capsys):
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("rewards\n1 0\n")
    assert "the file is empty" in _cli_error(["diagnose", tmp_path / "empty.npz"], capsys)
    err = _cli_error(["diagnose", tmp_path / "text.npz"], capsys)
    assert "not a zip archive" in err and "allow_pickle" not in err
    (tmp_path / "steps").mkdir()
    assert "no step files" in _cli_error(["diagnose", tmp_path / "steps"], capsys)


def test_uneven_answer_counts_blame_the_odd_prompt(tmp_path, capsys):
    lines = [json.dumps({"prompt_id": f"q{i}", "reward": (i + j) % 2}) for i in range(4) for j in range(3)]
    lines.append(json.dumps({"prompt_id": "q0", "reward": 1}))
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    err = _cli_error(["diagnose", tmp_path / "r.jsonl"], capsys)
    assert "line 13 (prompt 'q0'): prompt has 4 answers but prompt 'q1' has 3" in err


def test_truncated_line_and_nan_score_messages(tmp_path, capsys):
    good = [json.dumps({"prompt_id": "a", "reward": 1, "score": [1.0, 0.0]})] * 2
    (tmp_path / "cut.jsonl").write_text("\n".join(good) + '\n{"prompt_id": "b", "rew')
    assert "line 3: not valid JSON" in (err := _cli_error(["diagnose", tmp_path / "cut.jsonl"], capsys))
    assert "may be cut off" in err
    (tmp_path / "nan.jsonl").write_text("\n".join(good + ['{"prompt_id": "b", "reward": 1, "score": [NaN, 1.0]}']))
    err = _cli_error(["diagnose", tmp_path / "nan.jsonl"], capsys)
    assert "got nan at coordinate 0" in err and "np.float64" not in err


def test_k_beyond_the_answers_is_an_error(capsys):
    err = _cli_error(["diagnose", example_path("npz"), "--k", "100"], capsys)
    assert "--k 100 exceeds the n = 16 answers per prompt" in err


def test_pure_noise_scores_say_no_signal_not_k_star_1(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rewards = rng.integers(0, 2, size=(30, 8))
    np.savez(tmp_path / "noise.npz", rewards=rewards, scores=rng.normal(size=(30, 8, 4)))
    code = cli.main(["diagnose", str(tmp_path / "noise.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "no signal" in out and "k* estimate 1" not in out
    code = cli.main(["diagnose", str(example_path("npz"))])
    out = capsys.readouterr().out
    assert code == 0 and "no signal" not in out and "k* (first k" in out
