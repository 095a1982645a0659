"""The forecast's reliability diagram (`passk reproduce --parts forecast`).

One panel per horizon: per bin of forecast probability, the share of judged steps whose exact
pass@1 was lower `T` steps later (with its Wilson interval) against the mean forecast in the bin,
for the logistic forecast and the naive `Phi(-z)`; the diagonal is perfect calibration, the
horizontal line the fit runs' base rate. The legend gives each forecast's Brier skill and ECE with
their bootstrap intervals over runs.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from passk.plots._style import save

__all__ = ["draw"]

_SHOWN = (("logistic", "C2", "o", "logistic"), ("naive", "C0", "s", "naive Phi(-z)"))


def draw(results: dict, outdir: pathlib.Path, *, name: str = "forecast_reliability") -> list[pathlib.Path]:
    """Draw `name.png` and `name.pdf` into `outdir` (atomically); returns their paths."""
    horizons = results["horizons"]
    fig, axes = plt.subplots(1, len(horizons), figsize=(4.4 * len(horizons), 5.0), squeeze=False)
    for ax, (horizon, h) in zip(axes[0], horizons.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect calibration")
        ax.axhline(h["base_rate"], color="0.3", lw=0.8, ls=":", label=f"fit base rate {h['base_rate']:.2f}")
        for shift, (forecast, colour, marker, label) in zip((-0.006, 0.006), _SHOWN):
            s = h["scores"][forecast]
            bins = s["reliability"]
            x = [b["mean_forecast"] + shift for b in bins]
            y = [b["observed"]["value"] for b in bins]
            lo = [b["observed"]["value"] - b["observed"]["lower"] for b in bins]
            hi = [b["observed"]["upper"] - b["observed"]["value"] for b in bins]
            sk, ece = s["skill"], s["ece"]
            ax.errorbar(
                x,
                y,
                yerr=[lo, hi],
                fmt=marker,
                ms=4,
                color=colour,
                capsize=2,
                lw=0.9,
                label=f"{label}: skill {sk['value']:.2f} [{sk['lower']:.2f}, {sk['upper']:.2f}], "
                f"ECE {ece['value']:.3f} [{ece['lower']:.3f}, {ece['upper']:.3f}]",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("forecast probability (bin mean)")
        ax.set_title(f"T = {horizon}: {h['n']} steps of {h['runs']} judging runs, {h['events']} events", fontsize=9)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    axes[0, 0].set_ylabel("observed share, pass@1 lower T steps later (Wilson 95%)")
    fig.tight_layout()
    return save(fig, pathlib.Path(outdir), name, bbox_inches="tight")
