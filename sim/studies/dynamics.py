"""Confirmation 4: training dynamics from the toy start, with `k*` along the way.

:func:`dynamics` runs pass@1 ascent, pass@k ascent below and above `k*`, the conflict-safe rules,
exact and sampled, SGD and Adam (each line one :func:`sim.train.train_sweep` call) and summarises
every rule over seeds (:class:`RunSummary`). Numbers only: the JSON form is
:func:`sim.studies.serialise.to_json`, the figure :mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import mean_half_width
from sim.rules import RULE_TABLE
from sim.toy import TOY_DEFAULTS, toy_bandit
from sim.train import ESTIMATORS, RECORD_NAMES, Records, train_sweep

__all__ = ["RunSummary", "Dynamics", "SUMMARISED", "dynamics"]


class RunSummary(NamedTuple):
    """One rule of one dynamics run, over seeds, with one row per `k` and one column per step.

    Attributes:
      mean, std: :class:`sim.train.Records` of `(K, T)` means and standard deviations (`ddof = 1`;
        0 for one seed) over seeds of the float records (`j1`, `jk`, `inner`, `mean_agreement`,
        `cos`, `update_inner`; the others None).
      half: :class:`sim.train.Records` of `(K, T)` half-widths of the 95% t interval of each mean
        (`t_{S-1} std / sqrt(S)`, as :func:`sim.intervals.mean_interval`; 0 for one seed).
      k_star_median: `(K, T)` median `k*` over seeds, none counted as `+inf`.
      k_used_mean: `(K, T - 1)` mean order used.
      ks: the orders; n_seeds: the seeds averaged.
      trend: per `k`, `{"k", "j1", "jk"}` with the start, end, min, argmin, max and the number of
        steps over which the mean curve first falls, of `J_1` and `J_k`.
    """

    mean: Any
    std: Any
    half: Any
    k_star_median: np.ndarray
    k_used_mean: np.ndarray
    ks: list
    n_seeds: int
    trend: list


#: The records a :class:`RunSummary` averages over seeds.
SUMMARISED = (
    RECORD_NAMES.j1,
    RECORD_NAMES.jk,
    RECORD_NAMES.inner,
    RECORD_NAMES.mean_agreement,
    RECORD_NAMES.cos,
    RECORD_NAMES.update_inner,
)


def _trend(j):
    """Start, end, minimum, argmin, maximum of a mean curve, and how many steps it first falls."""
    j = np.asarray(j, np.float64)
    return {
        "start": float(j[0]),
        "end": float(j[-1]),
        "min": float(j.min()),
        "argmin": int(j.argmin()),
        "max": float(j.max()),
        "monotone_down_steps": int(np.argmax(np.diff(j) >= 0)) if (np.diff(j) >= 0).any() else int(len(j) - 1),
    }


def _summarise(out: dict, ks, n_seeds: int, k_max: int) -> RunSummary:
    """Mean and spread over seeds of a `(K, S, T)` record dict; `k*` as a median with `+inf`."""
    mean, std, half = {}, {}, {}
    for name in SUMMARISED:
        v = np.asarray(out[name], np.float64)
        mean[name] = v.mean(axis=-2)
        std[name] = v.std(axis=-2, ddof=1) if n_seeds > 1 else np.zeros_like(mean[name])
        half[name] = mean_half_width(std[name], n_seeds)
    k_star = np.asarray(out[RECORD_NAMES.k_star])
    j1, jk = mean[RECORD_NAMES.j1], mean[RECORD_NAMES.jk]
    return RunSummary(
        mean=Records(**mean),
        std=Records(**std),
        half=Records(**half),
        k_star_median=np.median(np.where(k_star <= k_max, k_star, np.inf), axis=-2),
        k_used_mean=np.asarray(out[RECORD_NAMES.k_used], np.float64).mean(axis=-2),
        ks=list(ks),
        n_seeds=int(n_seeds),
        trend=[{"k": int(k), "j1": _trend(j1[i]), "jk": _trend(jk[i])} for i, k in enumerate(ks)],
    )


class Dynamics(NamedTuple):
    """Confirmation 4: the settings, `k*` at the start, and `runs[name][rule]` (:class:`RunSummary`)."""

    k_star0: int
    k_low: int
    k_high: int
    ks: list
    steps: int
    n_samples: int
    learning_rate: float
    adam_learning_rate: float
    mixture_weight: float
    regime: dict
    runs: dict


def dynamics(
    *,
    key,
    steps: int = 60,
    n_seeds: int = 2,
    n_samples: int = 40,
    learning_rate: float = 1.0,
    adam_learning_rate: float = 0.05,
    mixture_weight: float = 1.0,
    n_prompts: int = TOY_DEFAULTS["n_prompts"],
    sampled=("pkpo-loo/sgd", "grouped-passk/sgd", "pkpo-loo/adam"),
    k_max: int = 1024,
) -> Dynamics:
    """Confirmation 4: training dynamics from the toy start (default regime, float32).

    With `k*` the critical order at the start, `k_low = max(2, k* // 2)` (no conflict) and
    `k_high` the power of two at or above `4 k*`, capped at `n_samples - 1` (conflict). Every run
    covers `ks = (1, k_low, k_high)`: pass@k ascent at `k = 1` *is* pass@1 ascent (`w_1 = 1`; the
    PKPO-LOO estimator at `k = 1` is RLOO, and the group-normalised advantage at `k = 1` is GRPO).
    Each line is one `train_sweep` call (rules, `k` and seeds are vmap axes of one compile):

    - `"exact/sgd"`: exact gradients, plain steps (`optax.sgd(learning_rate)`), rules `"passk"`,
      `"project"`, `"project-safe"`, `"mixture"` (fixed `lambda = mixture_weight`: ascent on
      `J_k + lambda J_1`) and `"safe-k"`; one seed (deterministic);
    - `"exact/adam"`: exact gradients, `optax.adam(adam_learning_rate)`, rule `"passk"`;
    - the sampled runs named in `sampled`, `"estimator/optimizer"` (default `"pkpo-loo/sgd"`,
      `"grouped-passk/sgd"`, `"pkpo-loo/adam"`): `n_samples` answers per prompt over `n_seeds`
      seeds, rule `"passk"`.

    Returns:
      :class:`Dynamics`, with `runs[name][rule]` a :class:`RunSummary` (rows `k = 1, k_low,
      k_high`).
    """
    with jax.enable_x64(False):
        bandit, theta0 = toy_bandit(jax.random.fold_in(key, 0), n_prompts=n_prompts, dtype=jnp.float32)
        k_star0 = int(bandit.diagnostics(theta0, 1, k_max=k_max).k_star)
        k_star0 = theory.k_star_or_none(k_star0, k_max)
        if k_star0 is None:
            raise RuntimeError("the toy start shows no conflict; dynamics needs one (check TOY_DEFAULTS)")
        k_low = max(2, k_star0 // 2)
        k_high = min(2 ** math.ceil(math.log2(4 * k_star0)), n_samples - 1)
        if not k_low < k_star0 <= k_high:
            raise RuntimeError(f"cannot place k below and above k*={k_star0} with n_samples={n_samples}")
        ks = [1, k_low, k_high]
        bandits = jax.tree_util.tree_map(lambda x: x[None], bandit)
        thetas = theta0[None]
        seed_keys = jax.random.split(jax.random.fold_in(key, 1), n_seeds)
        # the rules on the direction that read an order k (not plain pass@1), in the table's order
        safe_rules = tuple(
            name for name, rule in RULE_TABLE.items() if rule.acts_on == "direction" and rule.order != "1"
        )
        plan = [
            ("exact/sgd", dict(rule=safe_rules, keys=seed_keys[:1], mixture_weight=mixture_weight)),
            ("exact/adam", dict(rule=("passk",), keys=seed_keys[:1], optimizer="adam")),
        ]
        for name in sampled:
            estimator, _, optimizer = str(name).partition("/")
            if estimator not in ESTIMATORS[1:] or optimizer not in ("sgd", "adam", "momentum"):
                raise ValueError(f"sampled runs are named 'estimator/optimizer' (e.g. 'pkpo-loo/sgd'); got {name!r}")
            plan.append((name, dict(rule=("passk",), keys=seed_keys, estimator=estimator, optimizer=optimizer)))
        runs = {}
        for name, cfg in plan:
            cfg = dict(cfg)
            estimator = cfg.pop("estimator", "exact")
            optimizer = cfg.pop("optimizer", "sgd")
            out = train_sweep(
                bandits,
                thetas,
                ks=ks,
                steps=steps,
                estimator=estimator,
                optimizer=optimizer,
                n_samples=None if estimator == "exact" else n_samples,
                learning_rate=adam_learning_rate if optimizer == "adam" else learning_rate,
                k_max=k_max,
                **cfg,
            )
            runs[name] = {
                rule: _summarise({n: v[u, 0] for n, v in out.items()}, ks, len(cfg["keys"]), k_max)  # (K, S, T)
                for u, rule in enumerate(cfg["rule"])
            }
    return Dynamics(
        k_star0=int(k_star0),
        k_low=int(k_low),
        k_high=int(k_high),
        ks=ks,
        steps=int(steps),
        n_samples=int(n_samples),
        learning_rate=float(learning_rate),
        adam_learning_rate=float(adam_learning_rate),
        mixture_weight=float(mixture_weight),
        regime=dict(TOY_DEFAULTS, n_prompts=n_prompts),
        runs=runs,
    )
