"""Reading the RL frameworks' per-step rollout dumps for `passk diagnose`, one step at a time.

Formats (`--format`, or detected from the file names and the keys of the first record):

- `verl`: `trainer.rollout_data_dir` writes `{dir}/{global_step}.jsonl` (verl's
  `RayPPOTrainer._dump_generations`), one answer a line with keys `input`, `output`, `gts`,
  `score`, `step` and the reward extras (`acc`, ...), and `uid` in newer trainers. Groups: the
  answers that share `uid`, or `input` where there is no `uid` (older trainers reorder rows).
  Reward: `score`, or `--reward-field`.
- `trl`: TRL's `GRPOTrainer` with `log_completions=True` writes
  `completions/completions_{step:05d}.parquet` (`GRPOTrainer.log` in `trl/trainer/grpo_trainer.py`),
  columns `step`, `prompt`, `completion`, one column per reward function, `advantage`. Groups:
  blocks of `--group-size` consecutive rows (`num_generations`), each naming one prompt. Reward:
  the one reward column, or `--reward-field` when there are several. Needs `pyarrow`
  (`pip install -e ".[runs]"`).
- `nemo-rl`: NeMo-RL's GRPO loop writes `train_data_step{N}.jsonl` (`logger.log_batched_dict_as_jsonl`
  in `nemo_rl/algorithms/grpo.py`), keys `content`, `rewards`, `input_lengths`, ...; groups are
  blocks of `--group-size` consecutive lines. Reward: `rewards`.
- `jsonl`: the project's `{"prompt_id", "reward", "score"}`, grouped by `prompt_id`.

Optional per-answer fields in every JSON-lines format (and parquet columns): `"fold": f` with
`"alignment": [t_0, ..., t_{F-1}]` (`null` at the answer's own fold; SPEC section 11), and
`"score": [...]` score vectors (SPEC section 10; in `jsonl`, where `score` is not the reward).

Rewards must be 0 or 1 unless `--success-threshold T` is given (an answer succeeds when its reward
is above `T`). Groups may differ in size; a group of fewer than 2 answers is left out and named in
the step's notes; with `--group-size` every group must have that size. Bad input raises
:class:`passk.readers.InputError`, one line naming the file, the line or row, the step and the prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from passk.dump_files import (
    FORMATS,
    PYARROW_MISSING,
    RUN_FORMATS,
    _fail,
    _parquet_records,
    detect_format,
    json_blocks,
    json_line,
    list_steps,
    step_number,
)
from passk.step_blocks import read_block

__all__ = [
    "FORMATS",
    "RUN_FORMATS",
    "Options",
    "StepData",
    "detect_format",
    "step_number",
    "list_steps",
    "read_step",
    "PYARROW_MISSING",
]


@dataclass
class Options:
    """The reading flags of `passk diagnose` (None: the format's default)."""

    format: str | None = None
    reward_field: str | None = None
    group_size: int | None = None
    success_threshold: float | None = None


@dataclass
class StepData:
    """One step's groups: `(P, n_max)` arrays with a mask for groups of different sizes."""

    file: str
    step: int | None
    format: str
    prompt_ids: list
    success: np.ndarray  # (P, n_max) 0/1, 0 where masked
    mask: np.ndarray  # (P, n_max) bool
    folds: np.ndarray | None = None  # (P,)
    alignments: np.ndarray | None = None  # (P, n_max, F), NaN at the own fold and where masked
    score_sum: np.ndarray | None = None  # (P, D) G_i
    score_sq_sum: np.ndarray | None = None  # (P,) Q_i
    notes: list = field(default_factory=list)

    @property
    def counts(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.success.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# Groups


class _Groups:
    """Answers gathered into groups, each answer's fields checked as it comes."""

    def __init__(self, path, step, reward_field, threshold, score_field):
        self.path, self.step, self.reward_field, self.threshold = path, step, reward_field, threshold
        self.score_field = score_field
        self.index, self.names, self.where, self.folds = {}, [], [], []
        # per answer, in reading order: chunks (group index, 0/1, alignments or None, scores or None)
        self.chunks, self.pending = [], ([], [], [], [])
        self.n_folds = self.has_align = self.has_score = self.dim = None

    def fail(self, what, where, prompt):
        _fail(self.path, what, where=where, step=self.step, prompt=prompt)

    def add(self, key, name, where, obj):
        reward = obj.get(self.reward_field, None) if isinstance(obj, dict) else None
        if self.reward_field not in obj:
            self.fail(
                f"missing reward field {self.reward_field!r} (the record has: {', '.join(sorted(obj)[:10])}; "
                "choose one with --reward-field)",
                where,
                name,
            )
        if isinstance(reward, bool):
            reward = float(reward)
        if not isinstance(reward, (int, float)) or not math.isfinite(
            float(reward) if abs(reward) < 1e308 else math.inf
        ):
            self.fail(f"reward {self.reward_field!r} must be a finite number; got {reward!r}", where, name)
        if self.threshold is None:
            if reward not in (0, 1):
                self.fail(
                    f"reward {self.reward_field!r} is {reward!r}, not 0 or 1: give --success-threshold T "
                    "(an answer succeeds when its reward is above T)",
                    where,
                    name,
                )
            ok = int(reward == 1)
        else:
            ok = int(reward > self.threshold)
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.names)
            self.names.append(name)
            self.where.append(where)
            self.folds.append(None)
        self._fold(i, name, where, obj)
        self._score(i, name, where, obj)
        self.pending[0].append(i)
        self.pending[1].append(ok)
        return i

    def flush(self):
        """Move the answers added one by one into a chunk (kept in reading order)."""
        group, ok, align, scores = self.pending
        if group:
            self.chunks.append(
                (
                    np.array(group, np.int64),
                    np.array(ok, np.int64),
                    np.stack(align) if self.has_align else None,
                    np.stack(scores) if self.has_score else None,
                )
            )
            self.pending = ([], [], [], [])

    def _fold(self, i, name, where, obj):
        has = "alignment" in obj or "fold" in obj
        if self.has_align is None:
            self.has_align = has
        elif has != self.has_align:
            self.fail("'fold' and 'alignment' must be on every answer or on none", where, name)
        if not has:
            return
        fold, t = obj.get("fold"), obj.get("alignment")
        if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
            self.fail(f"fold must be an integer >= 0; got {fold!r}", where, name)
        if not isinstance(t, list) or any(isinstance(x, (bool, str, list, dict)) for x in t):
            self.fail(
                f"alignment must be a list of numbers with null at the answer's own fold; got {t!r}"[:200], where, name
            )
        if self.n_folds is None:
            if len(t) < 2:
                self.fail(f"alignment must have F >= 2 entries, one per fold; got {len(t)}", where, name)
            self.n_folds = len(t)
        elif len(t) != self.n_folds:
            self.fail(f"alignment has {len(t)} entries but the first answer's has F = {self.n_folds}", where, name)
        if fold >= self.n_folds:
            self.fail(f"fold {fold} is not below F = {self.n_folds} (the alignment's length)", where, name)
        if t[fold] is not None:
            self.fail(
                f"alignment has a value at the answer's own fold {fold} ({t[fold]!r}); it must be null there",
                where,
                name,
            )
        row = np.array([np.nan if x is None else (x if abs(x) < 1e308 else math.inf) for x in t], dtype=np.float64)
        off = np.arange(self.n_folds) != fold
        if not np.all(np.isfinite(row[off])):
            f = int(np.flatnonzero(off & ~np.isfinite(row))[0])
            self.fail(f"alignment must be finite off the own fold; got {t[f]!r} at fold {f}", where, name)
        if self.folds[i] is None:
            self.folds[i] = (fold, where)
        elif self.folds[i][0] != fold:
            self.fail(
                f"the prompt is in two folds: fold {self.folds[i][0]} at {self.folds[i][1]}, fold {fold} here",
                where,
                name,
            )
        self.pending[2].append(row)

    def _score(self, i, name, where, obj):
        if self.score_field is None:
            return
        s = obj.get(self.score_field)
        has = s is not None
        if self.has_score is None:
            self.has_score = has
        elif has != self.has_score:
            self.fail(f"{self.score_field!r} must be on every answer or on none", where, name)
        if not has:
            return
        if not isinstance(s, list) or not s or any(isinstance(x, (bool, str, list, dict)) or x is None for x in s):
            self.fail(f"{self.score_field!r} must be a non-empty list of numbers", where, name)
        v = np.asarray(s, dtype=np.float64)
        if self.dim is None:
            self.dim = v.size
        elif v.size != self.dim:
            self.fail(f"{self.score_field!r} has {v.size} coordinates, the first answer's has {self.dim}", where, name)
        if not np.all(np.isfinite(v)):
            d = int(np.flatnonzero(~np.isfinite(v))[0])
            self.fail(f"{self.score_field!r} must be finite; got {float(v[d])} at coordinate {d}", where, name)
        self.pending[3].append(v)

    def build(self, fmt, group_size) -> StepData:
        path, step = self.path, self.step
        if not self.names:
            _fail(path, "no answers (the step file is empty)", step=step)
        self.flush()
        group = np.concatenate([c[0] for c in self.chunks])
        sizes = np.bincount(group, minlength=len(self.names))
        if group_size is not None and np.any(sizes != group_size):
            i = int(np.flatnonzero(sizes != group_size)[0])
            self.fail(
                f"the group has {int(sizes[i])} answers but --group-size is {group_size}", self.where[i], self.names[i]
            )
        notes = []
        keep = np.flatnonzero(sizes >= 2)
        small = np.flatnonzero(sizes < 2)
        if small.size:
            listed = ", ".join(repr(str(self.names[i])[:40]) for i in small[:5])
            notes.append(
                f"{small.size} group(s) with fewer than 2 answers left out: {listed}"
                + (" ..." if small.size > 5 else "")
            )
        if keep.size == 0:
            _fail(path, "no group has 2 or more answers", step=step)
        # answers by group, each group's in reading order; `slot` is an answer's place in its group
        order = np.argsort(group, kind="stable")
        by_group = group[order]
        starts = np.cumsum(sizes) - sizes
        slot = np.arange(group.size) - starts[by_group]
        row_of = np.full(sizes.size, -1)
        row_of[keep] = np.arange(keep.size)
        kept = row_of[by_group] >= 0
        rows, slot, order = row_of[by_group][kept], slot[kept], order[kept]
        n_max = int(sizes[keep].max())
        success = np.zeros((keep.size, n_max), np.int64)
        mask = np.zeros((keep.size, n_max), bool)
        success[rows, slot] = np.concatenate([c[1] for c in self.chunks])[order]
        mask[rows, slot] = True
        data = StepData(str(path), step, fmt, [str(self.names[i]) for i in keep], success, mask, notes=notes)
        if self.has_align:
            folds = np.array([self.folds[i][0] for i in keep], np.int64)
            empty = np.flatnonzero(np.bincount(folds, minlength=self.n_folds) == 0)
            if empty.size:
                _fail(
                    path,
                    f"fold {int(empty[0])} of F = {self.n_folds} has no prompt (fold ids must leave no fold empty)",
                    step=step,
                )
            align = np.full((keep.size, n_max, self.n_folds), np.nan)
            align[rows, slot] = np.concatenate([c[2] for c in self.chunks])[order]
            data.folds, data.alignments = folds, align
        if self.has_score:
            from theory import answer_sums

            scores = np.zeros((keep.size, n_max, self.dim))
            scores[rows, slot] = np.concatenate([c[3] for c in self.chunks])[order]
            big_g = np.zeros((keep.size, self.dim))
            q = np.zeros(keep.size)
            for row, i in enumerate(keep):
                n_i = int(sizes[i])
                sums = answer_sums(success[row, :n_i].astype(np.float64)[None], scores[row, :n_i][None])
                big_g[row], q[row] = np.asarray(sums.score_sum)[0], float(np.asarray(sums.score_sq_sum)[0])
            data.score_sum, data.score_sq_sum = big_g, q
        return data


def _trl_reward_field(path, step, first: dict, declared):
    if declared is not None:
        return declared
    skip = {"step", "advantage", "prompt", "completion", "mode", "fold", "alignment", "image", "score"}
    numeric = [k for k, v in first.items() if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) == 1:
        return numeric[0]
    if not numeric:
        _fail(
            path,
            f"no reward column (the columns are {', '.join(first)}); name it with --reward-field",
            where="row 1",
            step=step,
        )
    _fail(
        path, f"several reward columns ({', '.join(numeric)}): choose one with --reward-field", where="row 1", step=step
    )


class _StepReader:
    """The answers of one step file, record by record (:meth:`record`; a block of JSON lines at a
    time: :func:`passk.step_blocks.read_block`)."""

    def __init__(self, path, fmt, step, options: Options):
        self.path, self.fmt, self.step, self.options = path, fmt, step, options
        self.size = options.group_size
        self.groups = None
        self.count = 0  # answers read
        self.block_prompt = None

    def start(self, obj):
        fmt, options = self.fmt, self.options
        if fmt == "verl":
            self.key_field = "uid" if "uid" in obj else "input"
            reward = options.reward_field or "score"
        elif fmt == "jsonl":
            self.key_field, reward = "prompt_id", options.reward_field or "reward"
        elif fmt == "nemo-rl":
            self.key_field, reward = None, options.reward_field or "rewards"
        else:
            self.key_field, reward = None, _trl_reward_field(self.path, self.step, obj, options.reward_field)
        # verl's `score` is its reward; score vectors are lists
        score_field = "score" if reward != "score" and (fmt == "jsonl" or isinstance(obj.get("score"), list)) else None
        self.groups = _Groups(self.path, self.step, reward, options.success_threshold, score_field)

    def group_name(self, block: int) -> str:
        size = self.size
        return f"group {block} (lines of answers {block * size + 1} to {block * size + size})"

    def record(self, where, obj):
        """Add one answer, checked field by field (an error names its line or row)."""
        path, step, size, count = self.path, self.step, self.size, self.count
        if self.groups is None:
            self.start(obj)
        if self.key_field is not None:
            if self.key_field not in obj:
                _fail(path, f"missing field {self.key_field!r} that names the answer's group", where=where, step=step)
            key = obj[self.key_field]
            if isinstance(key, (dict, list)):
                key = json.dumps(key, sort_keys=True)
            name = key
        else:
            block = count // size
            key = block
            if self.fmt == "trl":
                prompt = obj.get("prompt")
                prompt_text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)
                if count % size == 0:
                    self.block_prompt = prompt_text
                elif prompt_text != self.block_prompt:
                    _fail(
                        path,
                        f"the rows of group {block} (rows {block * size + 1} to {block * size + size}) name "
                        f"different prompts: check --group-size {size}",
                        where=where,
                        step=step,
                        prompt=self.block_prompt,
                    )
                name = self.block_prompt
            else:
                name = self.group_name(block)
        self.groups.add(key, name, where, obj)
        self.count += 1


def read_step(path, fmt: str, step, options: Options) -> StepData:
    """One step file of a framework format (or `jsonl`) as :class:`StepData`. Raises :class:`InputError`.

    JSON lines are read once, in blocks (:func:`passk.step_blocks.read_block`); a block that the block
    checks do not vouch for is read again from memory line by line, so an error names its line.
    """
    path = Path(path)
    size = options.group_size
    if fmt in ("trl", "nemo-rl") and size is None:
        _fail(
            path,
            f"{fmt} groups are blocks of consecutive answers: give their size with --group-size "
            "(the trainer's num_generations)",
            step=step,
        )
    reader = _StepReader(path, fmt, step, options)
    if fmt == "trl":
        for where, obj in _parquet_records(path, step):
            reader.record(where, obj)
    else:
        for first, lines in json_blocks(path, step):
            if not read_block(reader, first, lines):
                for lineno, line in enumerate(lines, first):
                    obj = json_line(path, step, lineno, line)
                    if obj is not None:
                        reader.record(f"line {lineno}", obj)
    if reader.groups is None:
        _fail(path, "no answers (the step file is empty)", step=step)
    return reader.groups.build(fmt, size)
