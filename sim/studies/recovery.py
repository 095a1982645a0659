"""How well `theory.sampled` recovers `k*` from sampled answers (SPEC section 10).

- :func:`recovery_study`: for a policy whose exact `p`, agreements and `k*` are known, draws many
  runs of `n` answers per prompt and summarises the unbiased estimate of `k*` and its interval
  (`theory.sampled_critical_k_jax`, with either standard error: a simultaneous Bonferroni band
  over `k = 1 .. n - 1`, both ends at the level together) against the plug-in
  (`theory.critical_k` at `c/n` and the sampled agreements), and the bias and spread of `I_k` at `k*` and `k* - 1`.
- :func:`toy_recovery`: that study on the toy at its start (SPEC section 10's measurement), with
  answers and exact scores from :func:`sim.answers.scored_answers`.

Numbers only; `passk.plots.sampled` draws them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.answers import scored_answers
from sim.intervals import mean_interval, wilson_interval
from sim.toy import toy_bandit

__all__ = ["recovery_study", "toy_recovery", "k_star_covered", "interval_covers", "SAMPLE_SIZES"]

#: Answers per prompt of the recovery studies (the sizes of SPEC section 10's measurement).
SAMPLE_SIZES = (4, 8, 16, 32, 64, 128)
# The plug-in extrapolates past n - 1: search it this far.
_PLUGIN_K_MAX = 4096


def k_star_covered(lower, upper, truth: int, k_max: int) -> np.ndarray:
    """Whether each `k*` interval `[lower, upper]` holds `truth`, on the sentinel scale.

    `lower = k_max + 1` (no conflict plausible up to `k_max`) puts the interval above `k_max`;
    `upper = k_max + 1` (conflict not established) leaves it unbounded above. `truth` is the exact
    `k*`, `k_max + 1` where it lies beyond `k_max` or does not exist.

    Returns:
      A bool array of the runs' shape.
    """
    lower, upper = np.asarray(lower), np.asarray(upper)
    return (lower <= truth) & ((upper > k_max) | (truth <= upper))


def interval_covers(estimate, stderr, exact: float, quantile: float) -> np.ndarray:
    """Whether `estimate +- quantile * stderr` holds `exact`, run by run (bool array)."""
    return np.abs(np.asarray(estimate) - exact) <= quantile * np.asarray(stderr)


def _histogram(values, k_max: int) -> dict:
    """`{k: count}` with the sentinel `k_max + 1` as `"none"`."""
    keys, counts = np.unique(np.asarray(values), return_counts=True)
    return {("none" if k > k_max else str(int(k))): int(c) for k, c in zip(keys, counts)}


def _median_k(values, k_max: int):
    """Median `k*` over runs, None meaning none up to `k_max` ranked above every `k`."""
    med = int(np.sort(np.asarray(values))[(len(values) - 1) // 2])  # lower median: an attained value
    return theory.k_star_or_none(med, k_max)


@functools.partial(jax.jit, static_argnames=("draw_of", "n", "level", "batch_size"))
def _sampled_runs(keys, data, mu, probe_ks, *, draw_of, n, level, batch_size):
    """The unbiased side of every run, with both standard errors: the `k*` triples, `I_k_hat`
    and its standard errors at `probe_ks`, and the statistics the plug-in needs. Compiled once
    per `n` and shape."""

    def one(run_key):
        rewards, scores = draw_of(run_key, n, data)
        stats = theory.answer_statistics(rewards, scores)
        by_prompts = theory.sampled_critical_k_jax(rewards, scores, mu=mu, level=level)
        by_answers = theory.sampled_critical_k_jax(rewards, scores, mu=mu, level=level, stderr="answers")
        inner = theory.sampled_inner_product(rewards, scores, probe_ks, mu=mu)
        se_answers = theory.sampled_inner_product(rewards, scores, probe_ks, mu=mu, stderr="answers").stderr
        return (
            (by_prompts, by_answers, inner.estimate, inner.stderr, se_answers),
            (stats.correct, stats.mean_score, stats.pair),
        )

    return jax.lax.map(one, keys, batch_size=batch_size)


@jax.jit
def _plugin_runs(correct, mean_score, pair, mu, probe_ks, n):
    """The plug-in side of every run: `k*` and `I_k` at `p = c/n`, `a = a_hat`. `n` enters only
    as a value (the agreements do not depend on it), so runs of every `n` share one program."""

    def one(c, g, pr):
        stats = theory.AnswerStatistics(c, g, pr, n)
        a_hat = theory.agreement_from_statistics(stats, mu=mu)
        return (
            theory.critical_k_jax(c / n, a_hat, mu, k_max=_PLUGIN_K_MAX),
            theory.conflict_inner_product(c / n, a_hat, probe_ks, mu),
        )

    return jax.vmap(one)(correct, mean_score, pair)


def recovery_study(
    draw_of: Callable,
    data,
    p,
    agreement,
    mu,
    *,
    ns=SAMPLE_SIZES,
    repeats: int,
    key,
    level: float = 0.95,
    batch_size: int = 25,
) -> dict:
    """How well `k*` and `I_k` are recovered from `n` sampled answers per prompt.

    Args:
      draw_of: `(key, n, data) -> (rewards (P, n), scores (P, n, D))`, one run of `n` answers per
        prompt (traceable, mapped over keys; a module-level function, so that compilations are
        shared).
      data: the arrays `draw_of` reads (a pytree passed through `jit`).
      p, agreement, mu: exact per-prompt success, agreements and weights `(P,)` (the ground truth).
      ns: answers per prompt to study.
      repeats: runs per `n`.
      key: `jax.random` key.
      level: nominal level of the `k*` interval and of the `I_k` intervals.
      batch_size: runs evaluated together (memory); reduced to a divisor of `repeats`, so that
        the compiled loop has no remainder body.

    Returns:
      A JSON-ready dict: `k_star_exact`, `band` (`"bonferroni"`) and, per `n`, the band's
      `quantile`, the distribution of the unbiased estimate of `k*` and of the plug-in; for each
      standard error (`"prompts"`, `"answers"`, see
      :func:`theory.sampled_inner_product`) the interval's coverage of the exact `k*` and how often
      its upper end is established (Wilson intervals with their counts); and for `k = k* - 1, k*`
      (where `k <= n - 1`) the exact `I_k`, the mean, spread and bias of both estimates, and for
      each standard error its mean and the coverage of `I_k_hat +- z se`.
    """
    p = jnp.asarray(p, jnp.float64)
    agreement = jnp.asarray(agreement, jnp.float64)
    mu = jnp.asarray(mu, jnp.float64)
    k_star = theory.critical_k(p, agreement, mu, k_max=_PLUGIN_K_MAX)
    z = theory.normal_quantile(level)
    out = {"k_star_exact": k_star, "level": level, "band": "bonferroni", "repeats": repeats, "by_n": []}
    batch_size = math.gcd(repeats, batch_size)
    for n in ns:
        k_max = n - 1
        probe = [k for k in ((k_star - 1, k_star) if k_star else ()) if 1 <= k <= k_max]
        probe_ks = jnp.asarray((probe + [1, 1])[:2], jnp.int32)  # two entries: one compiled shape
        keys = jax.random.split(jax.random.fold_in(key, n), repeats)
        unbiased, stats = _sampled_runs(
            keys, data, mu, probe_ks, draw_of=draw_of, n=n, level=level, batch_size=batch_size
        )
        by_prompts, by_answers, inner, se_prompts, se_answers = jax.tree_util.tree_map(np.asarray, unbiased)
        est = by_prompts[0]
        plug, plug_inner = (np.asarray(x) for x in _plugin_runs(*stats, mu, probe_ks, jnp.asarray(n, jnp.float64)))
        truth = k_max + 1 if k_star is None else k_star  # no conflict ranks above every k
        plug_truth = _PLUGIN_K_MAX + 1 if k_star is None else k_star

        def interval(triple):
            _, lo, hi = triple
            covered = k_star_covered(lo, hi, truth, k_max)
            return {
                "coverage": wilson_interval(int(np.sum(covered)), repeats, level),
                "upper_established": wilson_interval(int(np.sum(hi <= k_max)), repeats, level),
                "lower_histogram": _histogram(lo, k_max),
                "upper_histogram": _histogram(hi, k_max),
            }

        entry = {
            "n": n,
            "k_max": k_max,
            "quantile": theory.bands.bonferroni_quantile(k_max, level=level),
            "unbiased": {
                "histogram": _histogram(est, k_max),
                "median": _median_k(est, k_max),
                "share_exact": wilson_interval(int(np.sum(est == truth)), repeats, level),
                "prompts": interval(by_prompts),
                "answers": interval(by_answers),
            },
            "plugin": {
                "histogram": _histogram(plug, _PLUGIN_K_MAX),
                "median": _median_k(plug, _PLUGIN_K_MAX),
                "share_exact": wilson_interval(int(np.sum(plug == plug_truth)), repeats, level),
                "share_above_exact": wilson_interval(int(np.sum(plug > plug_truth)), repeats, level),
            },
            "inner": [],
        }
        exact_inner = (
            np.asarray(theory.conflict_inner_product(p, agreement, np.asarray(probe, np.int64), mu)) if probe else []
        )
        for j, k in enumerate(probe):
            exact = float(exact_inner[j])
            errors = {}
            for name, se in (("prompts", se_prompts), ("answers", se_answers)):
                finite = np.isfinite(se[:, j])
                errors[name] = {
                    "mean": float(se[finite, j].mean()) if finite.any() else None,
                    "coverage": wilson_interval(
                        int(np.sum(interval_covers(inner[:, j], se[:, j], exact, z))), repeats, level
                    ),
                }
            entry["inner"].append(
                {
                    "k": k,
                    "exact": exact,
                    "unbiased": mean_interval(inner[:, j], level),
                    "unbiased_bias_z": float(
                        (inner[:, j].mean() - exact) / (inner[:, j].std(ddof=1) / np.sqrt(repeats))
                    ),
                    "stderr": errors,
                    "plugin": mean_interval(plug_inner[:, j], level),
                }
            )
        out["by_n"].append(entry)
    return out


def _bandit_draw(run_key, n, data):
    bandit, theta = data
    draw = scored_answers(bandit, theta, n, key=run_key)
    return draw.rewards, draw.scores


def toy_recovery(*, key, ns=SAMPLE_SIZES, repeats: int = 200, level: float = 0.95, **toy) -> dict:
    """:func:`recovery_study` on the toy at its start (float64), answers drawn by :func:`scored_answers`.

    Args:
      key: `jax.random` key: the toy's draw uses `fold_in(key, 0)`, the runs `fold_in(key, 1)`.
      ns, repeats, level: as in :func:`recovery_study`.
      **toy: regime keywords of :func:`sim.toy_bandit` (defaults: its documented start, `k* = 6`).
    """
    with jax.enable_x64(True):
        bandit, theta0 = toy_bandit(jax.random.fold_in(key, 0), dtype=jnp.float64, **toy)
        p = bandit.success(theta0)
        agreement = bandit.agreement_scores(theta0)
        result = recovery_study(
            _bandit_draw,
            (bandit, theta0),
            p,
            agreement,
            bandit.prompt_weights,
            ns=ns,
            repeats=repeats,
            key=jax.random.fold_in(key, 1),
            level=level,
        )
    result["policy"] = {"kind": "toy bandit", "n_prompts": bandit.n_prompts, "score_dim": bandit.n_actions * bandit.dim}
    return result
