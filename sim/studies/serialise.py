"""The JSON form of the confirmations' numbers (the `bandit` part of `results.json`).

:func:`to_json` turns any result of the bandit confirmations (a NamedTuple of arrays and numbers,
or :class:`~sim.studies.confirmations.Confirmations` holding all five) into plain JSON values: arrays become
lists, NaN and infinities None, a `k*` at its sentinel (search limit plus one) None. A NamedTuple
becomes a dict of its fields, except where a layout below says otherwise (confirmation 1's
regime list and summary counts, confirmation 2's `k*`, confirmation 4's per-record mean and
spread). The figures (:mod:`passk.plots.bandit`) read this form. Nothing here computes a
confirmation, and nothing writes files.
"""

from __future__ import annotations

import math

import jax
import numpy as np

import theory
from sim.intervals import wilson_interval
from sim.studies.critical_k import CriticalK
from sim.studies.dynamics import SUMMARISED, RunSummary
from sim.studies.phase import PhaseDiagram
from sim.studies.trainer_map import TrainerMap, trainer_map_summary

__all__ = ["to_json", "trainer_map_json"]


def to_json(x):
    """`x` as JSON values: NamedTuples and dicts to dicts, sequences and arrays to lists, NaN and
    inf to None (see the module docstring)."""
    layout = _LAYOUTS.get(type(x))
    if layout is not None:
        return layout(x)
    if isinstance(x, tuple) and hasattr(x, "_asdict"):
        return {name: to_json(v) for name, v in x._asdict().items()}
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(x)
        if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
            return arr.tolist()
        return _clean_floats(arr.astype(np.float64).tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def _clean_floats(obj):
    if isinstance(obj, list):
        return [_clean_floats(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _k_star_json(k_star, k_max: int):
    """Integer `k*` (any shape) as nested lists, the sentinel `k_max + 1` as None."""

    def fix(v):
        if isinstance(v, list):
            return [fix(u) for u in v]
        return theory.k_star_or_none(v, k_max)

    return fix(np.asarray(k_star).tolist())


def _critical_k(r: CriticalK) -> dict:
    predicted = _k_star_json(r.k_star_predicted, r.k_grid)
    autodiff = _k_star_json(r.k_star_autodiff, r.k_grid)
    match = [a == b for a, b in zip(predicted, autodiff)]
    return {
        "n_regimes": len(match),
        "n_match": int(sum(match)),
        "mismatch_rate": wilson_interval(len(match) - int(sum(match)), len(match)),
        "n_conflict": int(sum(f is not None for f in autodiff)),
        "all_match": bool(all(match)),
        "k_grid": int(r.k_grid),
        "regimes": [
            {"p_hard": float(ph), "separation": float(sep), "start_logit": float(sl), "seed": int(s)}
            for ph, sep, sl, s in zip(r.p_hard, r.separation, r.start_logit, r.seed)
        ],
        "k_star_predicted": predicted,
        "k_star_autodiff": autodiff,
        "mismatches": [
            {"regime": i, "predicted": predicted[i], "autodiff": autodiff[i]} for i, m in enumerate(match) if not m
        ],
        "min_relative_margin": to_json(float(r.min_relative_margin)),
        "curves": {
            "ks": list(range(1, r.k_grid + 1)),
            "regimes": [int(i) for i in r.shown],
            "inner_over_inner1": [to_json(r.inner[i] / abs(r.inner[i, 0])) for i in r.shown],
        },
    }


def _phase_diagram(r: PhaseDiagram) -> dict:
    out = {name: to_json(v) for name, v in r._asdict().items()}
    out["k_star"] = _k_star_json(r.k_star, r.k_max)
    return out


def _run_summary(s: RunSummary) -> dict:
    out = {}
    for name in SUMMARISED:
        mean, half = np.asarray(getattr(s.mean, name)), np.asarray(getattr(s.half, name))
        out[name] = {
            "mean": to_json(mean),
            "std": to_json(getattr(s.std, name)),
            "lower": to_json(mean - half),
            "upper": to_json(mean + half),
        }
    out["k_star_median"] = to_json(s.k_star_median)
    out["k_used_mean"] = to_json(s.k_used_mean)
    out["ks"] = to_json(s.ks)
    out["n_seeds"] = int(s.n_seeds)
    out["trend"] = to_json(s.trend)
    return out


_LAYOUTS = {CriticalK: _critical_k, PhaseDiagram: _phase_diagram, RunSummary: _run_summary}


def trainer_map_json(r: TrainerMap, *, shown_n: int) -> dict:
    """The `trainers` part of `results.json`: the grid, every trainer's summary (`trainer_map`,
    shares with Wilson intervals) and, at group size `shown_n`, each cell's share of seeds in
    conflict (at some allowed `k` for the trainers with an order) and median critical `k` over the
    seeds that have one."""
    g = r.group_sizes.index(shown_n)
    cells = {}
    for method, est in theory.ESTIMATOR_TABLE.items():
        if est.needs_k:
            entry = {"conflict_probability": (r.critical_k[method][g] > 0).mean(axis=0)}
            crit = np.where(r.critical_k[method][g] > 0, r.critical_k[method][g], np.nan)
            found = np.isfinite(crit).any(axis=0)
            with np.errstate(all="ignore"):
                med = np.where(found, np.nanmedian(np.where(found[None], crit, 0.0), axis=0), np.nan)
            entry["median_critical_k"] = med
        else:
            entry = {"conflict_probability": (r.inner[method][g, 0] < 0).mean(axis=0)}
        cells[method] = entry
    return to_json(
        {
            "grid": {
                "p_hard": r.p_hard,
                "separation": r.separation,
                "group_sizes": list(r.group_sizes),
                "n_seeds": r.n_seeds,
                "shown_n": shown_n,
            },
            "trainer_map": trainer_map_summary(r),
            "cells": cells,
        }
    )
