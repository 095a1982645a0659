"""The names of everything a training run records: one vocabulary for the bandits, the
transformer, the JSON and the plots.

:class:`Records` is the record layout of :func:`sim.train.run` (a pytree of arrays);
:data:`RECORD_NAMES` holds each name as a string (`RECORD_NAMES.inner == "inner"`), and every
dict of results keys its records by these strings: :func:`sim.train.train`,
:func:`sim.transformer.train.finetune` (`j1`, `jk`, `update_inner`, `k_used`),
:func:`sim.transformer.exact.conflict_summary` (`inner`, `mean_agreement`, `k_star`), the studies'
JSON and the plots that read it. A quantity over several orders `k` (a curve over a `k` grid) keeps
the name of its value at one `k`.

:func:`floats` turns any array into the JSON-ready list of Python floats the studies write.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["DIAGNOSTIC_RECORDS", "NOT_RECORDED", "RECORD_NAMES", "Records", "STATE_RECORDS", "UPDATE_RECORDS", "floats"]


class Records(NamedTuple):
    """What a training run records; the field names are the record names everywhere.

    State records, at `theta_t` for `t = 0..steps` (length `steps + 1`):

    Attributes:
      j1: `J_1 = sum_i mu_i p_i`.
      jk: `J_k = sum_i mu_i (1 - (1 - p_i)^k)`.
      inner: `I_k = <grad J_k, grad J_1>` (diagnostic).
      mean_agreement: `A_k = sum_i omega_i a_i`, the underflow-free sign of `I_k` (diagnostic).
      cos: `cos_k = <g_k, g_1> / (|g_k| |g_1|)` (diagnostic).
      k_star: `k* = min{k : I_k < 0}`, `k_max + 1` when none (diagnostic; -1 where not recorded).

    Update records, for the update `u_t` of step `t < steps` (length `steps`):

    Attributes:
      update_inner: `<grad J_1, u_t>`, the first-order change of `J_1` the update takes.
      update_norm: `||u_t||`.
      k_used: the order of `g_k` the step used.

    A field is None where it is not computed (inside a step, before the update).
    """

    j1: Any = None
    jk: Any = None
    inner: Any = None
    mean_agreement: Any = None
    cos: Any = None
    k_star: Any = None
    update_inner: Any = None
    update_norm: Any = None
    k_used: Any = None


#: Every record name as a string, by field (`RECORD_NAMES.j1 == "j1"`).
RECORD_NAMES = Records(*Records._fields)
STATE_RECORDS = RECORD_NAMES[:6]
UPDATE_RECORDS = RECORD_NAMES[6:]
#: State records written only at the steps that record diagnostics (`record_every`).
DIAGNOSTIC_RECORDS = (RECORD_NAMES.inner, RECORD_NAMES.mean_agreement, RECORD_NAMES.cos, RECORD_NAMES.k_star)
#: `k_star` where no diagnostics were recorded (`k* >= 1`; `k_max + 1` means "none up to k_max").
NOT_RECORDED = -1


def floats(x) -> list:
    """`x` flattened to a list of Python floats (through float64): the JSON form of an array."""
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]
