"""The block route of the step reader (passk/step_blocks.py) against the line-by-line route.

Both must accept the same files and give the same arrays; a bad line anywhere in a block must
make the block route decline, so that the line route names it. Fixtures: tests/dumps.py (verl
`RayPPOTrainer._dump_generations` in `verl/trainer/ppo/ray_trainer.py`, NeMo-RL
`log_batched_dict_as_jsonl` in `nemo_rl/algorithms/grpo.py`).
"""

import json

import dumps
import numpy as np
import pytest

from passk import cli, dump_files, frameworks, step_blocks
from passk.frameworks import Options, read_step
from passk.readers import InputError


def _read(path, fmt, options, *, blocks: bool, size: int = 5):
    """`(StepData, blocks taken)` with blocks of `size` lines, by blocks or forced line by line."""
    taken = []

    def block(reader, first, lines):
        ok = blocks and step_blocks.read_block(reader, first, lines)
        taken.append(ok)
        return ok

    saved = (frameworks.read_block, dump_files.JSON_BLOCK)
    frameworks.read_block, dump_files.JSON_BLOCK = block, size
    try:
        return read_step(path, fmt, None, options), taken
    finally:
        frameworks.read_block, dump_files.JSON_BLOCK = saved


def _same(a, b):
    assert a.prompt_ids == b.prompt_ids and a.notes == b.notes
    for name in ("success", "mask", "folds", "alignments", "score_sum", "score_sq_sum"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _verl_text(tmp_path, **kwargs):
    step, _ = dumps.bandit_step(2, key_seed=4, n_prompts=9, n=6, n_folds=3)
    return dumps.write_verl(tmp_path, step, **kwargs)


def _valid_cases(tmp_path):
    step, _ = dumps.bandit_step(2, key_seed=4, n_prompts=9, n=6, n_folds=3)
    plain = dumps.Step(3, [[1, 0, 1], [0, 0], [1], [1, 1, 0, 0]])  # sizes 3, 2, 1 (left out), 4
    yield dumps.write_verl(tmp_path / "uid", step, uid=True, shuffle_seed=1), "verl", Options()
    yield dumps.write_verl(tmp_path / "input", step, uid=False, shuffle_seed=2), "verl", Options()
    yield dumps.write_verl(tmp_path / "plain", plain, shuffle_seed=3), "verl", Options()
    yield dumps.write_nemo(tmp_path / "nemo", step), "nemo-rl", Options(group_size=6)
    path = dumps.write_verl(tmp_path / "acc", plain, shuffle_seed=None)
    yield path, "verl", Options(reward_field="acc")  # true/false rewards
    partial = tmp_path / "partial" / "4.jsonl"
    partial.parent.mkdir()
    rows = [{"input": i % 3, "output": "o", "score": [0.0, 0.25, 0.9, 1.0][i % 4], "step": 4} for i in range(14)]
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yield partial, "verl", Options(success_threshold=0.5)  # integer group keys, partial credit


def test_blocks_and_lines_give_the_same_step(tmp_path):
    for path, fmt, options in _valid_cases(tmp_path):
        by_blocks, taken = _read(path, fmt, options, blocks=True)
        by_lines, _ = _read(path, fmt, options, blocks=False)
        _same(by_blocks, by_lines)
        assert taken and all(taken), (path, taken)  # the block route read every block


def test_blank_lines_and_dict_keys_are_read_line_by_line_alike(tmp_path):
    path = _verl_text(tmp_path, shuffle_seed=0)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(7, "\n")
    for j in range(len(lines)):  # group keys that are JSON objects
        if lines[j].strip():
            obj = json.loads(lines[j])
            obj["uid"] = {"id": obj["uid"]}
            lines[j] = json.dumps(obj) + "\n"
    path.write_text("".join(lines))
    by_blocks, taken = _read(path, "verl", Options(), blocks=True)
    _same(by_blocks, _read(path, "verl", Options(), blocks=False)[0])
    assert not any(taken)


# (name, change to one answer's record or its line); each must fail as it does line by line
BAD_LINES = [
    ("text_reward", lambda o: {**o, "score": "1"}),
    ("half_reward", lambda o: {**o, "score": 0.5}),
    ("nan_reward", lambda o: json.dumps({**o, "score": "X"}).replace('"X"', "NaN")),
    ("inf_reward", lambda o: json.dumps({**o, "score": "X"}).replace('"X"', "1e999")),
    ("huge_reward", lambda o: json.dumps({**o, "score": "X"}).replace('"X"', "1" + "0" * 400)),
    (
        "huge_alignment",
        lambda o: json.dumps({**o, "alignment": ["X" if x is not None else x for x in o["alignment"]]}).replace(
            '"X"', "1" + "0" * 400
        ),
    ),
    ("no_reward", lambda o: {k: v for k, v in o.items() if k != "score"}),
    ("no_uid", lambda o: {k: v for k, v in o.items() if k != "uid"}),
    ("bool_fold", lambda o: {**o, "fold": bool(o["fold"])}),
    ("text_fold", lambda o: {**o, "fold": str(o["fold"])}),
    ("fold_too_big", lambda o: {**o, "fold": 3}),
    ("two_folds", lambda o: {**o, "fold": (o["fold"] + 1) % 3, "alignment": _moved(o["alignment"])}),
    ("value_at_own", lambda o: {**o, "alignment": [0.5 if x is None else x for x in o["alignment"]]}),
    (
        "nan_at_own",
        lambda o: json.dumps({**o, "alignment": ["X" if x is None else x for x in o["alignment"]]}).replace(
            '"X"', "NaN"
        ),
    ),
    (
        "inf_off_own",
        lambda o: json.dumps({**o, "alignment": ["X" if x is not None else x for x in o["alignment"]]}).replace(
            '"X"', "1e999"
        ),
    ),
    ("short", lambda o: {**o, "alignment": o["alignment"][:2]}),
    ("text_entry", lambda o: {**o, "alignment": ["0.5" if x is not None else x for x in o["alignment"]]}),
    ("no_alignment", lambda o: {k: v for k, v in o.items() if k not in ("fold", "alignment")}),
    ("two_objects", lambda o: json.dumps(o) + ", " + json.dumps(o)),
    ("cut", lambda o: json.dumps(o)[:-3]),
    ("array", lambda o: json.dumps([o])),
]


def _moved(alignment):
    own = alignment.index(None)
    return [None if f == (own + 1) % 3 else 0.5 for f in range(3)]


@pytest.mark.parametrize("name, change", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_a_bad_line_inside_a_block_fails_as_line_by_line(tmp_path, name, change):
    path = _verl_text(tmp_path, shuffle_seed=0)
    lines = path.read_text().splitlines(keepends=True)
    bad = 31  # inside the seventh block of 5 lines, not at its start
    changed = change(json.loads(lines[bad - 1]))
    lines[bad - 1] = (changed if isinstance(changed, str) else json.dumps(changed)) + "\n"
    path.write_text("".join(lines))
    errors = []
    for blocks in (True, False):
        with pytest.raises(InputError) as err:
            _read(path, "verl", Options(), blocks=blocks)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert f"line {bad}" in errors[0], errors[0]


def test_a_large_run_with_one_bad_line_fails_there_reading_each_line_once(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    for s in range(1, 9):
        step, _ = dumps.bandit_step(s, key_seed=s, n_prompts=64, n=40, n_folds=4)  # 2560 lines a step
        dumps.write_verl(run, step, shuffle_seed=s)
    path = run / "5.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1499] = lines[1499].replace('"score": ', '"score": "', 1).replace(', "step"', '", "step"', 1)
    path.write_text("".join(lines))
    monkeypatch.setattr(dump_files, "JSON_BLOCK", 1000)
    read, real = {}, frameworks.json_blocks

    def counting(path, step, size=None):
        for first, block in real(path, step, size):
            read[path.name] = read.get(path.name, 0) + len(block)
            yield first, block

    monkeypatch.setattr(frameworks, "json_blocks", counting)
    code = cli.main(["diagnose", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "5.jsonl: line 1500 (step 5, prompt 'uid-5-" in err, err
    # steps 1 to 4 whole, step 5 up to the block of the bad line, each line handed over once; 6 to 8 never
    assert read == {"1.jsonl": 2560, "2.jsonl": 2560, "3.jsonl": 2560, "4.jsonl": 2560, "5.jsonl": 2000}
