"""Reading a run's logged answers for `passk diagnose`: one reader per file format.

Formats (one run: `P` prompts, `n` answers each):

- `.npz`: `rewards` `(P, n)` in `{0, 1}`; optional `scores` `(P, n, D)` (score vectors
  `grad log pi(y_ij | x_i)` or a sketch of them), `mu` `(P,)` (non-negative, normalised later),
  `prompt_ids` `(P,)` strings. Other arrays are ignored.
- `.jsonl`: one answer per line, `{"prompt_id": ..., "reward": 0 or 1, "score": [...]}`; `score`
  on every line or on none; every prompt the same `n`. Read in blocks of lines (a file of
  millions of lines needs memory for the per-prompt sums and one block only).
- `.csv` with a header, counts only: `prompt_id`, `n`, `c`, optional `weight` (normalised
  later); other columns ignored.

Each reader returns a :class:`RunData`: the per-prompt counts `c_i` and, with scores, the sums
`G_i` and `Q_i` of :func:`theory.answer_sums` (over all answers of a `.npz`, accumulated over
blocks of lines of a `.jsonl`). Bad input raises :class:`InputError`, whose one-line message names
the file, the line (1-based, header counted) or the array and prompt index, and the prompt id.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from passk.jsonl_reader import _JSONL_BLOCK, _JsonlReader, _read_jsonl  # noqa: F401  (passk.diagnose, the benchmark)
from passk.run_data import InputError, RunData, _fail, _where  # noqa: F401

__all__ = ["InputError", "RunData", "read_run", "READERS"]


# ---------------------------------------------------------------------------------------------
# .npz


def _read_npz(path: Path) -> RunData:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(6)
        if not head:
            _fail(path, "cannot read as .npz: the file is empty")
        if head == b"\x93NUMPY":
            _fail(path, "cannot read as .npz: a single array (.npy), not an archive of named arrays")
        _fail(path, "cannot read as .npz: not a zip archive of named arrays (numpy.savez writes one)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        _fail(path, f"cannot read as .npz: {err}")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        _fail(path, "cannot read as .npz: a single array (.npy), not an archive of named arrays")
    with archive:
        names = set(archive.files)
        if "rewards" not in names:
            _fail(path, f"missing array 'rewards' (the file has: {sorted(names) or 'no arrays'})")

        def load(name):
            try:
                return archive[name]
            except ValueError as err:
                _fail(
                    path, f"cannot read (object arrays are not accepted; store strings and numbers): {err}", array=name
                )

        rewards = load("rewards")
        ids = None
        if "prompt_ids" in names:
            raw = load("prompt_ids")
            if raw.ndim != 1:
                _fail(path, f"must have shape (P,); got shape {raw.shape}", array="prompt_ids")
            ids = [str(x) for x in raw.tolist()]
        if rewards.ndim != 2:
            _fail(path, f"must have shape (P, n); got shape {rewards.shape}", array="rewards")
        n_prompts, n = rewards.shape
        if ids is not None and len(ids) != n_prompts:
            _fail(path, f"has {len(ids)} entries but 'rewards' has P = {n_prompts} prompts", array="prompt_ids")
        if ids is None:
            ids = [str(i) for i in range(n_prompts)]
        if n_prompts < 1:
            _fail(path, f"has no prompts (shape {rewards.shape})", array="rewards")
        if n < 2:
            _fail(path, f"needs n >= 2 answers per prompt; got shape {rewards.shape}", array="rewards")
        if len(set(ids)) != len(ids):
            seen = set()
            for i, pid in enumerate(ids):
                if pid in seen:
                    _fail(path, "duplicate prompt id", array="prompt_ids", index=i, prompt=pid)
                seen.add(pid)
        if not (rewards.dtype == np.bool_ or np.issubdtype(rewards.dtype, np.number)):
            _fail(path, f"must be numeric 0/1; got dtype {rewards.dtype}", array="rewards")
        r = rewards.astype(np.float64)
        bad = ~((r == 0) | (r == 1))
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            _fail(
                path,
                f"reward must be 0 or 1; got {rewards[i, j].item()!r} (answer {j})",
                array="rewards",
                index=i,
                prompt=ids[i],
            )
        mu = None
        if "mu" in names:
            mu = load("mu")
            if mu.shape != (n_prompts,):
                _fail(path, f"must have shape (P,) = ({n_prompts},); got shape {mu.shape}", array="mu")
            if not np.issubdtype(mu.dtype, np.number):
                _fail(path, f"must be numeric; got dtype {mu.dtype}", array="mu")
            mu = mu.astype(np.float64)
            bad = ~np.isfinite(mu) | (mu < 0)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                _fail(path, f"weight must be finite and >= 0; got {float(mu[i])}", array="mu", index=i, prompt=ids[i])
            if mu.sum() <= 0:
                _fail(path, "weights must not all be 0", array="mu")
        score_sum = score_sq_sum = None
        if "scores" in names:
            scores = load("scores")
            if scores.ndim < 3 or scores.shape[:2] != (n_prompts, n) or scores.size == 0:
                _fail(
                    path,
                    f"must have shape (P, n, D) = ({n_prompts}, {n}, D) matching 'rewards'; got shape {scores.shape}",
                    array="scores",
                )
            if not np.issubdtype(scores.dtype, np.number):
                _fail(path, f"must be numeric; got dtype {scores.dtype}", array="scores")
            scores = scores.reshape(n_prompts, n, -1).astype(np.float64)
            bad = ~np.isfinite(scores)
            if bad.any():
                i, j, d = (int(x) for x in np.argwhere(bad)[0])
                _fail(
                    path,
                    f"score must be finite; got {float(scores[i, j, d])} (answer {j}, coordinate {d})",
                    array="scores",
                    index=i,
                    prompt=ids[i],
                )
            from theory import answer_sums

            _, score_sum, score_sq_sum = answer_sums(r, scores)
    return RunData(r.sum(axis=-1), int(n), score_sum, score_sq_sum, mu, ids)


# ---------------------------------------------------------------------------------------------
# .csv


def _parse_count(path, text, name, lineno, pid):
    try:
        value = int(text.strip())
    except (ValueError, AttributeError):
        _fail(path, f"{name} must be a non-negative integer; got {text!r}", line=lineno, prompt=pid)
    if value < 0:
        _fail(path, f"{name} must be a non-negative integer; got {value}", line=lineno, prompt=pid)
    return value


def _read_csv(path: Path) -> RunData:
    ids, correct, weights = [], [], []
    seen = set()
    n = None
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as err:
        _fail(path, f"cannot read: {err.strerror or err}")
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = reader.fieldnames
            if header is None:
                _fail(path, "empty file (expected a header with columns prompt_id, n, c)", line=1)
            header = [h.strip() if h else h for h in header]
            reader.fieldnames = header
            for col in ("prompt_id", "n", "c"):
                if col not in header:
                    _fail(path, f"missing column {col!r} (the header has: {', '.join(map(str, header))})", line=1)
            has_weight = "weight" in header
            for row in reader:
                lineno = reader.line_num
                if None in row:
                    _fail(
                        path,
                        f"more fields than the {len(header)} of the header",
                        line=lineno,
                        prompt=row.get("prompt_id"),
                    )
                if any(row.get(col) is None for col in ("prompt_id", "n", "c")):
                    _fail(
                        path,
                        f"fewer fields than the {len(header)} of the header",
                        line=lineno,
                        prompt=row.get("prompt_id"),
                    )
                pid = row["prompt_id"].strip()
                if not pid:
                    _fail(path, "empty prompt_id", line=lineno)
                if pid in seen:
                    _fail(path, "duplicate prompt id", line=lineno, prompt=pid)
                seen.add(pid)
                n_row = _parse_count(path, row["n"], "n", lineno, pid)
                c_row = _parse_count(path, row["c"], "c", lineno, pid)
                if c_row > n_row:
                    _fail(path, f"c must be <= n; got c = {c_row} > n = {n_row}", line=lineno, prompt=pid)
                if n is None:
                    if n_row < 2:
                        _fail(path, f"n must be >= 2; got {n_row}", line=lineno, prompt=pid)
                    n = n_row
                elif n_row != n:
                    _fail(
                        path,
                        f"n = {n_row} but the first prompt has n = {n} (every prompt needs the same n)",
                        line=lineno,
                        prompt=pid,
                    )
                if has_weight:
                    try:
                        w = float(row["weight"])
                    except (TypeError, ValueError):
                        _fail(path, f"weight must be a number; got {row['weight']!r}", line=lineno, prompt=pid)
                    if not math.isfinite(w) or w < 0:
                        _fail(path, f"weight must be finite and >= 0; got {w!r}", line=lineno, prompt=pid)
                    weights.append(w)
                ids.append(pid)
                correct.append(c_row)
        except UnicodeDecodeError as err:
            _fail(path, f"not UTF-8 text: {err.reason}")
        except csv.Error as err:
            _fail(path, f"not valid CSV: {err}")
    if not ids:
        _fail(path, "no prompts after the header", line=1)
    mu = None
    if weights:
        mu = np.asarray(weights)
        if mu.sum() <= 0:
            _fail(path, "weights must not all be 0")
    return RunData(np.asarray(correct, np.float64), n, None, None, mu, ids)


READERS = {".npz": _read_npz, ".jsonl": _read_jsonl, ".csv": _read_csv}


def read_run(path) -> RunData:
    """Read a run from `.npz`, `.jsonl` or `.csv` (module docstring). Raises :class:`InputError`."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        _fail(path, f"unknown file type {path.suffix or '(no suffix)'!r} (expected .npz, .jsonl or .csv)")
    if not path.is_file():
        _fail(path, "no such file" if not path.exists() else "not a file")
    return reader(path)
