"""Figure of the `scaling` benchmark: sweep time against prompts and against configurations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from passk.plots._style import new_figure, save

__all__ = ["draw"]


def draw(results: list[dict], outdir) -> list[Path]:
    """Draw `bench_scaling.png/.pdf` from the rows of `passk.benchmarks.run` (needs the `scaling` rows).

    Each panel shows the measured seconds on log-log axes, the power law fitted to all sizes and,
    when the row names `fit_points`, the one fitted to the largest sizes (exponents in the legend),
    and a slope-1 guide through the smallest size. Returns the written paths (none when
    the rows hold no scaling results).
    """
    rows = {r["name"]: r for r in results if r.get("name", "").startswith("scaling[")}
    panels = [(name, rows[name]) for name in ("scaling[prompts]", "scaling[configs]") if name in rows]
    if not panels:
        return []
    fig, axes = new_figure(nrows=1, ncols=len(panels), width=4.5 * len(panels), height=3.6)
    axes = np.atleast_1d(axes)
    labels = {"scaling[prompts]": "prompts P", "scaling[configs]": "configurations"}
    for ax, (name, r) in zip(axes, panels):
        sizes = np.asarray(r["sizes"], float)
        secs = np.asarray(r["seconds"], float)
        slope, icpt = np.polyfit(np.log(sizes), np.log(secs), 1)
        ax.loglog(sizes, secs, "o", label="measured")
        ax.loglog(sizes, np.exp(icpt) * sizes**slope, "-", label=f"fit, all sizes: exponent {slope:.2f}")
        n_fit = int(r.get("fit_points", 0))
        if 2 <= n_fit < sizes.size:
            top, top_secs = sizes[-n_fit:], secs[-n_fit:]
            s_up, i_up = np.polyfit(np.log(top), np.log(top_secs), 1)
            ax.loglog(top, np.exp(i_up) * top**s_up, "--", label=f"fit, largest {n_fit}: exponent {s_up:.2f}")
        ax.loglog(sizes, secs[0] * sizes / sizes[0], ":", color="gray", label="linear")
        # Ticks at the measured sizes, no minor labels (they collide on a short log axis).
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{int(x)}" for x in sizes]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(labels[name])
        ax.set_ylabel(f"seconds ({r.get('steps', '?')} steps)")
        ax.legend(fontsize=8)
    return save(fig, Path(outdir), "bench_scaling")
