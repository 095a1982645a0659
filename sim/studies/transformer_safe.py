"""Conflict-safe updates measured on the transformer (SPEC sections 5 and 8).

:func:`safe_update_study` starts from the warm start of the `transformer` part (same task, model,
supervised warm start and run keys: :func:`sim.studies.transformer_experiment.warm_start` with the full
preset, `fold_in(split(key, 4)[3], seed)`), finds `k*` there, and fine-tunes with every training
rule of :data:`RULE_VARIANTS` (plain pass@k ascent, the guards after the optimiser
`"project-step"` and `"project-safe-step"`, `"safe-k"`, `"mixture-step"` with a fixed
`lambda` of :data:`MIXTURE_WEIGHTS` added to the step, and pass@1 ascent; names of
:data:`sim.rules.RULE_TABLE`)
at one `k` below `k*` and one above (:func:`sim.studies.transformer_experiment.choose_ks`), with the exact
gradient and with sampled PKPO (`"pkpo-loo-1"`, `n` answers per prompt; the guards' `g_1` is the
RLOO estimate from the same answers), plain steps (SGD) and Adam (see :mod:`sim.transformer.train`
for each rule). Exact runs are deterministic (one seed); sampled runs use several seeds.

`"project-safe-step"` uses `L_1` from :func:`sim.transformer.train.estimate_smoothness` at the warm start
(power iteration and curvatures along `grad J_1`, `grad J_k` and random directions, times a safety
factor 2): a measured local estimate, so its guarantee holds only as far as that estimate holds
along the path. Pass@1 "fell" at a step when `J_1` dropped by more than :data:`FALL_TOL` (float32
rounding of a mean over the prompts).

Runtime (measured on 2 shared CPU cores, other jobs on them part of the time): the fine-tuning
step is compiled once per (estimator, optimiser), not once per group, since
:mod:`sim.transformer.train` passes the rule, `k`, `lambda`, `L_1` and the learning rate as traced
values: 4 compilations at full size (8-25 s each) where there were 52 (one per distinct group), 2
for the quick preset where there were 14. `passk reproduce --parts safe` took 352 s with an empty
compilation cache (the study alone: 370 s, against 955 s with one compilation per group), still
above the 2 minutes the part was asked to fit: the warm start, `k*` and `L_1` take about 30 s, an
exact group about 1 s once compiled, and a sampled group 6-13 s (3 seeds x 8 steps, each drawing
`P x n` answers autoregressively and taking one or two backward passes over them; the guarded
rules need two). The quick preset (every rule and seed, only `k` above `k*`, SGD, three steps) took
110 s with an empty compilation cache and 47 s with `passk`'s persistent compilation cache filled
(the study alone: 61 s, against 136 s before).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sim.intervals import mean_interval
from sim.records import RECORD_NAMES as R
from sim.records import floats as _floats
from sim.rules import RULE_TABLE
from sim.studies import transformer_experiment as _experiment
from sim.transformer import exact as _exact
from sim.transformer import task as _task
from sim.transformer import train as _train

__all__ = ["FALL_TOL", "MIXTURE_WEIGHTS", "RULE_VARIANTS", "SafeStudyConfig", "safe_update_study"]

#: Fixed mixture weights `lambda` of `"mixture-step"` (`u + lambda g_1`; with SGD at step 1, the
#: objective `J_k + lambda J_1`).
MIXTURE_WEIGHTS = (0.2, 1.0)
#: `(label, rule, mixture_weight)` of every rule measured (rules of :data:`sim.rules.RULE_TABLE`).
RULE_VARIANTS = (
    ("passk", "passk", None),
    ("project-step", "project-step", None),
    ("project-safe-step", "project-safe-step", None),
    ("safe-k", "safe-k", None),
    *((f"mixture-step-{w:g}", "mixture-step", w) for w in MIXTURE_WEIGHTS),
    ("pass1", "pass1", None),
)
#: A drop of `J_1` larger than this counts as pass@1 falling (float32 rounding is ~1e-7).
FALL_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class SafeStudyConfig:
    """Sizes of the study; `passk.presets` holds the command's quick and full ones.

    Attributes:
      k_roles: which roles of :func:`~sim.studies.transformer_experiment.choose_ks` to run (`"low"`, `"high"`).
      optimizers: `"sgd"` and/or `"adam"`.
      estimators: `"exact"` and/or sampled estimators of the table.
      seeds: fine-tuning seeds.
      exact_steps, sampled_steps: steps of the exact and sampled runs.
    """

    k_roles: tuple
    optimizers: tuple
    estimators: tuple
    seeds: tuple
    exact_steps: int
    sampled_steps: int
    sgd_learning_rate: float = 1.0
    adam_learning_rate: float = 1e-3
    safe_k_every: int = 5
    smoothness_safety: float = 2.0


def _auc(curve):
    """Area under a curve over the normalised step axis [0, 1] (trapezoid): its average level."""
    c = np.asarray(curve, np.float64)
    return float(np.sum((c[1:] + c[:-1]) / 2) / (c.size - 1))


def safe_update_study(
    *, config: SafeStudyConfig, key, checkpoint_dir=None, progress: Callable[[str], None] | None = None
) -> dict:
    """Measure every training rule on the transformer; return JSON-ready numbers (draws nothing).

    Args:
      config: the study's sizes (:class:`SafeStudyConfig`).
      key: the `transformer` part's key (same warm start and run keys).
      checkpoint_dir: where the warm start's checkpoint lives (the `transformer` part's folder
        reuses its warm start); fine-tuning runs are not checkpointed.
      progress: optional callable receiving status lines.

    Returns:
      `{"k_star", "k_roles", "n_samples", "smoothness", "fall_tol", "rules", "settings",
      "groups", "runtime_s"}`. Each entry of `groups` is one (rule, k, estimator, optimiser):
      `label`, `rule`, `mixture_weight`, `k`, `k_role`, `estimator`, `optimizer`, `steps`, `seeds`,
      `final_pass1`, `final_passk`, `final_pass_at_k_high`, `auc_pass1`, `auc_passk` (each
      `sim.intervals.mean_interval` over seeds: `value`, `lower`, `upper`, `n`, `sd`),
      `pass1_fall_steps` (per seed), `pass1_fell` (any step of any seed), `min_update_inner`,
      `k_used_min`, and the mean curves `pass1_curve`, `passk_curve`.
    """
    if not isinstance(config, SafeStudyConfig):
        raise TypeError(f"config must be a SafeStudyConfig; got {type(config).__name__}")
    cfg = config
    say = progress if progress is not None else (lambda line: None)
    start = time.perf_counter()
    ecfg = _experiment.ExperimentConfig()  # the confirmation's task and warm start
    k_pg = jax.random.split(key, 4)[3]
    task, mcfg, params, _ = _experiment.warm_start(ecfg, key=key, checkpoint_dir=checkpoint_dir, progress=say)
    prompts, answers = jnp.asarray(task.prompts), jnp.asarray(task.answers)
    with jax.default_matmul_precision("float32"):
        agree, p, _ = jax.jit(_exact.agreement_jvp, static_argnums=3)(params, prompts, answers, mcfg)
        k_star = _exact.conflict_summary(np.asarray(p, np.float64), np.asarray(agree, np.float64), (1,))["k_star"]
    roles = _experiment.choose_ks(k_star)
    k_low, k_high = roles["low"], roles["high"]
    n_samples = max(ecfg.min_samples, k_high)
    grad_k_fn = jax.jit(jax.grad(_exact.pass_at_k_objective), static_argnums=3)
    grad_k = [grad_k_fn(params, prompts, answers, mcfg, jnp.asarray(k, jnp.int32)) for k in (k_low, k_high)]
    smooth = _train.estimate_smoothness(
        params, prompts, answers, mcfg, key=jax.random.fold_in(key, 13), directions=grad_k, safety=cfg.smoothness_safety
    )
    say(f"safe: k* {k_star}, k {k_low} / {k_high}, L_1 estimate {smooth['smoothness']:.3g}")

    cache = {}

    def run(rule, weight, k, estimator, optimizer, seed):
        sgd = optimizer == "sgd"
        steps = cfg.exact_steps if estimator == "exact" else cfg.sampled_steps
        pg = _train.PGConfig(
            estimator=estimator,
            k=1 if RULE_TABLE[rule].order == "1" else k,
            n_samples=n_samples,
            optimizer=optimizer,
            learning_rate=cfg.sgd_learning_rate if sgd else cfg.adam_learning_rate,
            steps=steps,
            checkpoint_every=steps,
            track_ks=(k_low, k_high),
            rule=rule,
            mixture_weight=weight,
            smoothness=smooth["smoothness"] if RULE_TABLE[rule].uses_smoothness else None,
            safe_k_every=cfg.safe_k_every,
        )
        if pg not in cache or seed not in cache[pg]:
            _, traj = _train.finetune(
                params,
                prompts,
                answers,
                mcfg,
                pg,
                key=jax.random.fold_in(k_pg, seed),
                verifier=_task.verify,
                verifier_args=(task.hard_table, task.exception_table),
            )
            cache.setdefault(pg, {})[seed] = traj
        return cache[pg][seed], steps

    groups = []
    for optimizer in cfg.optimizers:
        for estimator in cfg.estimators:
            seeds = (0,) if estimator == "exact" else cfg.seeds
            for role in cfg.k_roles:
                k = roles[role]
                column = (k_low, k_high).index(k)
                for label, rule, weight in RULE_VARIANTS:
                    t0 = time.perf_counter()
                    trajs = []
                    for seed in seeds:
                        traj, steps = run(rule, weight, k, estimator, optimizer, seed)
                        trajs.append(traj)
                    pass1 = np.stack([t[R.j1] for t in trajs])
                    passk = np.stack([t[R.jk][:, column] for t in trajs])
                    falls = [int(np.sum(np.diff(c) < -FALL_TOL)) for c in pass1]
                    groups.append(
                        {
                            "label": label,
                            "rule": rule,
                            "mixture_weight": weight,
                            "k": k,
                            "k_role": role,
                            "estimator": estimator,
                            "optimizer": optimizer,
                            "steps": steps,
                            "seeds": list(seeds),
                            "final_pass1": mean_interval(pass1[:, -1]),
                            "final_passk": mean_interval(passk[:, -1]),
                            "final_pass_at_k_high": mean_interval([t[R.jk][-1, 1] for t in trajs]),
                            "auc_pass1": mean_interval([_auc(c) for c in pass1]),
                            "auc_passk": mean_interval([_auc(c) for c in passk]),
                            "pass1_fall_steps": falls,
                            "pass1_fell": bool(any(falls)),
                            "min_update_inner": float(min(np.min(t[R.update_inner]) for t in trajs)),
                            "k_used_min": int(min(np.min(t[R.k_used]) for t in trajs)),
                            "pass1_curve": _floats(pass1.mean(axis=0)),
                            "passk_curve": _floats(passk.mean(axis=0)),
                        }
                    )
                    g = groups[-1]
                    say(
                        f"safe: {optimizer} {estimator} k={k} {label}: pass@1 {g['final_pass1']['value']:.4f}, "
                        f"pass@{k} {g['final_passk']['value']:.4f}, falls {falls} ({time.perf_counter() - t0:.1f}s)"
                    )
    return {
        "k_star": k_star,
        "k_roles": {"low": k_low, "high": k_high},
        "n_samples": n_samples,
        "pass1_warm_start": float(np.mean(np.asarray(p))),
        "smoothness": smooth,
        "fall_tol": FALL_TOL,
        "rules": [label for label, _, _ in RULE_VARIANTS],
        "settings": dataclasses.asdict(cfg),
        "groups": groups,
        "runtime_s": time.perf_counter() - start,
    }
