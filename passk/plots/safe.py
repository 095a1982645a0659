"""Figure of the conflict-safe updates on the transformer (from `sim.studies.transformer_safe.safe_update_study`).

`safe_updates` (PNG and PDF, atomically): one column per (optimiser, exact/sampled) panel.
Top row: the pass@1 / pass@k trade-off, final pass@k against final pass@1 for every rule (one
marker per rule; filled for `k` above `k*`, open below), with 95% intervals over seeds as error
bars and the warm start's pass@1 as a dotted line. Bottom row: the mean pass@1 curve of every rule
at the `k` above `k*` (the largest `k` of the study).
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from passk.plots._style import save  # noqa: E402

__all__ = ["draw"]

_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h"]


def draw(results: dict, outdir: pathlib.Path) -> list[pathlib.Path]:
    """Draw `safe_updates.{png,pdf}` into `outdir`; returns the paths."""
    groups = results["groups"]
    panels = [
        (o, e)
        for o in ("sgd", "adam")
        for e in ("exact", "sampled")
        if any(g["optimizer"] == o and (g["estimator"] == "exact") == (e == "exact") for g in groups)
    ]
    rules = results["rules"]
    marker = {r: _MARKERS[i % len(_MARKERS)] for i, r in enumerate(rules)}
    colour = {r: plt.get_cmap("tab10")(i % 10) for i, r in enumerate(rules)}
    k_high = results["k_roles"]["high"]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.3 * len(panels), 7.6), squeeze=False)
    for col, (optimizer, family) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        mine = [g for g in groups if g["optimizer"] == optimizer and (g["estimator"] == "exact") == (family == "exact")]
        for g in mine:
            x, y = g["final_pass1"], g["final_passk"]
            high = g["k"] == k_high
            top.errorbar(
                x["value"],
                y["value"],
                xerr=[[x["value"] - x["lower"]], [x["upper"] - x["value"]]],
                yerr=[[y["value"] - y["lower"]], [y["upper"] - y["value"]]],
                marker=marker[g["label"]],
                color=colour[g["label"]],
                mfc=colour[g["label"]] if high else "none",
                ms=7,
                capsize=2,
                lw=1,
                ls="none",
                label=g["label"] if high else None,
            )
            if high:
                curve = np.asarray(g["pass1_curve"])
                bottom.plot(
                    np.arange(curve.size),
                    curve,
                    color=colour[g["label"]],
                    marker=marker[g["label"]],
                    ms=3,
                    lw=1.2,
                    label=g["label"],
                )
        warm = results.get("pass1_warm_start")
        for ax in (top, bottom):
            if warm is not None:
                (ax.axvline if ax is top else ax.axhline)(warm, color="0.5", ls=":", lw=1)
        estimator = mine[0]["estimator"] if mine else family
        seeds = max(len(g["seeds"]) for g in mine) if mine else 0
        top.set_title(f"{optimizer}, {estimator} ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=10)
        top.set_xlabel("final pass@1")
        top.set_ylabel("final pass@k (filled: k above k*, open: below)")
        bottom.set_xlabel("step")
        bottom.set_ylabel(f"pass@1 (k = {k_high})")
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(
        f"Conflict-safe updates on the transformer: k* = {results['k_star']}, "
        f"k = {results['k_roles']['low']} / {k_high}, L_1 estimate {results['smoothness']['smoothness']:.3g}",
        fontsize=11,
    )
    fig.tight_layout()
    return save(fig, outdir, "safe_updates", dpi=150, bbox_inches="tight")
