"""Where the first-order picture of confirmation 3 stops: how loose the one-step window is, and
what predicts an Adam step's effect on pass@1 (:func:`sim.studies.one_step.one_step` computes the
per-instance numbers; these functions search along a step and summarise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import quantile_interval, wilson_interval

__all__ = ["LOOSENESS_GRID", "LOOSENESS_BISECTIONS", "first_turn", "window_looseness", "adam_predictors"]

#: Steps tried along `grad J_k`, as multiples of the window's step: 1 to 10^6, 40 per decade.
LOOSENESS_GRID = 10.0 ** (np.arange(241) / 40)
#: Bisection steps refining the first step of :data:`LOOSENESS_GRID` where a change turns.
LOOSENESS_BISECTIONS = 40


def first_turn(turned, grid):
    """The first step of `grid` (increasing) at which `turned(step)` holds, refined by bisection
    against the step before it (0 before the first); `inf` if it never holds on the grid."""
    hit = jax.vmap(turned)(grid)
    i = jnp.argmax(hit)
    lo = jnp.where(i > 0, grid[jnp.maximum(i - 1, 0)], 0.0)

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        t = turned(mid)
        return jnp.where(t, lo, mid), jnp.where(t, mid, hi)

    _, hi = jax.lax.fori_loop(0, LOOSENESS_BISECTIONS, halve, (lo, grid[i]))
    return jnp.where(jnp.any(hit), hi, jnp.inf)


_SAMPLE = 1000  # values kept per distribution for the figure


def _log10_summary(ratio):
    """Median and quartiles of a ratio (with the median's order-statistic interval), on the raw
    scale, plus a sample of `log10` values for the figure; infinite (censored) values count above
    every finite one."""
    ratio = np.asarray(ratio, np.float64)
    finite = np.isfinite(ratio)
    out = {
        "median": quantile_interval(ratio, 0.5),
        "quartiles": [float(np.quantile(ratio, q, method="inverted_cdf")) for q in (0.25, 0.75)],
        "p10": float(np.quantile(ratio, 0.1, method="inverted_cdf")),
        "n": int(ratio.size),
        "censored": int((~finite).sum()),
        "below_one": wilson_interval(int((ratio < 1).sum()), int(ratio.size)),
        "log10_sample": np.log10(ratio[finite][:_SAMPLE]),
    }
    return out


def window_looseness(r: dict, conflict: np.ndarray) -> dict:
    """How loose the one-step window is on the conflict instances (see :func:`sim.studies.one_step.one_step`).

    Args:
      r: the per-instance arrays of :func:`sim.studies.one_step.one_step` (`eta1`, `etak`, `eta_max1`, `eta_maxk`,
        `L1`, `inner`, `gk_sq`, `mean_hess_norm`, `mean_abs_curv`, `curv`).
      conflict: the instances to summarise.

    Returns:
      `{"both", "pass1", "passk"}`: :func:`_log10_summary` of `eta_max / min(eta_1, eta_k)`,
      `eta_max1 / eta_1` and `eta_maxk / eta_k`; `"factors"`: per factor of the pass@1 ratio
      (`constant`, `norm`, `cancellation`, `higher_order`) the median with its interval and a
      `log10` sample, over the instances with positive curvature `c`; `"dominant"`: for each
      factor, the share of those instances in which it is the largest of the four;
      `"negative_curvature"`: the share of instances with `c <= 0`.
    """
    c = np.asarray(conflict, bool)
    g = {name: np.asarray(v, np.float64)[c] for name, v in r.items() if np.ndim(v) == 1}
    if not c.any():
        return {"n": 0}
    eta_w = np.minimum(g["eta1"], g["etak"])
    out = {
        "grid": {"max_multiple": float(LOOSENESS_GRID[-1]), "per_decade": 40, "bisections": LOOSENESS_BISECTIONS},
        "both": _log10_summary(np.minimum(g["eta_max1"], g["eta_maxk"]) / eta_w),
        "pass1": _log10_summary(g["eta_max1"] / g["eta1"]),
        "passk": _log10_summary(g["eta_maxk"] / g["etak"]),
    }
    pos = g["curv"] > 0
    out["negative_curvature"] = wilson_interval(int((~pos).sum()), int(pos.size))
    if pos.any():
        # the zero of the second-order model: the pass@1 window with L_1 replaced by c
        with jax.enable_x64(True):  # the host's float64 numbers stay float64
            eta2 = np.asarray(theory.pass1_decrease_window(g["inner"][pos], g["gk_sq"][pos], g["curv"][pos]))
        factors = {
            "constant": g["L1"][pos] / g["mean_hess_norm"][pos],
            "norm": g["mean_hess_norm"][pos] / g["mean_abs_curv"][pos],
            "cancellation": g["mean_abs_curv"][pos] / g["curv"][pos],
            "higher_order": g["eta_max1"][pos] / eta2,
        }
        logs = np.stack([np.log10(v) for v in factors.values()])  # (4, N); inf where censored
        top = np.argmax(logs, axis=0)
        out["factors"] = {
            name: {"median": quantile_interval(v, 0.5), "log10_sample": np.log10(v[np.isfinite(v)][:_SAMPLE])}
            for name, v in factors.items()
        }
        out["dominant"] = {
            name: wilson_interval(int((top == j).sum()), int(top.size)) for j, name in enumerate(factors)
        }
    return out


def adam_predictors(r: dict, resolved: np.ndarray) -> dict:
    """What predicts that Adam's first step raises `J_1` on a conflict instance.

    (See :func:`sim.studies.one_step.one_step`.)

    Args:
      r: the per-instance arrays of :func:`sim.studies.one_step.one_step` (`d1_adam`, `sign_agreement`,
        `weighted_sign_agreement`, `second_moment_spread`).
      resolved: the conflict instances whose `J_1` change under Adam is resolved in float64.

    Returns:
      `raises`: the share of instances where `J_1` rises; per rule "raises iff the predictor
      exceeds 1/2" (`weighted_sign_agreement`, the first-order rule; `sign_agreement`) its
      accuracy; per predictor the median with its interval among the instances where `J_1`
      rises and where it falls; a sample for the figure.
    """
    m = np.asarray(resolved, bool)
    if not m.any():
        return {"n": 0}
    raises = np.asarray(r["d1_adam"])[m] > 0
    out = {"raises": wilson_interval(int(raises.sum()), int(m.sum())), "rules": {}, "by_outcome": {}}
    for name in ("weighted_sign_agreement", "sign_agreement", "second_moment_spread"):
        v = np.asarray(r[name], np.float64)[m]
        if name != "second_moment_spread":
            out["rules"][name] = wilson_interval(int(((v > 0.5) == raises).sum()), int(m.sum()))
        out["by_outcome"][name] = {
            side: (quantile_interval(v[sel], 0.5) if sel.any() else None)
            for side, sel in (("raises", raises), ("falls", ~raises))
        }
    out["sample"] = {
        "raises": raises[:_SAMPLE],
        **{
            name: np.asarray(r[name], np.float64)[m][:_SAMPLE]
            for name in ("weighted_sign_agreement", "sign_agreement", "second_moment_spread")
        },
    }
    return out
