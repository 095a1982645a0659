"""`passk lm`: bad input (one line, exit 2), a small run end to end, resume, and the dumps read by `passk diagnose`."""

import json

import pytest

from passk import cli
from passk import lm as plm
from sim.studies import lm_confirmation

SMALL = ["--batch-prompts", "4", "--n-answers", "4", "--checkpoint-every", "1", "--quiet"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--setting", "nope"], "--setting must be one of"),
        (["--estimator", "ppo"], "--estimator must be one of"),
        (["--estimator", "pkpo-loo", "--k", "4"], "k must be <= n-1 = 3"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--steps", "-3"], "--steps must be a positive integer"),
        (["--aggregation", "words"], "aggregation"),
        (["--sketch", "-1"], "--sketch must be an integer >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, match):
    rc = cli.main(["lm", "--out", str(tmp_path / "run"), *SMALL, *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("passk lm: error:") and match in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_out_holding_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert cli.main(["lm", "--out", str(tmp_path / "run"), *SMALL]) == 2
    assert "holds another run" in capsys.readouterr().err


def test_seed_keys_are_distinct():
    import jax

    keys = [jax.random.key_data(plm.seed_key(s)).tolist() for s in (0, 1, -1, 2**32, 2**32 + 1, -(2**40))]
    assert len({tuple(k) for k in keys}) == len(keys)
    assert keys[1] == jax.random.key_data(jax.random.key(1)).tolist()


def test_small_run_writes_records_figure_and_dumps_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["lm", "--out", str(out), "--estimator", "pkpo-loo-1", "--k", "2", "--steps", "3", "--seed", "5", *SMALL]
    assert cli.main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    assert len(record["records"]) == 3 and len(record["eval"]["j1"]) == 3
    for row in record["records"]:
        assert {"j1", "jk", "inner", "mean_agreement", "cos", "k_star", "update_inner", "update_norm", "k_used"} <= set(
            row
        )
        assert 0 <= row["j1"] <= row["jk"] <= 1 and row["k_used"] == 2
        assert sum(row["p"]) / len(row["p"]) == pytest.approx(row["j1"], rel=1e-6)
    assert (out / "lm_run.png").stat().st_size > 0 and (out / "0.jsonl").exists()
    # the same arguments resume (nothing left to do) and give the same records
    assert cli.main(argv) == 0
    assert json.loads((out / "run.json").read_text())["records"] == record["records"]
    # another seed into the same folder: refused before any work
    assert cli.main([*argv[: -len(SMALL) - 2], "--seed", "6", *SMALL]) == 2
    assert "holds another run" in capsys.readouterr().err
    # passk diagnose reads the folder as it is (verl schema, section 11 fields)
    from passk import runs
    from passk.frameworks import Options

    report = runs.diagnose_run(out, options=Options(), ks=[1, 2])
    assert json.dumps(report, allow_nan=False)
    text = runs.format_run(report)
    assert "verl" in text and "population" in text


def _rec(j1, jk, k_star, update_inner, k_used=4):
    return {"j1": j1, "jk": jk, "k_star": k_star, "update_inner": update_inner, "k_used": k_used}


def test_regime_check_classes_steps_by_the_exact_k_star():
    records = [
        _rec(0.5, 0.7, 3, -1.0),  # k = 4 >= k* = 3: pass@1 falls, pass@k rises -> agrees
        _rec(0.4, 0.8, 3, +1.0),  # above; pass@1 rises -> against, explained (<g1,u> > 0 and pass@1 rose)
        _rec(0.45, 0.85, None, +1.0),  # no k*: below; both rise -> agrees
        _rec(0.5, 0.9, 8, -1.0),  # k < k*: below; pass@1 falls -> against, explained
        _rec(0.45, 0.95, 8, +1.0),  # below; pass@1 falls below -> against, not explained
        _rec(0.40, 0.97, 8, 0.0),
    ]
    check = lm_confirmation.regime_check(records)
    assert check["above"] == {"steps": 2, "agree": 1, "against": 1, "against_explained_by_update_inner": 1}
    assert check["below"] == {"steps": 3, "agree": 1, "against": 2, "against_explained_by_update_inner": 1}
    grpo = lm_confirmation.regime_check([dict(r, k_used=None) for r in records])
    assert grpo["above"]["steps"] == 0 and grpo["below"]["steps"] == 5
    path = lm_confirmation.k_star_path(records)
    assert path["start"] == 3 and path["min"] == 3 and path["first_step_at_or_below_4"] == 0
    assert path["share_none"] == pytest.approx(1 / 6)


@pytest.mark.slow  # about a minute: `pytest -m slow`
def test_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    """SIGKILL `passk lm` once a checkpoint is on disk, start it again: the records equal a run never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {
        **os.environ,
        "PASSK_NO_COMPILE_CACHE": "",
        "PASSK_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    args = [
        "--estimator",
        "rloo",
        "--steps",
        "12",
        "--seed",
        "3",
        "--batch-prompts",
        "4",
        "--n-answers",
        "4",
        "--checkpoint-every",
        "2",
        "--quiet",
        "--no-plot",
    ]

    def command(out):
        return [
            sys.executable,
            "-c",
            "import sys; from passk.cli import main; sys.exit(main())",
            "lm",
            "--out",
            str(out),
            *args,
        ]

    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True, timeout=600)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(command(cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not (cut / "5.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (cut / "run.json").exists(), "the run finished before it could be killed"
    subprocess.run(command(cut), env=env, check=True, capture_output=True, timeout=600)
    whole = json.loads((tmp_path / "whole" / "run.json").read_text())
    resumed = json.loads((cut / "run.json").read_text())
    assert resumed["records"] == whole["records"]
    for t in range(12):
        assert (cut / f"{t}.jsonl").read_text() == (tmp_path / "whole" / f"{t}.jsonl").read_text()


def test_summary_compares_each_trainer_with_the_control_at_its_own_k():
    check = {
        "above": {"steps": 1, "agree": 1, "against": 0, "against_explained_by_update_inner": 0},
        "below": {"steps": 1, "agree": 0, "against": 1, "against_explained_by_update_inner": 1},
    }
    runs = [
        {
            "setting": "few-hard",
            "seed": s,
            "estimator": est,
            "k": k,
            "j1": [0.1, j1],
            "jk": [0.2, 0.5],
            "p_end": p,
            "check": check,
            "k_star_path": {"start": 5, "end": 3},
        }
        for s in (0, 1)
        for est, k, j1, p in (("grpo", 4, 0.9, [1.0, 0.0]), ("grouped-passk", 2, 0.7, [0.5, 0.5]))
    ]
    rows = {row["estimator"]: row for row in lm_confirmation.summarise(runs)}
    passk_row = rows["grouped-passk"]
    assert passk_row["j1_vs_control"]["value"] == pytest.approx(-0.2)
    assert passk_row["jk_vs_control"]["value"] == pytest.approx(0.75 - 0.5)  # pass@2: [.75, .75] against [1, 0]
    assert passk_row["above_agree"] == "2/2" and passk_row["against_explained"] == "2/2"
    assert rows["grpo"]["jk_vs_control"]["value"] == 0
