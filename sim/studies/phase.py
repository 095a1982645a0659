"""Confirmation 2: the phase diagram, `k*` at the toy start over `p_hard x separation`.

:func:`phase_diagram` evaluates every regime and seed of the grid in one compiled, sharded call
(:func:`sim.toy.toy_grid_sweep`). Numbers only: the JSON form is
:func:`sim.studies.serialise.to_json`, the figure :mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

import theory
from sim.bandit import DEFAULT_K_MAX
from sim.intervals import mean_interval
from sim.toy import TOY_DEFAULTS, hard_mask, toy_bandit, toy_grid_sweep

__all__ = ["PhaseDiagram", "phase_diagram"]


class PhaseDiagram(NamedTuple):
    """Confirmation 2 on an `I x J` grid of `(p_hard, separation)` and `S` seeds.

    Attributes:
      p_hard: `(I,)`; separation: `(J,)`; k_max, n_prompts, n_actions, start_logit: the settings.
      k_star: `(S, I, J)` `k*` at the toy start (`k_max + 1`: none).
      median_k_star: `(I, J)` median over seeds, none counted as `+inf` (inf: most seeds have none).
      conflict_fraction: `(I, J)` share of seeds with a conflict.
      mean_p_hard_group, mean_p_easy_group: `(I, J)` group mean success, averaged over seeds.
      share_negative_agreement: `(I, J)` share of prompts with `a_i < 0`, averaged over seeds.
      k_star_agreed: `(I, J)` median `k*` where every seed has a conflict, NaN elsewhere.
      seeds_agree: `(I, J)` whether all seeds agree on conflict or none.
      n_seeds: `S`.
      share_cells_with_conflict: share of cells whose median `k*` is finite.
      share_cells_k_star_4_to_64: share of cells whose median `k*` lies in `[4, 64]`.
      area_in_conflict: per seed the share of cells with a conflict, as a mean over seeds with
        its t interval (:func:`sim.intervals.mean_interval`; the seeds' cells share random
        numbers, so the seed, not the cell, is the independent unit).
      cells_seeds_disagree: the count of cells whose seeds disagree on conflict.
    """

    p_hard: np.ndarray
    separation: np.ndarray
    k_max: int
    n_prompts: int
    n_actions: int
    start_logit: float
    k_star: np.ndarray
    median_k_star: np.ndarray
    conflict_fraction: np.ndarray
    mean_p_hard_group: np.ndarray
    mean_p_easy_group: np.ndarray
    share_negative_agreement: np.ndarray
    k_star_agreed: np.ndarray
    seeds_agree: np.ndarray
    n_seeds: int
    share_cells_with_conflict: float
    share_cells_k_star_4_to_64: float
    area_in_conflict: dict
    cells_seeds_disagree: int


@functools.lru_cache(maxsize=16)
def _phase_entry(n_prompts: int, n_actions: int, start_logit: float, k_max: int) -> Callable:
    def entry(args):
        p_hard, separation, key = args
        bandit, theta0 = toy_bandit(
            key,
            n_prompts=n_prompts,
            p_hard=p_hard,
            separation=separation,
            n_actions=n_actions,
            start_logit=start_logit,
        )
        p = bandit.success(theta0)
        a = bandit.agreement_scores(theta0)
        hard = hard_mask(bandit)
        k_star = theory.critical_k_jax(p, a, bandit.prompt_weights, k_max=k_max)
        n_hard = jnp.sum(hard)
        return {
            "k_star": k_star,
            "p_hard_group": jnp.sum(jnp.where(hard, p, 0)) / jnp.maximum(n_hard, 1),
            "p_easy_group": jnp.sum(jnp.where(hard, 0, p)) / jnp.maximum(p.shape[0] - n_hard, 1),
            "share_negative": jnp.mean(a < 0),
        }

    return entry


def phase_diagram(
    *,
    key,
    n_p_hard: int = 12,
    n_separation: int = 12,
    n_seeds: int = 1,
    n_prompts: int = 64,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    start_logit: float = TOY_DEFAULTS["start_logit"],
    p_hard_range=(0.02, 0.6),
    separation_range=(0.0, 4.0),
    k_max: int = DEFAULT_K_MAX,
    devices=None,
) -> PhaseDiagram:
    """Confirmation 2: `k*` at the toy start over a `p_hard x separation` grid, one compiled call.

    All `n_p_hard * n_separation * n_seeds` regimes form one sweep axis, evaluated by one
    `jit(vmap)` sharded over `devices` (:func:`sim.sweep.sweep_map`), float32. Seeds use common
    random numbers across the grid (the same key for every cell), so the map is smooth in the
    parameters.

    Returns:
      :class:`PhaseDiagram`.
    """
    p_axis, s_axis, out = toy_grid_sweep(
        _phase_entry(n_prompts, n_actions, float(start_logit), k_max),
        key=key,
        n_p_hard=n_p_hard,
        n_separation=n_separation,
        n_seeds=n_seeds,
        p_hard_range=p_hard_range,
        separation_range=separation_range,
        devices=devices,
    )
    k_star = out["k_star"]
    conflict = k_star <= k_max
    med = np.median(np.where(conflict, k_star, np.inf), axis=0)  # "none" as +inf
    all_conflict, no_conflict = conflict.all(axis=0), (~conflict).all(axis=0)
    return PhaseDiagram(
        p_hard=p_axis,
        separation=s_axis,
        k_max=int(k_max),
        n_prompts=int(n_prompts),
        n_actions=int(n_actions),
        start_logit=float(start_logit),
        k_star=k_star,
        median_k_star=med,
        conflict_fraction=conflict.mean(axis=0),
        mean_p_hard_group=out["p_hard_group"].mean(axis=0),
        mean_p_easy_group=out["p_easy_group"].mean(axis=0),
        share_negative_agreement=out["share_negative"].mean(axis=0),
        k_star_agreed=np.where(all_conflict, med, np.nan),
        seeds_agree=all_conflict | no_conflict,
        n_seeds=int(n_seeds),
        share_cells_with_conflict=float((med <= k_max).mean()),
        share_cells_k_star_4_to_64=float(((med >= 4) & (med <= 64)).mean()),
        area_in_conflict=mean_interval(conflict.mean(axis=(1, 2))),
        cells_seeds_disagree=int((~(all_conflict | no_conflict)).sum()),
    )
