"""The example run directories shipped in passk/examples/runs (`passk diagnose --example verl|trl|nemo-rl`).

Made by passk/examples/make.py in each framework's schema as its source writes it: verl
`RayPPOTrainer._dump_generations` in `verl/trainer/ppo/ray_trainer.py` (`{step}.jsonl`, keys
`input, output, gts, score, step` and the reward extras), TRL `GRPOTrainer.log` in
`trl/trainer/grpo_trainer.py` (`completions/completions_{step:05d}.parquet`, `step, prompt,
completion`, a column per reward function, `advantage`), NeMo-RL `grpo_train` in
`nemo_rl/algorithms/grpo.py` (`log_batched_dict_as_jsonl(..., f"train_data_step{step}.jsonl")`).
"""

import json

import jax
import pytest

from passk import cli, examples
from passk.examples import make


def _has_pyarrow():
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


FORMATS = ["verl", "nemo-rl", "trl"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    got = {}
    for fmt in FORMATS + ["toy"]:
        if fmt == "trl" and not _has_pyarrow():
            continue
        json_path, plot_path = out / f"{fmt}.json", out / f"{fmt}.png"
        code = cli.main(["diagnose", "--example", fmt, "--json", str(json_path), "--plot", str(plot_path)])
        assert code == 0, fmt
        assert plot_path.read_bytes()[:4] == b"\x89PNG"
        got[fmt] = json.loads(json_path.read_text())
    return got


def test_each_example_diagnoses_with_exit_0_and_bare_example_is_the_toy(reports, capsys):
    assert set(reports) >= {"verl", "nemo-rl", "toy"}
    assert cli.main(["diagnose", "--example"]) == 0
    assert "toy" in capsys.readouterr().out  # the toy npz, as before


def test_the_run_examples_show_pass1_falling_while_pass_k_rises_and_a_conflict(reports):
    for fmt in FORMATS:
        if fmt not in reports:
            continue
        report = reports[fmt]
        assert report["format"] == fmt and len(report["steps"]) == make.RUN_STEPS
        reading = report["reading"]
        assert reading["trained_k"] == examples.RUN_TRAINED_K
        assert reading["fell_rose_from"][str(examples.RUN_TRAINED_K)] is not None
        assert reading["conflict_from_step"] is not None
        assert all(r["k_star"]["kind"] == "population" for r in report["steps"])


def test_the_three_schemas_hold_the_same_run(reports):
    def rows(report):
        return [{k: v for k, v in r.items() if k not in ("file",)} for r in report["steps"]]

    for fmt in ("nemo-rl", "trl"):
        if fmt in reports:
            assert rows(reports[fmt]) == rows(reports["verl"]), fmt


def test_trl_example_without_pyarrow_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    assert cli.main(["diagnose", "--example", "trl"]) == 2
    assert '".[runs]"' in capsys.readouterr().err


def test_make_regenerates_the_shipped_runs_byte_for_byte(tmp_path):
    written = make.write_runs(tmp_path, key=jax.random.key(make.RUN_SEED))
    shipped = examples.HERE
    jsonl = [p for p in written if p.suffix == ".jsonl"]
    assert len(jsonl) == 2 * make.RUN_STEPS
    for path in jsonl:
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (shipped / rel).read_bytes(), rel
    assert sorted(p.relative_to(tmp_path) for p in jsonl) == sorted(
        p.relative_to(shipped) for p in (shipped / "runs").rglob("*.jsonl")
    )
    if _has_pyarrow():  # parquet bytes name the pyarrow version: compare the tables
        import pyarrow.parquet as pq

        for path in [p for p in written if p.suffix == ".parquet"]:
            rel = path.relative_to(tmp_path)
            assert pq.read_table(path).equals(pq.read_table(shipped / rel)), rel
