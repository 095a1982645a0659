"""`passk diagnose` and `sim.diagnose_model` (SPEC sections 6 and 10)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sim  # noqa: E402
import theory  # noqa: E402
from passk import cli, jsonl_reader, readers  # noqa: E402
from passk import diagnose as dg  # noqa: E402
from passk.examples import make as example_make  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Helpers


def bandit_scores(bandit, theta, answers):
    """Exact score vectors `(e_y - pi) psi^T`, flattened: `(P, n, A d)`."""
    pi = bandit.policy(theta)
    onehot = jax.nn.one_hot(answers, bandit.n_actions, dtype=pi.dtype)
    s = (onehot - pi[:, None, :])[..., None] * bandit.features[:, None, None, :]
    return np.asarray(s.reshape(answers.shape + (-1,)))


def bandit_logp(theta, batch):
    logits = jnp.einsum("...d,ad->...a", batch["x"], theta)
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), batch["y"][..., None], -1)[..., 0]


def bandit_batch(bandit, answers):
    feats = bandit.features
    return {"x": jnp.broadcast_to(feats[:, None, :], answers.shape + feats.shape[-1:]), "y": answers}


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def small_run():
    bandit, theta = sim.toy_bandit(jax.random.key(3), n_prompts=24, n_actions=4)
    answers, rewards = sim.draw_answers(bandit, theta, 6, key=jax.random.key(4))
    return bandit, theta, answers, np.asarray(rewards)


# ---------------------------------------------------------------------------------------------
# The report from arrays


def test_report_matches_theory_and_counts_only_report(small_run):
    bandit, theta, answers, rewards = small_run
    scores = bandit_scores(bandit, theta, answers)
    c, big_g, q = sim.score_sums(rewards, scores)
    rep = sim.diagnosis_report(c, 6, score_sum=big_g, score_sq_sum=q, ks=[1, 2, 3, 4, 6, 9])
    inner = theory.sampled_inner_product(rewards, scores, np.arange(1, 6))
    np.testing.assert_allclose([e["estimate"] for e in rep["inner"]], inner.estimate, rtol=1e-12)
    np.testing.assert_allclose([e["stderr"] for e in rep["inner"]], inner.stderr, rtol=1e-12)
    crit = theory.sampled_critical_k(rewards, scores)
    assert rep["k_star"] == {
        "estimate": crit.estimate,
        "lower": crit.lower,
        "upper": crit.upper,
        "level": 0.95,
        "band": "bonferroni",
        "quantile": crit.quantile,
        "signal": crit.signal,
    }
    np.testing.assert_allclose(
        [p["agreement"] for p in rep["prompts"]],
        theory.sampled_agreement_scores(rewards, scores),
        rtol=1e-12,
        atol=1e-15,
    )
    assert [p["c"] for p in rep["prompts"]] == [int(x) for x in rewards.sum(1)]
    assert rep["k_max"] == 5 and rep["n_prompts"] == 24 and rep["samples_per_prompt"] == 6
    # k = 9 > n: a note; pkpo-loo also skips k = 6 = n
    assert any("k=9 exceeds n = 6" in note for note in rep["notes"])
    assert [e["k"] for e in rep["trainers"]["pkpo-loo"]] == [1, 2, 3, 4]
    assert [e["k"] for e in rep["trainers"]["pkpo"]] == [1, 2, 3, 4, 6]
    assert [e["k"] for e in rep["trainers"]["grpo"]] == [None]

    counts_only = sim.diagnosis_report(c, 6, ks=[1, 2, 3, 4, 6, 9])
    assert counts_only["inner"] == [] and counts_only["k_star"]["estimate"] is None
    assert counts_only["k_star"]["lower"] is None and counts_only["k_star"]["upper"] is None
    assert all(p["agreement"] is None for p in counts_only["prompts"])
    assert counts_only["notes"][0] == sim.diagnose.NO_SCORES_NOTE
    assert counts_only["trainers"] == rep["trainers"]


def test_trainer_concentration_from_unbiased_finite_n_weights():
    c = np.array([0, 0, 1, 3, 5, 8, 8, 2, 0, 4, 6, 7])
    mu = np.linspace(1.0, 2.0, c.size)
    rep = sim.diagnosis_report(c, 8, mu=mu, ks=[4])
    for method in ("grpo", "grouped-passk", "pkpo-loo-1"):
        k = None if method == "grpo" else 4
        t = np.asarray(theory.implied_weight_unbiased(8, c, method, k))
        omega = (mu / mu.sum()) * t
        omega /= omega.sum()
        (entry,) = rep["trainers"][method]
        assert entry["k"] == k
        assert entry["effective_prompts"] == pytest.approx(1 / np.sum(omega**2), rel=1e-12)
        assert entry["share_unsolved"] == pytest.approx(omega[c == 0].sum(), rel=1e-12)
        assert entry["top_decile_share"] == pytest.approx(np.sort(omega)[-2:].sum(), rel=1e-12)  # ceil(12/10) = 2
    # REINFORCE weighs prompts by mu alone
    (entry,) = rep["trainers"]["reinforce"]
    assert entry["effective_prompts"] == pytest.approx(1 / np.sum((mu / mu.sum()) ** 2), rel=1e-12)
    # pass@k piles weight on the unsolved prompts as k grows
    rep2 = sim.diagnosis_report(c, 8, ks=[1, 2, 4, 8])
    shares = [e["share_unsolved"] for e in rep2["trainers"]["pkpo"]]
    assert shares == sorted(shares) and shares[-1] > 3 * shares[0]


def test_k_star_rule_matches_theory_on_random_runs():
    rng = np.random.default_rng(5)
    for _ in range(5):  # shapes of small_run (P = 24, n = 6, D = 8): compiled once
        r = (rng.random((24, 6)) < rng.random((24, 1))).astype(float)
        s = rng.normal(size=(24, 6, 8)) + np.where(rng.random((24, 1, 1)) < 0.3, -1.0, 1.0)
        c, big_g, q = sim.score_sums(r, s)
        rep = sim.diagnosis_report(c, 6, score_sum=big_g, score_sq_sum=q, level=0.8)
        crit = theory.sampled_critical_k(r, s, level=0.8)
        assert (rep["k_star"]["estimate"], rep["k_star"]["lower"], rep["k_star"]["upper"]) == (
            crit.estimate,
            crit.lower,
            crit.upper,
        )


# ---------------------------------------------------------------------------------------------
# The Python API on a JAX model


def test_diagnose_model_exact_equals_theory_on_explicit_scores(small_run):
    bandit, theta, answers, rewards = small_run
    rep = sim.diagnose_model(bandit_logp, theta, bandit_batch(bandit, answers), rewards, chunk_size=7)
    scores = bandit_scores(bandit, theta, answers)
    inner = theory.sampled_inner_product(rewards, scores, np.arange(1, 6))
    np.testing.assert_allclose([e["estimate"] for e in rep["inner"]], inner.estimate, rtol=1e-10)
    np.testing.assert_allclose([e["stderr"] for e in rep["inner"]], inner.stderr, rtol=1e-10)
    crit = theory.sampled_critical_k(rewards, scores)
    assert (rep["k_star"]["estimate"], rep["k_star"]["lower"], rep["k_star"]["upper"]) == (
        crit.estimate,
        crit.lower,
        crit.upper,
    )
    assert rep["scores"] == "exact" and rep["score_dim"] == theta.size


def test_diagnose_model_sketch_is_unbiased(small_run):
    bandit, theta, answers, rewards = small_run
    batch = bandit_batch(bandit, answers)
    exact = np.array([e["estimate"] for e in sim.diagnose_model(bandit_logp, theta, batch, rewards)["inner"]])
    draws = np.array(
        [
            [
                e["estimate"]
                for e in sim.diagnose_model(
                    bandit_logp,
                    theta,
                    batch,
                    rewards,
                    scores="sketch",
                    sketch_dim=4,
                    key=jax.random.key(100 + i),
                    chunk_size=4,
                )["inner"]
            ]
            for i in range(100)
        ]
    )
    spread = draws.std(0, ddof=1)
    varies = spread > 0  # k where some prompt contributes (elsewhere every estimate is exactly 0)
    assert varies[:3].all()
    np.testing.assert_array_equal(draws[:, ~varies], np.broadcast_to(exact[~varies], draws[:, ~varies].shape))
    z = (draws.mean(0)[varies] - exact[varies]) / (spread[varies] / math.sqrt(draws.shape[0]))
    assert np.all(np.abs(z) < 4.0), z
    # a large sketch is close to the exact inner products
    big = sim.diagnose_model(
        bandit_logp, theta, batch, rewards, scores="sketch", sketch_dim=2048, key=jax.random.key(1), chunk_size=512
    )
    np.testing.assert_allclose([e["estimate"] for e in big["inner"]], exact, rtol=0.25, atol=0.1 * abs(exact[0]))


def test_diagnose_model_bad_arguments(small_run):
    bandit, theta, answers, rewards = small_run
    batch = bandit_batch(bandit, answers)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        sim.diagnose_model(bandit_logp, theta, batch, rewards, scores="sketch")
    with pytest.raises(ValueError, match="scores must be 'exact' or 'sketch'; got 'full'"):
        sim.diagnose_model(bandit_logp, theta, batch, rewards, scores="full")
    with pytest.raises(ValueError, match=r"leading axes \(P, n\) = \(24, 6\)"):
        sim.diagnose_model(bandit_logp, theta, {"x": batch["x"][:, :3], "y": batch["y"]}, rewards)
    bad = rewards.astype(float).copy()
    bad[2, 1] = 0.5
    with pytest.raises(ValueError, match=r"rewards must be 0 or 1; got 0.5 at prompt 2 \(answer 1\)"):
        sim.diagnose_model(bandit_logp, theta, batch, bad)


# ---------------------------------------------------------------------------------------------
# The command


@pytest.mark.slow
def test_example_npz_and_jsonl_give_the_same_numbers(tmp_path, capsys):
    reports = {}
    for kind in ("npz", "jsonl"):
        out = tmp_path / f"{kind}.json"
        extra = ["--plot", tmp_path / "f.png"] if kind == "npz" else []
        code, text, err = run_cli(["diagnose", dg.example_path(kind), "--json", out, *extra], capsys)
        assert code == 0 and err == ""
        assert "k* (first k" in text
        reports[kind] = json.loads(out.read_text())
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = reports["npz"], reports["jsonl"]
    assert a.pop("file") != b.pop("file")
    assert a == b
    for key in ("n_prompts", "samples_per_prompt", "k_max", "k_star", "inner", "trainers", "prompts"):
        assert key in a
    assert set(a["trainers"]) == set(theory.IMPLIED_METHODS)
    assert {"k", "estimate", "stderr"} <= set(a["inner"][0])
    assert {"prompt_id", "n", "c", "p_hat", "agreement"} <= set(a["prompts"][0])
    # the shipped example's interval covers its exact k*
    run = example_make.example_run()
    assert a["k_star"]["lower"] <= run["k_star"] and (
        a["k_star"]["upper"] is None or run["k_star"] <= a["k_star"]["upper"]
    )
    # the counts file gives the same trainers and says what is missing
    out = tmp_path / "csv.json"
    code, text, _ = run_cli(["diagnose", dg.example_path("csv"), "--json", out], capsys)
    c = json.loads(out.read_text())
    assert code == 0 and c["trainers"] == a["trainers"] and c["inner"] == []
    assert all(v is None for k, v in c["k_star"].items() if k != "level")
    assert "no score vectors" in text and "s_ij = grad_theta log pi" in text


def test_example_command_prints_report(tmp_path):
    # Its start-up time is measured by `passk bench --only start`, not asserted here.
    proc = subprocess.run(
        [sys.executable, "-m", "passk.cli", "diagnose", "--example"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "k* (first k" in proc.stdout and "trainers" in proc.stdout


def test_plot_and_json_need_a_file_or_example(tmp_path, capsys):
    code, _, err = run_cli(["diagnose"], capsys)
    assert code == 2 and "give a FILE or --example" in err
    code, _, err = run_cli(["diagnose", "--example", "--plot", tmp_path / "f.jpg"], capsys)
    assert code == 2 and "--plot must end in one of" in err and not (tmp_path / "f.jpg").exists()
    code, _, err = run_cli(["diagnose", "--example", "--level", "1.5", "--json", tmp_path / "r.json"], capsys)
    assert code == 2 and err == "passk diagnose: error: level must lie in (0, 1) (for example 0.95); got 1.5\n"
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_interval_covers_exact_k_star_on_sampled_files(tmp_path):
    """40 runs of one toy bandit (exact k* known): the 95% interval covers it in >= 90% of files."""
    bandit, theta = sim.toy_bandit(jax.random.key(0), n_prompts=256)
    k_star = theory.critical_k(bandit.success(theta), bandit.agreement_scores(theta), bandit.prompt_weights)
    assert k_star is not None
    covered = 0
    for i in range(40):
        answers, rewards = sim.draw_answers(bandit, theta, 16, key=jax.random.key(1000 + i))
        path = tmp_path / f"run{i}.npz"
        np.savez(path, rewards=np.asarray(rewards), scores=bandit_scores(bandit, theta, answers))
        ks = dg.diagnose_file(path)["k_star"]
        covered += ks["lower"] is not None and ks["lower"] <= k_star and (ks["upper"] is None or k_star <= ks["upper"])
    assert covered >= 36, f"covered {covered} of 40 (exact k* = {k_star})"


# ---------------------------------------------------------------------------------------------
# Bad input: exit status 2, one line naming file, place and prompt id, no output file


def _write_csv(path, text):
    path.write_text(text)


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _jl(pid, reward, score=None):
    row = {"prompt_id": pid, "reward": reward}
    if score is not None:
        row["score"] = score
    return row


def _npy_bytes(arr):
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(path, **arrays):
    base = dict(rewards=np.array([[1, 0], [0, 1], [1, 1]]), prompt_ids=np.array(["a", "b", "c"]))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})


GOOD_JL = [_jl("a", 1, [1.0, 2.0]), _jl("a", 0, [0.5, 0.5]), _jl("b", 0, [1.0, 0.0]), _jl("b", 1, [0.0, 1.0])]

BAD_INPUTS = [
    # CSV (line numbers count the header)
    ("missing_column.csv", lambda p: _write_csv(p, "prompt_id,n\na,4\n"), ["line 1", "missing column 'c'"]),
    (
        "c_above_n.csv",
        lambda p: _write_csv(p, "prompt_id,n,c\na,4,1\nb,4,5\n"),
        ["line 3", "prompt 'b'", "c must be <= n"],
    ),
    (
        "negative.csv",
        lambda p: _write_csv(p, "prompt_id,n,c\na,4,1\nb,4,0\nq7,4,-1\n"),
        ["line 4", "prompt 'q7'", "c must be a non-negative integer; got -1"],
    ),
    (
        "noninteger.csv",
        lambda p: _write_csv(p, "prompt_id,n,c,extra\na,4,2.5,x\n"),
        ["line 2", "prompt 'a'", "c must be a non-negative integer; got '2.5'"],
    ),
    ("ragged.csv", lambda p: _write_csv(p, "prompt_id,n,c\na,4,1\nb,5,1\n"), ["line 3", "prompt 'b'", "same n"]),
    (
        "bad_weight.csv",
        lambda p: _write_csv(p, "prompt_id,n,c,weight\na,4,1,1\nb,4,1,-2\n"),
        ["line 3", "prompt 'b'", "weight must be finite and >= 0"],
    ),
    # JSONL
    (
        "reward.jsonl",
        lambda p: _write_jsonl(p, [_jl("a", 1), _jl("a", 2)]),
        ["line 2", "prompt 'a'", "reward must be 0 or 1; got 2"],
    ),
    (
        "nan.jsonl",
        lambda p: _write_jsonl(p, GOOD_JL[:2] + ['{"prompt_id": "b", "reward": 1, "score": [NaN, 1.0]}']),
        ["line 3", "prompt 'b'", "score must be finite"],
    ),
    (
        "shape.jsonl",
        lambda p: _write_jsonl(p, GOOD_JL[:3] + [_jl("b", 1, [1.0, 2.0, 3.0])]),
        ["line 4", "prompt 'b'", "score has 3 coordinates, line 1 has 2"],
    ),
    (
        "some_scores.jsonl",
        lambda p: _write_jsonl(p, GOOD_JL[:2] + [_jl("b", 1)]),
        ["line 3", "prompt 'b'", "on every line or on none"],
    ),
    (
        "ragged.jsonl",
        lambda p: _write_jsonl(p, GOOD_JL + [_jl("b", 0, [0.0, 0.0])]),
        ["line 5", "prompt 'b'", "prompt has 3 answers but prompt 'a' has 2"],
    ),
    (
        "missing_field.jsonl",
        lambda p: _write_jsonl(p, GOOD_JL[:1] + [{"prompt_id": "a", "score": [1.0, 1.0]}]),
        ["line 2", "prompt 'a'", "missing field 'reward'"],
    ),
    ("garbage.jsonl", lambda p: _write_jsonl(p, GOOD_JL[:1] + ["{not json"]), ["line 2", "not valid JSON"]),
    # npz (array and prompt index)
    (
        "reward.npz",
        lambda p: _npz(p, rewards=np.array([[1, 0], [0, 3], [1, 1]])),
        ["array 'rewards', prompt index 1", "prompt 'b'", "reward must be 0 or 1; got 3"],
    ),
    (
        "nan.npz",
        lambda p: _npz(p, scores=np.where(np.arange(12).reshape(3, 2, 2) == 9, np.nan, 1.0)),
        ["array 'scores', prompt index 2", "prompt 'c'", "score must be finite"],
    ),
    ("shape.npz", lambda p: _npz(p, scores=np.ones((3, 3, 2))), ["array 'scores'", "(3, 2, D)", "(3, 3, 2)"]),
    ("mu.npz", lambda p: _npz(p, mu=np.array([0.5, -0.1, 0.6])), ["array 'mu', prompt index 1", "prompt 'b'", ">= 0"]),
    ("mu_shape.npz", lambda p: _npz(p, mu=np.ones(4)), ["array 'mu'", "shape (P,) = (3,)"]),
    ("ids.npz", lambda p: _npz(p, prompt_ids=np.array(["a", "b"])), ["array 'prompt_ids'", "P = 3"]),
    ("no_rewards.npz", lambda p: _npz(p, rewards=None, scores=np.ones((3, 2, 1))), ["missing array 'rewards'"]),
    ("fake.npz", lambda p: p.write_text("not a zip"), ["cannot read as .npz"]),
    ("single.npz", lambda p: p.write_bytes(_npy_bytes(np.ones((2, 2)))), ["cannot read as .npz", "single array"]),
    # file type, missing file
    ("run.txt", lambda p: p.write_text("prompt_id,n,c\n"), ["unknown file type '.txt'"]),
    ("absent.csv", lambda p: None, ["no such file"]),
]


@pytest.mark.parametrize("name, make, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, name, make, expected):
    path = tmp_path / name
    make(path)
    out_json, out_plot = tmp_path / "out" / "report.json", tmp_path / "out" / "report.png"
    code, stdout, err = run_cli(["diagnose", path, "--json", out_json, "--plot", out_plot], capsys)
    assert code == 2
    assert stdout == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"passk diagnose: error: {path}")
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out_json.exists() and not out_plot.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_good_small_files_are_read(tmp_path):
    path = tmp_path / "ok.jsonl"
    _write_jsonl(
        path,
        GOOD_JL
        + ["", '{"prompt_id": 7, "reward": 1.0, "score": [1, 2]}', '{"prompt_id": 7, "reward": 0, "score": [0, 0]}'],
    )
    run = dg.read_run(path)
    assert run.prompt_ids == ["a", "b", "7"] and run.correct.tolist() == [1.0, 1.0, 1.0] and run.n == 2
    np.testing.assert_array_equal(run.score_sum, [[1.0, 2.0], [0.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(run.score_sq_sum, [5.0, 1.0, 5.0])
    path = tmp_path / "ok.csv"
    _write_csv(path, "prompt_id, n ,c,weight,other\na,4,0,1,x\nb,4,4,3,y\n")
    run = dg.read_run(path)
    assert run.prompt_ids == ["a", "b"] and run.correct.tolist() == [0.0, 4.0] and run.n == 4
    assert run.mu.tolist() == [1.0, 3.0] and run.score_sum is None


# ---------------------------------------------------------------------------------------------
# Streaming


def _big_jsonl(path, n_lines, n_answers, dim):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for start in range(0, n_lines, 10_000):
            lines = []
            for t in range(start, min(n_lines, start + 10_000)):
                row = {"prompt_id": f"p{t // n_answers}", "reward": int(rng.random() < 0.3)}
                if dim:
                    row["score"] = [round(x, 3) for x in rng.normal(size=dim).tolist()]
                lines.append(json.dumps(row))
            f.write("\n".join(lines) + "\n")


def _peak_reading(path):
    tracemalloc.start()
    try:
        run = dg.read_run(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return run, peak


def test_jsonl_is_streamed(tmp_path, monkeypatch):
    """Memory grows with the number of prompts, not of lines: 8 times the answers, same peak.

    The reader holds one block of lines at a time; blocks of 64 make both files span many.
    """
    monkeypatch.setattr(jsonl_reader, "_JSONL_BLOCK", 64)
    short, long = tmp_path / "short.jsonl", tmp_path / "long.jsonl"
    _big_jsonl(short, 300 * 4, 4, 4)
    _big_jsonl(long, 300 * 32, 32, 4)
    run_short, peak_short = _peak_reading(short)
    run_long, peak_long = _peak_reading(long)
    assert run_short.n == 4 and run_long.n == 32 and run_long.score_sum.shape == (300, 4)
    assert len(run_long.prompt_ids) == len(run_short.prompt_ids) == 300
    assert peak_long < 1.5 * peak_short + 20_000, (peak_short, peak_long)
    assert peak_long < long.stat().st_size / 4


@pytest.mark.slow
def test_jsonl_of_a_million_lines(tmp_path):
    """10^6 answers (about 100 MB): the reader's resident memory grows by the sums, not the file."""
    path = tmp_path / "huge.jsonl"
    _big_jsonl(path, 1_000_000, 16, 8)
    script = (
        "import resource, sys\n"
        "from passk import diagnose as dg\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "run = dg.read_run(sys.argv[1])\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
        "print(len(run.prompt_ids), run.n, run.score_sum.shape, grown * 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    prompts, n, *_, grown = proc.stdout.split()
    assert (int(prompts), int(n)) == (62_500, 16)
    assert int(grown) < path.stat().st_size / 4, (grown, path.stat().st_size)
    rep = dg.diagnose_file(path)
    assert rep["n_prompts"] == 62_500 and rep["samples_per_prompt"] == 16 and len(rep["inner"]) == 15


def test_jsonl_fast_path_equals_line_by_line_reading_bit_for_bit(tmp_path, monkeypatch):
    """Blocks parsed as one array give the numbers of the line-by-line reader, in every block size."""
    path = tmp_path / "run.jsonl"
    _big_jsonl(path, 40 * 8, 8, 5)
    with open(path, "a") as f:  # integer scores and prompt ids, and a blank line, in the last block
        f.write(
            "\n"
            + "".join(
                json.dumps({"prompt_id": 7, "reward": r, "score": [1, 2, 3, 4, 5]}) + "\n"
                for r in (1, 0, 1, 1, 0, 0, 1, 0)
            )
        )
    runs = {}
    for block in (5, 64, 100_000):
        monkeypatch.setattr(jsonl_reader, "_JSONL_BLOCK", block)
        runs[block] = dg.read_run(path)
    monkeypatch.setattr(readers._JsonlReader, "_fast", lambda self, lines, first: False)
    slow = dg.read_run(path)
    for run in runs.values():
        assert run.prompt_ids == slow.prompt_ids and run.n == slow.n == 8
        for name in ("correct", "score_sum", "score_sq_sum"):
            np.testing.assert_array_equal(getattr(run, name), getattr(slow, name))


def test_jsonl_error_in_a_later_block_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl_reader, "_JSONL_BLOCK", 16)
    path = tmp_path / "bad.jsonl"
    rows = [_jl(f"p{i // 4}", i % 2, [0.5, 1.0]) for i in range(40)]
    rows[37] = _jl("p9", True, [0.5, 1.0])  # a JSON true: the fast path hands the block to the line reader
    _write_jsonl(path, rows)
    with pytest.raises(dg.InputError, match=r"line 38 \(prompt 'p9'\): reward must be 0 or 1; got True"):
        dg.read_run(path)
