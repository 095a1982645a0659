"""What `passk diagnose` reads from one step's file (:class:`RunData`), and the one error its
readers raise (:class:`InputError`: one line naming the file, where, and the prompt id)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

__all__ = ["InputError", "RunData"]


class InputError(ValueError):
    """Bad input file: the message is one line naming the file, where, and the prompt id."""


@dataclass
class RunData:
    """What a file holds, as the arrays :func:`sim.diagnose.diagnosis_report` reads."""

    correct: np.ndarray  # (P,)
    n: int
    score_sum: np.ndarray | None  # (P, D)
    score_sq_sum: np.ndarray | None  # (P,)
    mu: np.ndarray | None  # (P,)
    prompt_ids: list


def _where(path, line=None, prompt=None, array=None, index=None) -> str:
    parts = [str(path)]
    if line is not None:
        parts.append(f"line {line}")
    if array is not None:
        parts.append(f"array {array!r}" + (f", prompt index {index}" if index is not None else ""))
    text = ": ".join(parts)
    if prompt is not None:
        text += f" (prompt {prompt!r})"
    return text


def json_object(line: str):
    """One JSON-lines line as `(object or None for a blank line, None)`, or `(None, why)` when it is
    not a JSON object (a last line without its newline gets the hint that the file may be cut off)."""
    if not line.strip():
        return None, None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        hint = "" if line.endswith("\n") else " (the last line has no newline: the file may be cut off)"
        return None, f"not valid JSON: {err.msg}{hint}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object per line; got {type(obj).__name__}"
    return obj, None


def _fail(path, what, **where):
    raise InputError(f"{_where(path, **where)}: {' '.join(str(what).split())}")
