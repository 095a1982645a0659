"""Which trainer conflicts where: every estimator's own conflict over the toy's regimes (SPEC 6, 8).

A trainer's expected update is `sum_i mu_i v(p_i) grad p_i` with `v` its implied prompt weight
(:func:`theory.implied_prompt_weight`, one entry of :data:`theory.ESTIMATOR_TABLE`, at a finite
group size `n`). Its first-order effect on pass@1 is the trainer's own conflict inner product

    I_v = <E[update], grad J_1> = sum_i mu_i v(p_i) a_i,

with the agreement scores `a_i = <grad p_i, grad J_1>`; the trainer lowers pass@1 in expectation
when `I_v < 0`. For the trainers with an order `k` (PKPO variants, group-normalised pass@k), the
trainer's critical order is the smallest `k <= max_k(n)` with `I_v < 0` (None: no conflict up to
`max_k(n)`); the PKPO variants are unbiased (`v = w_k`), so theirs is the exact `k*` capped at
`n`. The `k`-free trainers (REINFORCE, RLOO, GRPO) conflict or not at each `n`.

:func:`trainer_map` evaluates every (trainer, `n`, `k`) at the toy's start over a
`p_hard x separation` grid and several seeds in one compiled sweep (:func:`sim.sweep.sweep_map`);
:func:`trainer_map_summary` reduces it to shares with Wilson intervals. The numbers only: the
figure is drawn by `passk.plots`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import wilson_interval
from sim.toy import TOY_DEFAULTS, toy_bandit, toy_grid_sweep

__all__ = [
    "TrainerMap",
    "trainer_map",
    "trainer_map_summary",
    "trainer_inner_products",
    "trainer_conflicts",
    "GROUP_SIZES",
]

#: Group sizes of the map (answers per prompt).
GROUP_SIZES = (4, 8, 16)


class TrainerMap(NamedTuple):
    """Every trainer's conflict at the toy start over the grid.

    Attributes:
      p_hard, separation: the grid axes.
      group_sizes: the `n` values.
      n_seeds: seeds per cell.
      inner: `{method: (len(group_sizes), K_n, n_seeds, n_p_hard, n_separation)}` the trainer's
        `I_v`, with `K_n = max_k(max(group_sizes))` orders (`k = 1..K_n`; NaN where `k > max_k(n)`)
        for the trainers with an order and `K_n = 1` for the others.
      critical_k: `{method: (len(group_sizes), n_seeds, n_p_hard, n_separation)}` the smallest
        conflicting `k` (0 where none up to `max_k(n)`), for the trainers with an order.
    """

    p_hard: np.ndarray
    separation: np.ndarray
    group_sizes: tuple
    n_seeds: int
    inner: dict
    critical_k: dict


def _orders(entry, n_largest):
    return np.arange(1, entry.max_k(n_largest) + 1) if entry.needs_k else np.ones(1, np.int64)


def trainer_inner_products(p, agreement, mu, *, group_sizes=GROUP_SIZES) -> dict:
    """Every trainer's `I_v = sum_i mu_i v(p_i) a_i` at each group size and order (traceable).

    Args:
      p: `(P,)` success probabilities.
      agreement: `(P,)` agreement scores `a_i = <grad p_i, grad J_1>`.
      mu: `(P,)` prompt weights.
      group_sizes: Python integers `n >= 2`.

    Returns:
      `{method: (len(group_sizes), K)}` with `K = max_k(max(group_sizes))` orders `k = 1..K` for
      the trainers with an order (NaN where `k > max_k(n)`) and `K = 1` for the others.
    """
    n_largest = max(group_sizes)
    out = {}
    for method, est in theory.ESTIMATOR_TABLE.items():
        ks = _orders(est, n_largest)
        rows = []
        for n in group_sizes:
            if est.needs_k:
                usable = ks <= est.max_k(n)
                k_col = jnp.asarray(np.minimum(ks, est.max_k(n)))[:, None]  # (K, 1), capped
                v = theory.implied_prompt_weight(method, p[None, :], k=k_col, n=n)  # (K, P)
                inner = jnp.sum(mu * v * agreement, axis=-1)
                rows.append(jnp.where(jnp.asarray(usable), inner, jnp.nan))
            else:
                v = theory.implied_prompt_weight(method, p, n=n)
                rows.append(jnp.sum(mu * v * agreement)[None])
        out[method] = jnp.stack(rows)
    return out


def _critical_orders(inner):
    """Smallest `k` (1-based, along axis 1) with `I_v < 0`; 0 where there is none."""
    negative = np.nan_to_num(inner, nan=0.0) < 0
    return np.where(negative.any(axis=1), np.argmax(negative, axis=1) + 1, 0)


def trainer_conflicts(p, agreement, mu=None, *, group_sizes=GROUP_SIZES) -> dict:
    """Every trainer's conflict at one policy (e.g. a transformer warm start), JSON-ready.

    Computed in float64 whatever the caller's JAX precision (the inputs are host arrays).

    Args:
      p: `(P,)` success probabilities.
      agreement: `(P,)` agreement scores.
      mu: `(P,)` prompt weights (default: uniform).
      group_sizes: Python integers `n >= 2`.

    Returns:
      `{method: [{"n", "inner": [I_v per k] or I_v, "critical_k" or "conflict"}, ...]}` with one
      entry per group size; `critical_k` is None where no allowed `k` conflicts.
    """
    p = np.asarray(p, np.float64)
    mu = np.full(p.shape, 1.0 / p.size) if mu is None else np.asarray(mu, np.float64)
    with jax.enable_x64(True):
        inner = {
            m: np.asarray(v, np.float64)
            for m, v in trainer_inner_products(
                jnp.asarray(p), jnp.asarray(agreement, jnp.float64), jnp.asarray(mu), group_sizes=tuple(group_sizes)
            ).items()
        }
    out = {}
    for method, est in theory.ESTIMATOR_TABLE.items():
        rows = []
        for i, n in enumerate(group_sizes):
            if est.needs_k:
                values = inner[method][i, : est.max_k(n)]
                crit = int(_critical_orders(values[None, :])[0])
                rows.append({"n": int(n), "inner": values.tolist(), "critical_k": crit or None})
            else:
                value = float(inner[method][i, 0])
                rows.append({"n": int(n), "inner": value, "conflict": value < 0})
        out[method] = rows
    return out


@functools.lru_cache(maxsize=16)
def _map_entry(n_prompts: int, n_actions: int, start_logit: float, group_sizes: tuple):
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
        return trainer_inner_products(
            p, bandit.agreement_scores(theta0), bandit.prompt_weights, group_sizes=group_sizes
        )

    return entry


def trainer_map(
    *,
    key,
    n_p_hard: int = 8,
    n_separation: int = 8,
    n_seeds: int = 4,
    n_prompts: int = 64,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    start_logit: float = TOY_DEFAULTS["start_logit"],
    p_hard_range=(0.02, 0.6),
    separation_range=(0.0, 4.0),
    group_sizes=GROUP_SIZES,
    devices=None,
) -> TrainerMap:
    """Every trainer's own conflict inner product over the toy's `p_hard x separation` grid.

    All `n_seeds * n_p_hard * n_separation` regimes form one sweep axis of one compiled call;
    each entry draws the toy bandit, reads `p` and `a` at its start, and evaluates `I_v` for every
    trainer of :data:`theory.ESTIMATOR_TABLE`, group size and order. Seeds use common random
    numbers across the grid (the same key for every cell), as the phase diagram does.

    Args:
      key: a `jax.random` key.
      n_p_hard, n_separation, n_seeds: grid sizes.
      n_prompts, n_actions, start_logit: the toy's sizes and start.
      p_hard_range, separation_range: the grid's extent.
      group_sizes: the `n` values (each `>= 2`).
      devices: devices to shard over (default: all).

    Returns:
      :class:`TrainerMap`.
    """
    group_sizes = tuple(theory.validate.python_int("group_sizes", n, minimum=2) for n in group_sizes)
    for name, value in (("n_p_hard", n_p_hard), ("n_separation", n_separation), ("n_seeds", n_seeds)):
        theory.validate.python_int(name, value, minimum=1)
    entry = _map_entry(int(n_prompts), int(n_actions), float(start_logit), group_sizes)
    p_axis, s_axis, out = toy_grid_sweep(
        entry,
        key=key,
        n_p_hard=n_p_hard,
        n_separation=n_separation,
        n_seeds=n_seeds,
        p_hard_range=p_hard_range,
        separation_range=separation_range,
        devices=devices,
    )
    inner, critical = {}, {}
    for method, est in theory.ESTIMATOR_TABLE.items():
        inner[method] = np.moveaxis(out[method], (3, 4), (0, 1))  # (len(group_sizes), K, S, I, J)
        if est.needs_k:
            critical[method] = _critical_orders(inner[method])
    return TrainerMap(p_axis, s_axis, group_sizes, int(n_seeds), inner, critical)


def trainer_map_summary(result: TrainerMap) -> dict:
    """Per trainer and group size: how often it conflicts, with Wilson 95% intervals.

    For a trainer with an order: `conflict_at_some_k`, the share of (cell, seed) instances where
    some allowed `k <= max_k(n)` gives `I_v < 0` (the instances with a critical order), and the
    median of the critical order over them; for the others: `conflict`, the share with `I_v < 0`.
    Counts are over `n_seeds * n_p_hard * n_separation` instances. (Not "at `k = max_k(n)`": the
    group-normalised advantage vanishes at `k = n`, where every group has `sigma = 0`.)
    """
    summary = {}
    for method, est in theory.ESTIMATOR_TABLE.items():
        rows = []
        for i, n in enumerate(result.group_sizes):
            inner = result.inner[method][i]
            row = {"n": int(n), "uses_k": est.needs_k}
            if est.needs_k:
                crit = result.critical_k[method][i]
                row["max_k"] = int(est.max_k(n))
                row["conflict_at_some_k"] = wilson_interval(int((crit > 0).sum()), crit.size)
                found = crit[crit > 0]
                row["median_critical_k"] = float(np.median(found)) if found.size else None
            else:
                row["conflict"] = wilson_interval(int((inner[0] < 0).sum()), inner[0].size)
            rows.append(row)
        summary[method] = rows
    return summary
