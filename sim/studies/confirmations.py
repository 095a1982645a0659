"""The five bandit confirmations together: :func:`run_all` and its record :class:`Confirmations`.

1. :mod:`sim.studies.critical_k` - `theory.critical_k` from exact `p` and agreements equals the
   first `k` at which the autodiff `<grad J_k, grad J_1>` is negative.
2. :mod:`sim.studies.phase` - `k*` over `p_hard x separation` in one compiled, sharded call.
3. :mod:`sim.studies.one_step` - below `min(pass1_decrease_window, passk_increase_window)` one
   plain pass@k step lowers `J_1` and raises `J_k`; how often an Adam step and the projected
   steps of SPEC section 8 do the same; Hessian norms against the `B^2/2` bound.
4. :mod:`sim.studies.dynamics` - trajectories from the toy start: pass@1 ascent, pass@k ascent
   below and above `k*`, the conflict-safe rules, exact and sampled, SGD and Adam.
5. :mod:`sim.studies.estimator_check` - the average sampled update of each estimator against its
   exact expectation `sum_i mu_i v(p_i) grad p_i` (`v = theory.implied_prompt_weight`).

Each returns a NamedTuple of arrays and plain numbers, computed from the bandits (nothing is typed
in); a `k*` array holds the search limit plus one where there is no conflict
(:func:`theory.k_star_or_none` reads it). The sizes of a run are the caller's (`passk.presets`
holds the command's quick and full ones). The JSON form (the `bandit` part of `results.json`) is
:func:`sim.studies.serialise.to_json`; the figures are drawn by :mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax

from sim.studies.critical_k import CriticalK, critical_k_agreement
from sim.studies.dynamics import Dynamics, dynamics
from sim.studies.estimator_check import EstimatorCheck, estimator_check
from sim.studies.one_step import OneStep, one_step
from sim.studies.phase import PhaseDiagram, phase_diagram
from sim.toy import TOY_FIGURE_K, toy_diagnostics, toy_figure_key

__all__ = ["Confirmations", "CONFIRMATIONS", "run_all"]

#: The confirmations of :func:`run_all`, in order: the key of their sizes, the function, its
#: `fold_in` index of the run's key.
CONFIRMATIONS = {
    "critical_k": (critical_k_agreement, 1),
    "phase": (phase_diagram, 2),
    "one_step": (one_step, 3),
    "dynamics": (dynamics, 4),
    "estimators": (estimator_check, 5),
}


class Confirmations(NamedTuple):
    """Every confirmation's numbers (:func:`run_all`).

    Attributes:
      toy: the toy start (:func:`sim.toy_diagnostics`, a JSON-ready dict).
      critical_k, phase_diagram, one_step, dynamics, estimators: confirmations 1 to 5.
      meta: the sizes, seconds per part, device count and backend.
    """

    toy: dict
    critical_k: CriticalK
    phase_diagram: PhaseDiagram
    one_step: OneStep
    dynamics: Dynamics
    estimators: EstimatorCheck
    meta: dict


def run_all(*, sizes: dict, key, progress: Callable[[str], None] | None = None) -> Confirmations:
    """Every confirmation's numbers at the given sizes.

    Args:
      sizes: `{name: keyword arguments}` for the confirmations of :data:`CONFIRMATIONS`
        (`"critical_k"`, `"phase"`, `"one_step"`, `"dynamics"`, `"estimators"`); a name left out
        runs at its function's defaults.
      key: `jax.random` key; each confirmation gets its own `fold_in`.
      progress: optional callback receiving one line per finished part.

    Returns:
      :class:`Confirmations` (its JSON: :func:`sim.studies.serialise.to_json`).
    """
    if not isinstance(sizes, dict):
        raise TypeError(f"sizes must be a dict of keyword arguments per confirmation; got {sizes!r}")
    unknown = sorted(set(sizes) - set(CONFIRMATIONS))
    if unknown:
        raise ValueError(f"sizes names unknown confirmations {unknown}; choose from {list(CONFIRMATIONS)}")
    say = progress or (lambda _msg: None)
    timings = {}
    results = {}

    def part(field, fn, **kwargs):
        t0 = time.perf_counter()
        results[field] = fn(**kwargs)
        timings[field] = round(time.perf_counter() - t0, 2)
        say(f"{field}: {timings[field]:.1f} s")

    part("toy", toy_diagnostics, key=toy_figure_key(key), k=TOY_FIGURE_K)  # also `passk toy`
    fields = dict(zip(CONFIRMATIONS, Confirmations._fields[1:]))  # "phase" -> "phase_diagram", ...
    for name, (fn, index) in CONFIRMATIONS.items():
        part(fields[name], fn, key=jax.random.fold_in(key, index), **sizes.get(name, {}))
    meta = {
        "sizes": sizes,
        "seconds": timings,
        "n_devices": len(jax.devices()),
        "backend": jax.default_backend(),
    }
    return Confirmations(**results, meta=meta)
