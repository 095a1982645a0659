"""The `.jsonl` reader of `passk diagnose`: one answer per line,
`{"prompt_id": ..., "reward": 0 or 1, "score": [...]}`, read in blocks of lines (a file of millions
of lines needs memory for the per-prompt sums and one block only); each block's sums go through
:func:`theory.answer_sums`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from passk.run_data import RunData, _fail, json_object

# ---------------------------------------------------------------------------------------------
# .jsonl


def _prompt_id(value):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


class _Growing:
    """Per-prompt columns in numpy buffers that double when full (no per-prompt Python objects)."""

    def __init__(self, capacity: int = 1024):
        self.size = 0
        self.counts = np.zeros(capacity, np.int64)
        self.correct = np.zeros(capacity, np.int64)
        self.last_line = np.zeros(capacity, np.int64)
        self.sq = np.zeros(capacity)
        self.sums = None  # (capacity, D) once D is known

    def add(self) -> int:
        if self.size == self.counts.size:
            cap = 2 * self.counts.size
            for name in ("counts", "correct", "last_line", "sq", "sums"):
                old = getattr(self, name)
                if old is not None:
                    new = np.zeros((cap,) + old.shape[1:], old.dtype)
                    new[: old.shape[0]] = old
                    setattr(self, name, new)
        self.size += 1
        return self.size - 1


class _JsonlReader:
    """Per-prompt sums of a `.jsonl` run, consumed in blocks of lines.

    A block is first parsed as one JSON array and checked with numpy (the fast path); a block the
    fast path cannot vouch for (a parse error, a bad field, or any `true`/`false`/`null` token,
    which numpy would silently turn into numbers) is read again line by line, which finds and
    names the first bad line. Either way the block's answers, in line order, go through
    :meth:`_add`: their sums by :func:`theory.answer_sums` (each answer a chunk of one), added to
    their prompts' sums in line order, so both paths give the same numbers, and the same as
    :func:`theory.answer_sums` of all the answers at once when each prompt's answers come in
    their order.
    """

    def __init__(self, path: Path):
        self.path = path
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.cols = _Growing()
        self.has_score = None
        self.dim = None
        self.first_line = None

    def _prompt_index(self, pid: str) -> int:
        i = self.index.get(pid)
        if i is None:
            i = self.index[pid] = self.cols.add()
            self.ids.append(pid)
        return i

    def block(self, lines: list, first_lineno: int) -> None:
        if self._fast(lines, first_lineno):
            return
        parsed = [self.line(line, first_lineno + offset) for offset, line in enumerate(lines)]
        parsed = [p for p in parsed if p is not None]
        if parsed:
            pids, linenos, rewards, scores = zip(*parsed)
            self._add(
                pids,
                np.array(linenos, np.int64),
                np.array(rewards, np.int64),
                np.stack(scores) if self.has_score else None,
            )

    def _add(self, pids, linenos: np.ndarray, rewards: np.ndarray, scores: np.ndarray | None) -> None:
        """Add valid answers (`rewards` 0/1 `(m,)`, `scores` `(m, D)` float64 or None) to their prompts."""
        idx = np.fromiter((self._prompt_index(pid) for pid in pids), np.int64, len(pids))
        cols = self.cols
        np.add.at(cols.counts, idx, 1)
        np.maximum.at(cols.last_line, idx, linenos)
        np.add.at(cols.correct, idx, rewards)
        if scores is not None:
            from theory import answer_sums

            if cols.sums is None:
                cols.sums = np.zeros((cols.counts.size, self.dim))
            sums = answer_sums(rewards.astype(np.float64)[:, None], scores[:, None, :])
            np.add.at(cols.sums, idx, sums.score_sum)
            np.add.at(cols.sq, idx, sums.score_sq_sum)

    def _fast(self, lines: list, first_lineno: int) -> bool:
        numbered = [(first_lineno + j, line) for j, line in enumerate(lines) if line.strip()]
        if not numbered:
            return True
        text = ",".join(line for _, line in numbered)
        if "true" in text or "false" in text or "null" in text:
            return False
        try:
            objs = json.loads("[" + text + "]")
            if not all(type(o) is dict for o in objs):
                return False
            pids = [_prompt_id(o["prompt_id"]) for o in objs]
            rewards = np.array([o["reward"] for o in objs])
            scores = [o.get("score") for o in objs]
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            return False
        if None in pids or rewards.dtype.kind not in "if" or not np.all((rewards == 0) | (rewards == 1)):
            return False
        present = [sc is not None for sc in scores]
        has = present[0] if self.has_score is None else self.has_score
        if any(x != has for x in present):
            return False
        values = None
        if has:
            try:
                values = np.array(scores, dtype=None)
            except ValueError:
                return False
            if values.ndim != 2 or values.dtype.kind not in "if" or values.shape[1] == 0:
                return False
            if self.dim is not None and values.shape[1] != self.dim:
                return False
            values = values.astype(np.float64)
            if not np.isfinite(values).all():
                return False
        # Every line of the block is valid: now update the state.
        if self.has_score is None:
            self.has_score, self.first_line = has, numbered[0][0]
        if has and self.dim is None:
            self.dim = values.shape[1]
        linenos = np.fromiter((lineno for lineno, _ in numbered), np.int64, len(numbered))
        self._add(pids, linenos, (rewards == 1).astype(np.int64), values)
        return True

    def line(self, line: str, lineno: int):
        """One line checked: `(prompt id, lineno, reward 0/1, score (D,) float64 or None)`, or
        None for a blank line. Raises :class:`InputError` naming the line."""
        path = self.path
        obj, why = json_object(line)
        if why is not None:
            _fail(path, why, line=lineno)
        if obj is None:
            return None
        if "prompt_id" not in obj:
            _fail(path, "missing field 'prompt_id'", line=lineno)
        pid = _prompt_id(obj["prompt_id"])
        if pid is None:
            _fail(path, f"prompt_id must be a string or an integer; got {obj['prompt_id']!r}", line=lineno)
        if "reward" not in obj:
            _fail(path, "missing field 'reward'", line=lineno, prompt=pid)
        reward = obj["reward"]
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or reward not in (0, 1):
            _fail(path, f"reward must be 0 or 1; got {reward!r}", line=lineno, prompt=pid)
        score = obj.get("score")
        if self.has_score is None:
            self.has_score, self.first_line = score is not None, lineno
        elif (score is not None) != self.has_score:
            _fail(
                path,
                f"'score' must be on every line or on none; line {self.first_line} "
                f"{'has' if self.has_score else 'has none'}, this line {'has' if score is not None else 'has none'}",
                line=lineno,
                prompt=pid,
            )
        s = None
        if self.has_score:
            if not isinstance(score, list) or any(isinstance(x, (bool, list, dict, str)) or x is None for x in score):
                _fail(path, "score must be a list of numbers", line=lineno, prompt=pid)
            s = np.asarray(score, dtype=np.float64)
            if self.dim is None:
                if s.size == 0:
                    _fail(path, "score must have at least one coordinate", line=lineno, prompt=pid)
                self.dim = s.size
            elif s.size != self.dim:
                _fail(
                    path,
                    f"score has {s.size} coordinates, line {self.first_line} has {self.dim}",
                    line=lineno,
                    prompt=pid,
                )
            if not np.isfinite(s).all():
                d = int(np.argwhere(~np.isfinite(s))[0][0])
                _fail(path, f"score must be finite; got {float(s[d])} at coordinate {d}", line=lineno, prompt=pid)
        return pid, lineno, 1 if reward == 1 else 0, s


#: Lines parsed together by the fast path of :class:`_JsonlReader`.
_JSONL_BLOCK = 2048


def _read_jsonl(path: Path) -> RunData:
    from passk.dump_files import json_blocks  # here: passk.dump_files imports passk.readers, which imports this

    reader = _JsonlReader(path)
    for block_start, block in json_blocks(path, None, _JSONL_BLOCK):
        reader.block(block, block_start)
    ids, cols, has_score = reader.ids, reader.cols, reader.has_score
    if not ids:
        _fail(path, "no answers (the file is empty)", line=1)
    size = cols.size
    # The reference n is the count most prompts have, so the odd prompt is the one named.
    values, freq = np.unique(cols.counts[:size], return_counts=True)
    n = int(values[np.argmax(freq)]) if freq.max() > 1 or size == 1 else int(cols.counts[0])
    ragged = np.flatnonzero(cols.counts[:size] != n)
    if ragged.size:
        i = int(ragged[0])
        ref = int(np.flatnonzero(cols.counts[:size] == n)[0])
        _fail(
            path,
            f"prompt has {int(cols.counts[i])} answers but prompt {ids[ref]!r} has {n}"
            + (f", as do {int(freq.max()) - 1} others" if freq.max() > 2 else "")
            + " (every prompt needs the same n)",
            line=int(cols.last_line[i]),
            prompt=ids[i],
        )
    if n < 2:
        _fail(path, f"needs n >= 2 answers per prompt; got {n}", line=int(cols.last_line[0]), prompt=ids[0])
    score_sum = cols.sums[:size].copy() if has_score else None
    score_sq_sum = cols.sq[:size].copy() if has_score else None
    return RunData(cols.correct[:size].astype(np.float64), n, score_sum, score_sq_sum, None, ids)
