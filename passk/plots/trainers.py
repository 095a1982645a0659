"""Which trainer conflicts where (`sim.studies.trainer_map`): one panel per trainer over the toy's regimes,
and every trainer at the transformer's warm start."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from passk.plots._style import new_figure, save

#: Panels per row of the trainer figure, and the width of one panel (inches).
MAX_COLUMNS = 4
PANEL_WIDTH = 4.25


def panel_grid(n_panels: int) -> tuple[int, int]:
    """`(rows, columns)` of a grid holding `n_panels >= 1` panels, at most :data:`MAX_COLUMNS` a row."""
    if isinstance(n_panels, bool) or not isinstance(n_panels, int) or n_panels < 1:
        raise ValueError(f"n_panels must be an integer >= 1; got {n_panels!r}")
    ncols = min(MAX_COLUMNS, n_panels)
    return math.ceil(n_panels / ncols), ncols


def draw(results: dict, outdir: Path) -> list[Path]:
    """Draw `figures/trainer_map.{png,pdf}` from the `trainers` part's results: one panel per
    trainer of the results (as many as `theory.ESTIMATOR_TABLE` had), then the warm-start panel."""
    grid = results["grid"]
    methods = list(results["trainer_map"])
    if not methods:
        raise ValueError("the trainers part's results hold no trainer (results['trainer_map'] is empty)")
    n_show = grid["shown_n"]
    nrows, ncols = panel_grid(len(methods) + 1)
    fig, axes = new_figure(nrows=nrows, ncols=ncols, width=PANEL_WIDTH * ncols, height=4.4)
    axes = np.asarray(axes).reshape(nrows, ncols)
    # the grid values are cell centres; the image spans half a step beyond them
    sep, ph = np.asarray(grid["separation"]), np.asarray(grid["p_hard"])
    ds = (sep[-1] - sep[0]) / max(len(sep) - 1, 1)
    dp = (ph[-1] - ph[0]) / max(len(ph) - 1, 1)
    extent = [sep[0] - ds / 2, sep[-1] + ds / 2, ph[0] - dp / 2, ph[-1] + dp / 2]
    for ax, method in zip(axes.ravel(), methods):
        cells = results["cells"][method]
        prob = np.asarray(cells["conflict_probability"], dtype=float)
        image = ax.imshow(prob, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=1, cmap="Reds")
        crit = cells.get("median_critical_k")
        if crit is not None:
            crit = np.asarray([[np.nan if v is None else v for v in row] for row in crit], dtype=float)
            # cell centres of the image (imshow spreads the cells evenly over the extent)
            ys = extent[2] + (np.arange(crit.shape[0]) + 0.5) * (extent[3] - extent[2]) / crit.shape[0]
            xs = extent[0] + (np.arange(crit.shape[1]) + 0.5) * (extent[1] - extent[0]) / crit.shape[1]
            for i, y in enumerate(ys):
                for j, x in enumerate(xs):
                    if np.isfinite(crit[i, j]):
                        ax.text(x, y, f"{crit[i, j]:.0f}", ha="center", va="center", fontsize=6)
        row = next(r for r in results["trainer_map"][method] if r["n"] == n_show)
        share = row["conflict_at_some_k"] if row["uses_k"] else row["conflict"]
        what = f"some k <= {row['max_k']}" if row["uses_k"] else "no k"
        ax.set_title(
            f"{method}, n={n_show}, {what}\nconflict in {share['value']:.0%} "
            f"[{share['lower']:.0%}, {share['upper']:.0%}] of {share['n']}",
            fontsize=8,
        )
        ax.set_xlabel("separation")
        ax.set_ylabel("share of hard prompts")
    # beside the last trainer panel of the first row
    fig.colorbar(image, ax=axes[0, min(len(methods), ncols) - 1], label="P(conflict) over seeds")
    _warm_start(axes.ravel()[len(methods)], results.get("transformer_warm_start"), methods)
    for ax in axes.ravel()[len(methods) + 1 :]:
        ax.set_visible(False)
    fig.suptitle(
        "Each trainer's own update against pass@1 at the toy start: colour = share of seeds in "
        "conflict (at some allowed k); numbers = its median critical k",
        fontsize=10,
    )
    return save(fig, outdir, "trainer_map", bbox_inches="tight")


def _warm_start(ax, warm, methods):
    """Every trainer at the transformer's warm start: its critical k (or conflict) per group size."""
    if not warm:
        ax.text(0.5, 0.5, "transformer part not run", ha="center", va="center")
        ax.set_axis_off()
        return
    sizes = [row["n"] for row in warm[methods[0]]]
    status = np.zeros((len(methods), len(sizes)))
    for i, method in enumerate(methods):
        for j, row in enumerate(warm[method]):
            conflict = row["conflict"] if "conflict" in row else row["critical_k"] is not None
            status[i, j] = float(conflict)
            text = (
                ("yes" if conflict else "no")
                if "conflict" in row
                else (f"k*={row['critical_k']}" if row["critical_k"] is not None else "none")
            )
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.imshow(status, cmap="Reds", vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(len(sizes)), [f"n={n}" for n in sizes])
    ax.set_yticks(range(len(methods)), methods, fontsize=7)
    ax.set_title("transformer warm start: conflict / critical k", fontsize=8)
