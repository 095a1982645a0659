"""Figure of the transformer's k sweep (from `sim.studies.transformer_ksweep.ksweep_study`).

`transformer_k_sweep` (PNG and PDF, atomically): one panel per task family (rows) and warm start
(columns). In each, the change of pass@1 after `T` plain SGD steps of pass@k ascent against `k`:
the sampled PKPO runs' mean over seeds with its 95% t interval (blue where the observed sign agrees
with the sign of `I_k` predicted at the start, red where it disagrees, grey where the interval
contains 0), the exact-gradient run as a black line (a red cross where its sign disagrees), `k*`
as a dashed line with the region `k >= k*` (where pass@1 is predicted to fall) shaded. The
vertical axis is symmetric-logarithmic (linear within a thousandth of the panel's largest change),
so that warm starts whose changes differ by orders of magnitude keep their signs readable.
"""

from __future__ import annotations

import pathlib

import matplotlib
import matplotlib.lines
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from passk.plots._style import save  # noqa: E402

__all__ = ["draw"]

_COLOURS = {"agree": "C0", "disagree": "C3", "inconclusive": "0.6"}


def _panel(ax, rows, warm):
    ks = np.asarray([r["k"] for r in rows])
    mean = np.asarray([r["pass1_change"]["value"] for r in rows])
    lower = np.asarray([r["pass1_change"]["lower"] for r in rows])
    upper = np.asarray([r["pass1_change"]["upper"] for r in rows])
    exact = np.asarray([r["exact_pass1_change"] for r in rows])
    k_star = warm["k_star"]
    if k_star is not None and k_star <= ks.max():
        ax.axvspan(k_star - 0.5, ks.max() + 0.5, color="C3", alpha=0.07, lw=0)
        ax.axvline(k_star - 0.5, color="C3", ls="--", lw=1)
    ax.axhline(0, color="k", lw=0.6)
    ax.plot(ks, exact, "-", color="k", lw=1, marker=".", ms=3)
    off = np.asarray([r["exact_verdict"] == "disagree" for r in rows])
    if off.any():
        ax.plot(ks[off], exact[off], "x", color="C3", ms=6, mew=1.5)
    for verdict, colour in _COLOURS.items():
        sel = np.asarray([r["verdict"] == verdict for r in rows])
        if sel.any():
            ax.errorbar(
                ks[sel],
                mean[sel],
                yerr=[mean[sel] - lower[sel], upper[sel] - mean[sel]],
                fmt="o",
                ms=4,
                color=colour,
                capsize=2,
                lw=1,
            )
    scale = max(np.max(np.abs(np.concatenate([lower, upper, exact]))), 1e-12)
    linthresh = scale * 1e-3
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.4)
    # decades outside the linear band, and 0: ticks inside the band would overlap
    decades = 10.0 ** np.arange(np.ceil(np.log10(linthresh)) + 1, np.ceil(np.log10(scale)) + 1)
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(np.concatenate([-decades[::-1], [0.0], decades])))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlim(0.5, ks.max() + 0.5)
    ax.grid(alpha=0.3)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in _COLOURS}
    ax.set_title(
        f"{warm['task']}, {warm['warm_start']}: k* = {k_star}, pass@1 {warm['pass1']:.3f}\n"
        f"agree {counts['agree']}, disagree {counts['disagree']}, inconclusive {counts['inconclusive']}",
        fontsize=8,
    )


def draw(results: dict, outdir) -> list[pathlib.Path]:
    """Write `transformer_k_sweep.{png,pdf}` into `outdir`; returns the paths written."""
    if not isinstance(results, dict):
        raise TypeError(f"results must be the dict returned by ksweep_study; got {type(results).__name__}")
    for name in ("k_sweep", "warm_starts", "settings"):
        if name not in results:
            raise ValueError(f"results is missing {name!r}: pass the dict returned by ksweep_study")
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    warm = results["warm_starts"]
    tasks = list(dict.fromkeys(w["task"] for w in warm))
    columns = max(sum(w["task"] == t for w in warm) for t in tasks)
    fig, axes = plt.subplots(len(tasks), columns, figsize=(4.0 * columns, 3.3 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        mine = [w for w in warm if w["task"] == task]
        for col in range(columns):
            ax = axes[row, col]
            if col >= len(mine):
                ax.axis("off")
                continue
            rows = [r for r in results["k_sweep"] if r["task"] == task and r["warm_start"] == mine[col]["warm_start"]]
            _panel(ax, rows, mine[col])
            if row == len(tasks) - 1:
                ax.set_xlabel("k of pass@k ascent")
            if col == 0:
                ax.set_ylabel(f"pass@1 change after {results['settings']['steps']} steps")
    handles = [
        matplotlib.lines.Line2D([], [], color="k", marker=".", lw=1, label="exact gradient"),
        matplotlib.lines.Line2D([], [], color="C3", marker="x", ls="none", mew=1.5, label="exact, disagrees"),
    ]
    handles += [
        matplotlib.lines.Line2D([], [], color=c, marker="o", ls="none", label=f"PKPO mean, {v}")
        for v, c in _COLOURS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    settings = results["settings"]
    fig.suptitle(
        f"Plain SGD through the crossing: PKPO ({settings['estimator']}, n = {results.get('n_samples')} answers, "
        f"{settings['seeds']} seeds, 95% t intervals) and the exact gradient; "
        "shaded: k >= k* (pass@1 predicted to fall)",
        fontsize=9,
    )
    fig.tight_layout()
    return save(fig, outdir, "transformer_k_sweep", dpi=150, bbox_inches="tight")
