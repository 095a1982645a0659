"""The miniature LLM run's confirmation, from the records of its runs (:mod:`sim.lm`).

Per run (a setting, a seed, a trainer and its `k`), :func:`regime_check` checks the statement
"pass@k training at `k >= k*` lowers the exact evaluation pass@1 while raising pass@k; below
`k*` it raises both" step by step against the exact `k*_t`, and :func:`k_star_path` follows `k*`.
:func:`summarise` gathers the runs of each trainer over seeds, against the GRPO control of the
same setting and seed, with 95% t intervals over seeds (:func:`sim.intervals.mean_interval`).
The command (`passk reproduce --parts lm`, :mod:`passk.lm`) runs the runs and draws the figure.
"""

from __future__ import annotations

import itertools

import numpy as np

import theory
from sim.intervals import mean_interval

__all__ = ["k_star_path", "regime_check", "summarise"]


def regime_check(records) -> dict:
    """The statement, step by step: at `k >= k*_t` pass@1 falls and pass@k rises; below, both rise.

    Each step `t` is classed by the exact `k*_t` of the evaluation set at `theta_t` (none: below);
    its outcome is the change of the exact pass@1 and pass@k over the update. A step against the
    statement is explained by its update-aware inner product `<g_1, u>` (SPEC section 5) when that
    has the sign of the observed pass@1 change (the update taken, not `grad J_k`, decided it), and
    is otherwise left to second-order terms, clipping and Adam's state.
    """
    rows = {"above": [], "below": []}
    for now, nxt in itertools.pairwise(records):
        k = now["k_used"]  # None for the k-free trainers (GRPO): every step is "below"
        above = k is not None and now["k_star"] is not None and k >= now["k_star"]
        d1, dk = nxt["j1"] - now["j1"], nxt["jk"] - now["jk"]
        agrees = (d1 < 0 < dk) if above else (d1 > 0 and dk > 0)
        rows["above" if above else "below"].append((agrees, np.sign(now["update_inner"]) == np.sign(d1)))
    out = {}
    for name, cases in rows.items():
        against = [explained for ok, explained in cases if not ok]
        out[name] = {
            "steps": len(cases),
            "agree": sum(ok for ok, _ in cases),
            "against_explained_by_update_inner": int(sum(against)),
            "against": len(against),
        }
    return out


def k_star_path(records) -> dict:
    """Where `k*` of the evaluation set starts, ends and goes over a run's records (None: no conflict)."""
    ks = [r["k_star"] for r in records]
    found = [k for k in ks if k is not None]
    return {
        "start": ks[0],
        "end": ks[-1],
        "min": min(found) if found else None,
        "median": float(np.median(found)) if found else None,
        "share_none": 1 - len(found) / len(ks),
        "first_step_at_or_below_4": next((t for t, k in enumerate(ks) if k is not None and k <= 4), None),
    }


def _count(group, sides, hits: str, total: str) -> str:
    """`"hits/total"` summed over the runs of `group` and the `sides` of their step-by-step check."""
    a = sum(r["check"][g][hits] for r in group for g in sides)
    b = sum(r["check"][g][total] for r in group for g in sides)
    return f"{a}/{b}"


def _interval(values):
    """Mean over seeds with its 95% Student t interval (:func:`sim.intervals.mean_interval`); None when empty."""
    x = [v for v in values if v is not None]
    return mean_interval(np.asarray(x, dtype=float)) if x else None


def _pass_at(p, k) -> float:
    """The evaluation set's pass@k from its per-prompt success (:func:`theory.pass_at_k`, uniform weights)."""
    return float(np.mean(theory.pass_at_k(np.asarray(p, dtype=np.float64), k)))


def summarise(runs) -> list:
    """One row per (setting, trainer, `k`): changes of pass@1 and pass@k over the run, against the
    GRPO control at the same seed (pass@k at the trainer's own `k`), and the step-by-step check."""
    rows = []
    keys = sorted({(r["setting"], r["estimator"], r["k"]) for r in runs}, key=str)
    for setting, estimator, k in keys:
        group = [r for r in runs if (r["setting"], r["estimator"], r["k"]) == (setting, estimator, k)]
        control = {r["seed"]: r for r in runs if r["setting"] == setting and r["estimator"] == "grpo"}

        def share(r, regime):
            c = r["check"][regime]
            return c["agree"] / c["steps"] if c["steps"] else None

        rows.append(
            {
                "setting": setting,
                "estimator": estimator,
                "k": k,
                "seeds": len(group),
                "j1_change": _interval([r["j1"][-1] - r["j1"][0] for r in group]),
                "jk_change": _interval([r["jk"][-1] - r["jk"][0] for r in group]),
                "j1_vs_control": _interval(
                    [r["j1"][-1] - control[r["seed"]]["j1"][-1] for r in group if r["seed"] in control]
                ),
                # pass@k at this trainer's k, against the control's at the same k (from the per-prompt p)
                "jk_vs_control": _interval(
                    [
                        _pass_at(r["p_end"], k) - _pass_at(control[r["seed"]]["p_end"], k)
                        for r in group
                        if r["seed"] in control and r["p_end"] is not None and control[r["seed"]]["p_end"] is not None
                    ]
                ),
                "above_share": _interval([share(r, "above") for r in group]),
                "below_share": _interval([share(r, "below") for r in group]),
                "above_agree": _count(group, ("above",), "agree", "steps"),
                "below_agree": _count(group, ("below",), "agree", "steps"),
                "against_explained": _count(group, ("above", "below"), "against_explained_by_update_inner", "against"),
                "k_star_start": [r["k_star_path"]["start"] for r in group],
                "k_star_end": [r["k_star_path"]["end"] for r in group],
            }
        )
    return rows
