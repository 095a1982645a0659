"""The block route of the step reader (:mod:`passk.frameworks`): a block of JSON lines parsed as
one array and checked with numpy, which a run of millions of lines needs (line by line, the
checks cost more than the parsing)."""

from __future__ import annotations

import itertools
import json

import numpy as np

__all__ = ["read_block"]


def read_block(reader, first: int, lines: list) -> bool:
    """Add a block of JSON lines to `reader` (a `passk.frameworks._StepReader`) at once if every line
    is plainly valid; False (nothing added) if not.

    The block is parsed as one JSON array and its rewards, group keys, folds and alignments
    are checked with numpy. It is declined (and then read line by line, which names the
    first bad line) on anything the checks below do not vouch for: a blank line, a line that
    is not one `{...}` object, a `NaN` or `Infinity` token, a missing or non-numeric reward,
    a reward outside {0, 1} without a threshold, a group key that is not a string or an
    integer, score vectors, and any fold or alignment the record-by-record checks would
    reject. So both routes accept the same files and give the same arrays.
    """
    if reader.fmt not in ("verl", "jsonl", "nemo-rl") or not lines:
        return False
    if not all(line.startswith("{") and line.rstrip().endswith("}") for line in lines):
        return False
    text = ",".join(lines)
    if "NaN" in text or "Infinity" in text:  # json reads them as floats; the line-by-line checks name them
        return False
    try:
        objs = json.loads("[" + text + "]")
    except json.JSONDecodeError:
        return False
    if len(objs) != len(lines) or set(map(type, objs)) != {dict}:
        return False
    if reader.groups is None:
        reader.start(objs[0])
    g = reader.groups
    if g.score_field is not None:
        return False
    try:
        rewards = [o[g.reward_field] for o in objs]
        keys = [o[reader.key_field] for o in objs] if reader.key_field is not None else None
    except KeyError:
        return False
    if not set(map(type, rewards)) <= {int, float, bool}:
        return False
    try:
        r = np.array(rewards, np.float64)
    except OverflowError:  # an integer beyond float range
        return False
    if not np.isfinite(r).all():
        return False
    if g.threshold is None:
        if not np.all((r == 0) | (r == 1)):
            return False
        ok = (r == 1).astype(np.int64)
    else:
        ok = (r > g.threshold).astype(np.int64)
    if keys is None:  # consecutive blocks of `size` answers
        keys = ((reader.count + np.arange(len(objs))) // reader.size).tolist()
    elif not set(map(type, keys)) <= {str, int}:
        return False
    base, new, group = len(g.names), {}, []
    for key in keys:
        i = g.index.get(key)
        if i is None:
            i = new.get(key)
            if i is None:
                i = new[key] = base + len(new)
        group.append(i)
    group = np.array(group, np.int64)
    align, block_folds = _alignments(reader.groups, objs, group, base + len(new))
    if align is False:
        return False
    # every line is valid: add the block
    g.flush()
    first_line = {}
    for j in range(len(objs) - 1, -1, -1):
        first_line[group[j]] = j
    for key, i in new.items():
        j = first_line[i]
        g.index[key] = i
        g.names.append(key if reader.key_field is not None else reader.group_name(key))
        g.where.append(f"line {first + j}")
        g.folds.append(None if block_folds is None else (int(block_folds[i]), f"line {first + j}"))
    if align is not None:
        g.has_align, g.n_folds = True, align.shape[1]
    elif g.has_align is None:
        g.has_align = False
    g.chunks.append((group, ok, align, None))
    reader.count += len(objs)
    return True


def _alignments(g, objs, group, n_groups):
    """`(alignments (m, F) with NaN at the own fold, each group's fold)`, `(None, None)` without
    folds, or `(False, None)` where the block cannot be vouched for."""
    has = [("alignment" in o or "fold" in o) for o in objs]
    expected = has[0] if g.has_align is None else g.has_align
    if any(h != expected for h in has):
        return False, None
    if not expected:
        return None, None
    folds = [o.get("fold") for o in objs]
    aligns = [o.get("alignment") for o in objs]
    if set(map(type, folds)) != {int} or set(map(type, aligns)) != {list}:
        return False, None
    if not set(map(type, itertools.chain.from_iterable(aligns))) <= {int, float, type(None)}:
        return False, None
    try:
        t = np.array(aligns, np.float64)  # None becomes NaN
    except (ValueError, OverflowError):  # lists of different lengths, an integer beyond float range
        return False, None
    if t.ndim != 2 or t.shape[1] < 2 or t.shape[1] != (g.n_folds or t.shape[1]):
        return False, None
    f = np.array(folds, np.int64)
    if f.min() < 0 or f.max() >= t.shape[1]:
        return False, None
    own = np.arange(t.shape[1]) == f[:, None]
    if not np.array_equal(np.isnan(t), own) or not np.isfinite(t[~own]).all():
        return False, None
    # one fold per group: the fold it already has, else its first answer's in this block
    known = np.full(n_groups, -1, np.int64)
    known[: len(g.folds)] = [-1 if x is None else x[0] for x in g.folds]
    first = np.full(n_groups, -1, np.int64)
    first[group[::-1]] = f[::-1]
    fold_of = np.where(known >= 0, known, first)
    if not np.array_equal(fold_of[group], f):
        return False, None
    return t, fold_of
