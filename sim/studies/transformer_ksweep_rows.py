"""The k-sweep's table (:mod:`sim.studies.transformer_ksweep`): from its runs' records to rows, verdicts
and explanations.

Per `(family, warm start, k)`: `pass1_change = J_1(T) - J_1(0)` per seed, its mean with a 95%
Student t interval over seeds (:func:`sim.intervals.mean_interval`); the predicted sign of `I_k`
at the start (:func:`predicted_sign`), the observed sign (:func:`observed_sign`, 0 when the
interval contains 0), and a verdict: agree, disagree or inconclusive. A disagreement is explained
from the run's records (:func:`run_records`, :func:`explain`).
"""

from __future__ import annotations

import numpy as np

import theory
from sim.intervals import mean_interval
from sim.records import RECORD_NAMES as R
from sim.records import floats as _floats

__all__ = [
    "explain",
    "histogram",
    "observed_sign",
    "predicted_sign",
    "run_records",
    "summarise",
    "verdict",
    "warm_start_rows",
]

HIST_BINS = 10


def predicted_sign(k: int, k_star) -> int:
    """The sign of `I_k` at the start that `k*` predicts: `-1` if `k >= k*`, else `+1` (`k*` None: `+1`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k_star is not None and (isinstance(k_star, bool) or not isinstance(k_star, (int, np.integer)) or k_star < 1):
        raise ValueError(f"k_star must be None or an integer >= 1; got {k_star!r}")
    return -1 if k_star is not None and k >= k_star else 1


def observed_sign(interval: dict) -> int:
    """The sign of a mean with an interval: 0 when the interval contains 0, else the mean's sign."""
    lower, upper = float(interval["lower"]), float(interval["upper"])
    if lower <= 0.0 <= upper:
        return 0
    return 1 if lower > 0 else -1


def run_records(p, agreement, k, mu=None) -> dict:
    """What the study reads from one run at every step, from its exact `p` and agreements.

    `J_1 = sum_i mu_i p_i`, `J_k = sum_i mu_i (1 - (1 - p_i)^k)`, `A_k` (the sign of `I_k` at the
    run's own `k`, :func:`theory.weighted_mean_agreement`) and `k*` (:func:`theory.critical_k`,
    None for no conflict), in float64 as :func:`sim.transformer.exact.conflict_summary` at the
    warm start.

    Args:
      p, agreement: `(T + 1, P)` per step.
      k: the run's order.
      mu: `(P,)` prompt weights, uniform when None.

    Returns:
      `{"j1", "jk", "mean_agreement"}` (:data:`sim.records.RECORD_NAMES`) as `(T + 1,)` float
      arrays and `"k_star"` as a list of int or None.
    """
    p, agreement = np.asarray(p, np.float64), np.asarray(agreement, np.float64)
    weights = np.full(p.shape[-1], 1.0 / p.shape[-1]) if mu is None else np.asarray(mu, np.float64)
    return {
        R.j1: p @ weights,
        R.jk: np.asarray(theory.pass_at_k(p, k)) @ weights,
        R.mean_agreement: np.asarray(theory.weighted_mean_agreement(p, agreement, k, weights)),
        R.k_star: [theory.critical_k(pt, at, weights) for pt, at in zip(p, agreement)],
    }


def histogram(p, is_hard):
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    return {
        "edges": _floats(edges),
        "hard": [int(c) for c in np.histogram(p[is_hard], edges)[0]],
        "easy": [int(c) for c in np.histogram(p[~is_hard], edges)[0]],
    }


def explain(predicted, observed, k, change, runs, exact_agrees=None):
    """Why the observed sign of a pass@1 change departs from the prediction, from the records.

    `runs`: the records (:func:`run_records` plus `update_inner`) of the runs behind the change.
    In each run the step `t` that moved pass@1 furthest the observed way is classified by what the
    records say at `theta_t`:

    - `"k* moved"`: `I_k` at this `k` already had the observed sign at `theta_t`, `t >= 1`: `k*`
      moved past `k` along the trajectory;
    - `"several crossings"`: the same at `t = 0`: the prediction from `k*` and the sign of `I_k`
      at the start differ, which happens only when `I_k` changes sign more than once in `k`;
    - `"sampled update"`: `I_k` had the predicted sign but the update taken did not
      (`<g_1, u_t>` has the observed sign): the sampled estimate, not the expected update, decided;
    - `"step too large"`: both had the predicted sign, yet pass@1 moved the other way: the step was
      too large for the first-order prediction (second-order terms won).

    Returns one sentence naming the classes with their shares of runs, plus, for sampled runs
    whose exact-gradient twin moved as predicted, that fact.
    """
    classes, where = [], []
    for r in runs:
        deltas = np.diff(r[R.j1])  # (T,)
        t = int(np.argmax(observed * deltas))  # the step that moved pass@1 furthest the observed way
        if np.sign(r[R.mean_agreement][t]) == observed:
            classes.append("k* moved" if t > 0 else "several crossings")
        elif np.sign(r[R.update_inner][t]) == observed:
            classes.append("sampled update")
        else:
            classes.append("step too large")
        where.append(t)
    words = {
        "k* moved": "k* moved past k along the trajectory (I_k at k = {k} had the sign {obs:+d} at step {t}; "
        "k*_t = {path})",
        "several crossings": "I_k changes sign more than once in k: at the start it already had the sign {obs:+d} "
        "at k = {k}",
        "sampled update": "the sampled update pointed against the prediction (<g_1, u_t> had the sign {obs:+d} at "
        "step {t} while I_k had the predicted sign)",
        "step too large": "the step was too large for the first-order prediction (at step {t} both I_k and "
        "<g_1, u_t> had the predicted sign, pass@1 moved the other way)",
    }
    parts = []
    for name in dict.fromkeys(classes):
        i = classes.index(name)
        share = classes.count(name) / len(classes)
        path = ", ".join(str(v) for v in runs[i][R.k_star])
        parts.append(words[name].format(k=k, obs=observed, t=where[i], path=path) + f" [{share:.0%} of runs]")
    if exact_agrees:
        parts.append("the exact-gradient run at this k moved pass@1 as predicted")
    return f"pass@1 changed by {change:+.2e}: " + "; ".join(parts)


def verdict(predicted, observed):
    return "inconclusive" if observed == 0 else ("agree" if observed == predicted else "disagree")


def warm_start_rows(family, ws_name, k_star, ks, seeds, out, n_samples, summary, mu):
    """The table rows of one warm start from its runs (per `k`: `seeds` sampled runs, then the exact one)."""
    rows = []
    n_runs_k = seeds + 1
    a_start = dict(zip(summary["ks"], summary[R.mean_agreement]))
    for index, k in enumerate(ks):
        runs = []
        for r in range(index * n_runs_k, (index + 1) * n_runs_k):
            record = run_records(out["p"][r], out["agreement"][r], int(k), mu)
            record[R.update_inner] = out[R.update_inner][r]
            runs.append(record)
        sampled, exact = runs[:seeds], runs[seeds]
        change = np.asarray([r[R.j1][-1] - r[R.j1][0] for r in sampled])
        interval = mean_interval(change)
        exact_change = float(exact[R.j1][-1] - exact[R.j1][0])
        pred = predicted_sign(int(k), k_star)
        obs, exact_obs = observed_sign(interval), int(np.sign(exact_change))
        row = {
            "task": family,
            "warm_start": ws_name,
            "k_star": k_star,
            "k": int(k),
            "seeds": list(range(seeds)),
            "pass1_change": interval,
            "predicted_sign": pred,
            "observed_sign": obs,
            "verdict": verdict(pred, obs),
            "explanation": None,
            "n_samples": int(n_samples),
            "mean_agreement_start": float(a_start[int(k)]),
            "pass1_change_per_seed": _floats(change),
            "pass1_mean": _floats(np.mean([r[R.j1] for r in sampled], axis=0)),
            "passk_mean": _floats(np.mean([r[R.jk] for r in sampled], axis=0)),
            "first_order_change": float(np.mean([np.sum(r[R.update_inner]) for r in sampled])),
            "k_star_after": [r[R.k_star][-1] for r in sampled],
            "k_star_path": [r[R.k_star] for r in sampled],
            "exact_pass1_change": exact_change,
            "exact_observed_sign": exact_obs,
            "exact_verdict": verdict(pred, exact_obs),
            "exact_explanation": None,
            "exact_pass1": _floats(exact[R.j1]),
            "exact_passk": _floats(exact[R.jk]),
            "exact_first_order_change": float(np.sum(exact[R.update_inner])),
            "exact_k_star_path": exact[R.k_star],
            "exact_k_star_after": exact[R.k_star][-1],
        }
        if row["verdict"] == "inconclusive":
            row["explanation"] = (
                f"within noise: the 95% interval over {seeds} seeds, "
                f"[{interval['lower']:.2e}, {interval['upper']:.2e}], "
                f"contains 0 (A_k at the start {row['mean_agreement_start']:.2e})"
            )
        elif row["verdict"] == "disagree":
            row["explanation"] = explain(
                pred, obs, int(k), interval["value"], sampled, exact_agrees=row["exact_verdict"] == "agree"
            )
        if row["exact_verdict"] == "inconclusive":
            row["exact_explanation"] = "pass@1 did not change in float32 (the exact gradient vanishes)"
        elif row["exact_verdict"] == "disagree":
            row["exact_explanation"] = explain(pred, exact_obs, int(k), exact_change, [exact])
        rows.append(row)
    return rows


def summarise(rows):
    def counts(selected, field="verdict"):
        out = {"agree": 0, "disagree": 0, "inconclusive": 0}
        for row in selected:
            out[row[field]] += 1
        out["rows"] = len(selected)
        return out

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    return {
        "counts": counts(rows),
        "by_task": {task: counts([r for r in rows if r["task"] == task]) for task in tasks},
        "exact_counts": counts(rows, "exact_verdict"),
        "exact_by_task": {task: counts([r for r in rows if r["task"] == task], "exact_verdict") for task in tasks},
        "disagreements": [
            {
                name: row[name]
                for name in (
                    "task",
                    "warm_start",
                    "k_star",
                    "k",
                    "pass1_change",
                    "exact_pass1_change",
                    "k_star_after",
                    "explanation",
                )
            }
            for row in rows
            if row["verdict"] == "disagree"
        ],
        "exact_disagreements": [
            {
                name: row[name]
                for name in (
                    "task",
                    "warm_start",
                    "k_star",
                    "k",
                    "exact_pass1_change",
                    "exact_k_star_after",
                    "exact_explanation",
                )
            }
            for row in rows
            if row["exact_verdict"] == "disagree"
        ],
    }
