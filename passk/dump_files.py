"""Which files a run directory holds, which format each is in, and its raw records (for
:mod:`passk.frameworks`, which turns the records of one step into groups of answers).

A step's number comes from its file name (`12.jsonl`, `train_data_step12.jsonl`,
`completions_00012.parquet`, `run_12.npz`); the format from `--format`, the file name and the keys
of its first record. Parquet is read through `pyarrow`, the optional extra `runs`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from passk.readers import InputError
from passk.run_data import json_object

__all__ = ["FORMATS", "RUN_FORMATS", "PYARROW_MISSING", "detect_format", "step_number", "list_steps"]

FORMATS = ("verl", "trl", "nemo-rl", "npz", "jsonl", "csv")
#: Formats only the step reader of this module reads (the others also have :func:`passk.readers.read_run`).
RUN_FORMATS = ("verl", "trl", "nemo-rl")
PYARROW_MISSING = 'reading .parquet needs pyarrow, the optional extra "runs": pip install -e ".[runs]"'
_SUFFIXES = {".jsonl": ("verl", "nemo-rl", "jsonl"), ".parquet": ("trl",), ".npz": ("npz",), ".csv": ("csv",)}
_NEMO_NAME = re.compile(r"^train_data_step(\d+)\.jsonl$")
_NEMO_VAL_NAME = re.compile(r"^val_data_step(\d+)\.jsonl$")
_TRL_NAME = re.compile(r"^completions_(\d+)\.parquet$")
_VERL_NAME = re.compile(r"^(\d+)\.jsonl$")


def _fail(path, what, *, where=None, step=None, prompt=None):
    text = str(path) + (f": {where}" if where else "")
    context = []
    if step is not None:
        context.append(f"step {step}")
    if prompt is not None:
        shown = str(prompt)
        context.append(f"prompt {shown[:60] + '...' if len(shown) > 60 else shown!r}")
    if context:
        text += f" ({', '.join(context)})"
    raise InputError(f"{text}: {' '.join(str(what).split())}")


# ---------------------------------------------------------------------------------------------
# Files, formats and steps


def _first_record(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        _fail(path, f"not valid JSON: {err.msg}", where=f"line {lineno}")
                    return obj if isinstance(obj, dict) else None
    except UnicodeDecodeError as err:
        _fail(path, f"not UTF-8 text: {err.reason}")
    except OSError as err:
        _fail(path, f"cannot read: {err.strerror or err}")
    return None


def detect_format(path, declared: str | None = None, step=None) -> str:
    """The format of one step file: `declared` (checked against the suffix), else from its name and keys."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        _fail(path, f"unknown file type {suffix or '(no suffix)'!r} (expected .jsonl, .parquet, .npz or .csv)")
    if declared is not None:
        if declared not in _SUFFIXES[suffix]:
            _fail(
                path,
                f"--format {declared} does not read {suffix} files (it reads "
                f"{', '.join(s for s, f in _SUFFIXES.items() if declared in f)})",
            )
        return declared
    if len(_SUFFIXES[suffix]) == 1:
        return _SUFFIXES[suffix][0]
    if _NEMO_NAME.match(path.name) or _NEMO_VAL_NAME.match(path.name):
        return "nemo-rl"
    first = _first_record(path)
    if first is None:
        _fail(path, "no answers (the file is empty or its first line is not a JSON object)", where="line 1", step=step)
    keys = set(first)
    if "prompt_id" in keys:
        return "jsonl"
    if "input" in keys and "output" in keys:
        return "verl"
    if "content" in keys:
        return "nemo-rl"
    _fail(
        path,
        f"cannot tell the format from the keys {sorted(keys)[:8]} (verl has input/output/score, "
        "NeMo-RL content/rewards, jsonl prompt_id/reward): name it with --format",
        where="line 1",
        step=step,
    )


def step_number(path) -> int | None:
    """The step a file's name gives.

    `12.jsonl`, `train_data_step12.jsonl`, `completions_00012.parquet`, `run_12.npz`.
    """
    name = Path(path).name
    for pattern in (_VERL_NAME, _NEMO_NAME, _NEMO_VAL_NAME, _TRL_NAME):
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    numbers = re.findall(r"\d+", Path(path).stem)
    return int(numbers[-1]) if numbers else None


def list_steps(directory, declared: str | None = None) -> list:
    """`[(step, path, format)]` of a run directory, by step; names checked before any file is read in full.

    Files with other suffixes are skipped; NeMo-RL's `val_data_step*.jsonl` are skipped when
    `train_data_step*.jsonl` are there. Raises :class:`InputError` on an empty directory, a
    file without a step number, two files claiming one step, or a directory mixing formats.
    """
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if any(_NEMO_NAME.match(p.name) for p in files):
        files = [p for p in files if not _NEMO_VAL_NAME.match(p.name)]
    if not files:
        _fail(directory, "no step files (.jsonl, .parquet, .npz or .csv) in this directory")
    steps, formats = {}, {}
    for path in files:
        step = step_number(path)
        if step is None:
            _fail(path, "cannot tell its step: the file name has no number (name step files like 12.jsonl)")
        if step in steps:
            _fail(path, f"two files claim step {step}: {steps[step].name} and {path.name}", step=step)
        steps[step] = path
        formats[path] = detect_format(path, declared, step)
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        example = {kind: next(p.name for p, f in formats.items() if f == kind) for kind in kinds}
        _fail(directory, "the directory mixes formats: " + ", ".join(f"{k} ({v})" for k, v in example.items()))
    return [(step, steps[step], formats[steps[step]]) for step in sorted(steps)]


# ---------------------------------------------------------------------------------------------
# Records: (where, dict) from JSON lines or parquet rows


#: Lines of a JSON-lines step file handed to the reader at a time (:func:`json_blocks`).
JSON_BLOCK = 4096


def json_blocks(path: Path, step, size: int | None = None):
    """`(first line number, lines)` of a JSON-lines file, `size` lines at a time (default
    :data:`JSON_BLOCK`), read once."""
    size = size or JSON_BLOCK
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        _fail(path, f"cannot read: {err.strerror or err}", step=step)
    with handle:
        lineno, block, first = 0, [], 1
        try:
            for lineno, line in enumerate(handle, 1):
                if not block:
                    first = lineno
                block.append(line)
                if len(block) == size:
                    yield first, block
                    block = []
        except UnicodeDecodeError as err:
            if block:  # the lines before the undecodable one are checked first, as one by one
                yield first, block
            _fail(path, f"not UTF-8 text: {err.reason}", where=f"line {lineno + 1}", step=step)
        if block:
            yield first, block


def json_line(path: Path, step, lineno: int, line: str):
    """One line parsed and checked to be a JSON object (None for a blank line); else one line of error."""
    obj, why = json_object(line)
    if why is not None:
        _fail(path, why, where=f"line {lineno}", step=step)
    return obj


def _parquet_records(path: Path, step):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        _fail(path, PYARROW_MISSING, step=step)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises its own error types for a damaged file
        _fail(path, f"cannot read as parquet: {err}", step=step)
    for row, obj in enumerate(rows, 1):
        yield f"row {row}", obj
