"""The readers of the RL frameworks' step dumps (passk/frameworks.py).

Fixtures are built by tests/dumps.py from the schemas as the frameworks' sources write them:
verl `verl/trainer/ppo/ray_trainer.py` (`RayPPOTrainer._dump_generations`), TRL
`trl/trainer/grpo_trainer.py` (`GRPOTrainer.log`, `log_completions=True`), NeMo-RL
`nemo_rl/algorithms/grpo.py` (`log_batched_dict_as_jsonl(..., f"train_data_step{step}.jsonl")`).
"""

import json
import sys

import dumps
import numpy as np
import pytest

import theory
from passk import cli, frameworks
from passk.frameworks import Options, detect_format, list_steps, read_step, step_number
from passk.readers import InputError


def _estimate(rewards, alignments, folds, mask=None, ks=None):
    ks = np.arange(1, rewards.shape[1] + 1) if ks is None else ks
    inner = theory.population_inner_product(rewards, alignments, folds, ks, mask=mask)
    return np.asarray(inner.estimate), np.asarray(inner.stderr)


@pytest.mark.parametrize("uid", [True, False], ids=["uid", "input"])
def test_verl_reader_groups_shuffled_rows_and_gives_the_estimate_of_the_arrays(tmp_path, uid):
    step, (rewards, align, folds) = dumps.bandit_step(3, key_seed=1, n_prompts=12, n=6, n_folds=3)
    path = dumps.write_verl(tmp_path, step, uid=uid, shuffle_seed=5)
    data = read_step(path, "verl", 3, Options())
    assert data.step == 3 and data.format == "verl" and len(data.prompt_ids) == 12
    assert data.mask.all() and data.success.shape == (12, 6)
    # the groups come in the order of their first line: compare as multisets of (fold, correct)
    assert sorted(zip(data.folds.tolist(), data.correct.tolist())) == sorted(
        zip(folds.tolist(), rewards.sum(1).tolist())
    )
    got, want = _estimate(data.success, data.alignments, data.folds), _estimate(rewards, align, folds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15)


def test_nemo_and_trl_dumps_give_the_same_step_as_verl(tmp_path):
    step, _ = dumps.bandit_step(7, key_seed=2, n_prompts=9, n=4, n_folds=3)
    verl = read_step(dumps.write_verl(tmp_path / "v", step, shuffle_seed=None), "verl", 7, Options())
    nemo = read_step(dumps.write_nemo(tmp_path / "n", step), "nemo-rl", 7, Options(group_size=4))
    others = [nemo]
    if _has_pyarrow():
        others.append(read_step(dumps.write_trl(tmp_path / "t", step), "trl", 7, Options(group_size=4)))
    for data in others:
        np.testing.assert_array_equal(data.success, verl.success)
        np.testing.assert_array_equal(data.folds, verl.folds)
        np.testing.assert_array_equal(data.alignments, verl.alignments)


def _has_pyarrow():
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def test_formats_and_steps_from_names_and_keys(tmp_path):
    step, _ = dumps.bandit_step(12, key_seed=0, n_prompts=3, n=2, n_folds=3)
    verl = dumps.write_verl(tmp_path / "v", step)
    nemo = dumps.write_nemo(tmp_path / "n", step)
    renamed = tmp_path / "run_0012.jsonl"
    renamed.write_text(verl.read_text())
    project = tmp_path / "step_3.jsonl"
    project.write_text(json.dumps({"prompt_id": "a", "reward": 1}) + "\n")
    assert detect_format(verl) == "verl" and step_number(verl) == 12
    assert detect_format(nemo) == "nemo-rl" and step_number(nemo) == 12
    assert detect_format(renamed) == "verl" and step_number(renamed) == 12
    assert detect_format(project) == "jsonl" and step_number(project) == 3
    assert detect_format(tmp_path / "completions_00012.parquet") == "trl"
    assert step_number(tmp_path / "completions_00012.parquet") == 12
    assert detect_format(verl, "nemo-rl") == "nemo-rl"  # a named format wins over the keys
    with pytest.raises(InputError, match="does not read .jsonl"):
        detect_format(verl, "trl")
    # NeMo-RL's validation dumps beside the training ones are not steps of the run
    (tmp_path / "n" / "val_data_step12.jsonl").write_text(nemo.read_text())
    assert [(s, p.name, f) for s, p, f in list_steps(tmp_path / "n")] == [(12, nemo.name, "nemo-rl")]


def _verl_lines(path, groups, step=1, extra=None):
    """A verl dump with `groups[i]` the rewards of prompt i (no uid: grouped by input)."""
    lines = []
    for i, group in enumerate(groups):
        for r in group:
            entry = {"input": f"q{i}", "output": "o", "gts": "g", "score": r, "step": step}
            entry.update(extra(i) if extra else {})
            lines.append(json.dumps(entry))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_variable_group_sizes_and_groups_of_one_named(tmp_path):
    path = _verl_lines(tmp_path / "1.jsonl", [[1, 0, 0, 1], [0, 1, 1], [1], [0, 0, 0, 1]])
    data = read_step(path, "verl", 1, Options())
    assert data.prompt_ids == ["q0", "q1", "q3"]
    assert data.counts.tolist() == [4, 3, 4] and data.correct.tolist() == [2, 2, 1]
    assert len(data.notes) == 1 and "'q2'" in data.notes[0] and "fewer than 2 answers" in data.notes[0]
    with pytest.raises(
        InputError, match=r"line 5 \(step 1, prompt 'q1'\): the group has 3 answers but --group-size is 4"
    ):
        read_step(path, "verl", 1, Options(group_size=4))


def test_rewards_not_zero_one_need_a_threshold(tmp_path):
    path = _verl_lines(tmp_path / "2.jsonl", [[1.0, 0.5, 0.0], [0.2, 0.9, 0.45]], step=2)
    with pytest.raises(InputError) as err:
        read_step(path, "verl", 2, Options())
    message = str(err.value)
    assert "line 2 (step 2, prompt 'q0')" in message and "--success-threshold T" in message
    data = read_step(path, "verl", 2, Options(success_threshold=0.45))
    assert data.success.tolist() == [[1, 1, 0], [0, 1, 0]]  # above T succeeds; T itself does not
    # another reward key, with bools (verl's acc)
    acc = _verl_lines(tmp_path / "3.jsonl", [[0.3, 0.1], [0.2, 0.9]], step=3, extra=lambda i: {"acc": i == 1})
    assert read_step(acc, "verl", 3, Options(reward_field="acc")).success.tolist() == [[0, 0], [1, 1]]


def test_trl_reward_column_is_required_when_there_are_several(tmp_path):
    pytest.importorskip("pyarrow")
    step = dumps.Step(4, [[1, 0], [0, 0]])
    path = dumps.write_trl(tmp_path, step, reward_columns=("accuracy_reward", "format_reward"))
    with pytest.raises(InputError, match="several reward columns .accuracy_reward, format_reward.: choose one"):
        read_step(path, "trl", 4, Options(group_size=2))
    data = read_step(path, "trl", 4, Options(group_size=2, reward_field="format_reward"))
    assert data.correct.tolist() == [1, 0]


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    path = tmp_path / "completions_00001.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "r.json"
    code = cli.main(["diagnose", str(path), "--group-size", "2", "--json", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not out.exists()
    assert frameworks.PYARROW_MISSING in err and '".[runs]"' in err


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the file, the line or row, the step and the prompt; nothing written


def _aligned(groups, folds, rows, step=5):
    """verl lines with fold and alignment; `rows(i, j)` may override an answer's fields."""

    def write(path):
        lines = []
        for i, group in enumerate(groups):
            for j, r in enumerate(group):
                entry = {
                    "input": f"q{i}",
                    "output": "o",
                    "gts": "g",
                    "score": r,
                    "step": step,
                    "fold": folds[i],
                    "alignment": [None if f == folds[i] else 0.1 * (i + f) for f in range(3)],
                }
                entry.update(rows(i, j))
                lines.append(json.dumps(entry))
        path.write_text("\n".join(lines) + "\n")

    return write


GROUPS, FOLDS = [[1, 0], [0, 1], [1, 1]], [0, 1, 2]
BAD = [
    (
        "missing_reward",
        _aligned(GROUPS, FOLDS, lambda i, j: {"score": None} if (i, j) == (1, 1) else {}),
        [],
        ["line 4", "step 5", "prompt 'q1'", "finite number; got None"],
    ),
    (
        "no_reward_key",
        lambda p: (
            _verl_lines(p, [[1, 0]], extra=None) and p.write_text(p.read_text().replace('"score": 0', '"acc": 0'))
        ),
        [],
        ["line 2", "prompt 'q0'", "missing reward field 'score'"],
    ),
    (
        "text_reward",
        _aligned(GROUPS, FOLDS, lambda i, j: {"score": "yes"} if (i, j) == (2, 0) else {}),
        [],
        ["line 5", "prompt 'q2'", "got 'yes'"],
    ),
    (
        "nan_reward",
        _aligned(GROUPS, FOLDS, lambda i, j: {"score": float("nan")} if (i, j) == (0, 1) else {}),
        [],
        ["line 2", "prompt 'q0'", "got nan"],
    ),
    (
        "group_size",
        _aligned(GROUPS, FOLDS, lambda i, j: {}),
        ["--group-size", "3"],
        ["line 1", "prompt 'q0'", "2 answers but --group-size is 3"],
    ),
    (
        "align_length",
        _aligned(GROUPS, FOLDS, lambda i, j: {"alignment": [None, 1.0]} if (i, j) == (1, 0) else {}),
        [],
        ["line 3", "prompt 'q1'", "alignment has 2 entries but the first answer's has F = 3"],
    ),
    (
        "align_own",
        _aligned(GROUPS, FOLDS, lambda i, j: {"alignment": [0.1, 0.2, 0.3]} if (i, j) == (2, 1) else {}),
        [],
        ["line 6", "prompt 'q2'", "value at the answer's own fold 2"],
    ),
    (
        "align_nan",
        _aligned(GROUPS, FOLDS, lambda i, j: {"alignment": [None, float("nan"), 0.3]} if (i, j) == (0, 1) else {}),
        [],
        ["line 2", "prompt 'q0'", "finite off the own fold; got nan at fold 1"],
    ),
    ("fold_empty", _aligned(GROUPS, [0, 1, 1], lambda i, j: {}), [], ["step 5", "fold 2 of F = 3 has no prompt"]),
    (
        "two_folds",
        _aligned(GROUPS, FOLDS, lambda i, j: {"fold": 0, "alignment": [None, 1.0, 1.0]} if (i, j) == (1, 1) else {}),
        [],
        ["line 4", "prompt 'q1'", "in two folds: fold 1 at line 3"],
    ),
    ("empty", lambda p: p.write_text("\n"), [], ["no answers"]),
    (
        "truncated",
        lambda p: p.write_text('{"input": "q0", "output": "o", "score": 1}\n{"input": "q0", "outp'),
        ["--format", "verl"],
        ["line 2", "the file may be cut off"],
    ),
]


@pytest.mark.parametrize("name, make, flags, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_step_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, name, make, flags, expected):
    run = tmp_path / "run"
    run.mkdir()
    good = run / "4.jsonl"
    _verl_lines(good, [[1, 0], [0, 0]], step=4)
    if name in (
        "missing_reward",
        "text_reward",
        "nan_reward",
        "group_size",
        "align_length",
        "align_own",
        "align_nan",
        "fold_empty",
        "two_folds",
    ):
        good.unlink()  # one format per run: these steps carry folds, the good one does not
    bad = run / "5.jsonl"
    make(bad)
    out = tmp_path / "out"
    code = cli.main(["diagnose", str(run), *flags, "--json", str(out / "r.json"), "--plot", str(out / "r.png")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip("\n").split("\n")
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"passk diagnose: error: {bad}"), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists()


def test_directory_errors(tmp_path, capsys):
    def run_dir(name, files):
        d = tmp_path / name
        d.mkdir()
        for fname, groups in files:
            _verl_lines(d / fname, groups)
        return d

    cases = [
        (run_dir("empty", []), "no step files"),
        (run_dir("twice", [("1.jsonl", [[1, 0]]), ("01.jsonl", [[0, 1]])]), "two files claim step 1"),
        (run_dir("nameless", [("final.jsonl", [[1, 0]])]), "cannot tell its step"),
    ]
    mixed = run_dir("mixed", [("1.jsonl", [[1, 0]])])
    (mixed / "train_data_step2.jsonl").write_text(json.dumps({"content": ["a"], "rewards": 1.0}) + "\n")
    cases.append((mixed, "mixes formats: nemo-rl (train_data_step2.jsonl), verl (1.jsonl)"))
    for path, text in cases:
        code = cli.main(["diagnose", str(path)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and text in err, err


def test_a_bad_line_stops_the_run_there_and_no_file_is_read_twice(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for s in range(1, 7):
        _verl_lines(run / f"{s}.jsonl", [[1, 0], [0, 1]], step=s)
    (run / "3.jsonl").write_text((run / "3.jsonl").read_text().replace('"score": 0', '"score": "x"', 1))
    opened = []
    real = frameworks.json_blocks

    def counting(path, step):
        opened.append(path.name)
        return real(path, step)

    monkeypatch.setattr(frameworks, "json_blocks", counting)
    code = cli.main(["diagnose", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "3.jsonl: line 2 (step 3, prompt 'q0')" in err
    assert opened == ["1.jsonl", "2.jsonl", "3.jsonl"]
