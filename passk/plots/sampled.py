"""`k*` from sampled answers: the unbiased estimate and its interval against the plug-in
(`sim.studies.recovery.toy_recovery`, `sim.studies.transformer_recovery.transformer_recovery`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from passk.plots._style import new_figure, save


def draw(results: dict, outdir: Path) -> list[Path]:
    """Draw `figures/sampled_critical_k.{png,pdf}` from the `sampled` part's results."""
    fig, axes = new_figure(nrows=2, ncols=3, width=16, height=3.9)
    toy, tr = results["toy"], results["transformer"]
    _estimates(
        axes[0, 0],
        [("unbiased", toy, "unbiased", "tab:blue"), ("plug-in", toy, "plugin", "tab:orange")],
        toy["k_star_exact"],
        f"toy at its start ({toy['policy']['n_prompts']} prompts)",
    )
    for col, kind in ((1, "prompts"), (2, "answers")):
        _calibration(axes[0, col], [("toy", toy)], kind, "toy")
    scopes = [
        ("all parameters", tr["all_parameters"], "unbiased", "tab:blue"),
        ("last layer", tr["last_layer"], "unbiased", "tab:green"),
        (f"sketch D={tr['policy']['sketch_dim']}", tr["sketch"], "unbiased", "tab:purple"),
        ("plug-in, all parameters", tr["all_parameters"], "plugin", "tab:orange"),
    ]
    _estimates(
        axes[1, 0],
        scopes,
        tr["all_parameters"]["k_star_exact"],
        f"transformer warm start ({tr['policy']['n_prompts']} prompts)",
    )
    for col, kind in ((1, "prompts"), (2, "answers")):
        _calibration(
            axes[1, col],
            [("all parameters", tr["all_parameters"]), ("last layer", tr["last_layer"]), ("sketch", tr["sketch"])],
            kind,
            "transformer",
        )
    return save(fig, outdir, "sampled_critical_k")


def _quantiles(histogram: dict, top: float):
    """10th, 50th, 90th percentiles of a `{k: count}` histogram, "none" counted as `top`."""
    values = np.concatenate([np.full(c, top if k == "none" else float(k)) for k, c in histogram.items()])
    return np.percentile(values, [10, 50, 90], method="lower")


def _estimates(ax, series, k_star, title):
    offsets = np.linspace(-0.12, 0.12, len(series))
    top = 2 * max(e["n"] for _, study, _, _ in series for e in study["by_n"])
    for (label, study, side, colour), dx in zip(series, offsets):
        ns = np.array([e["n"] for e in study["by_n"]])
        q = np.minimum(np.array([_quantiles(e[side]["histogram"], np.inf) for e in study["by_n"]]), top)
        x = np.log2(ns) + dx
        ax.errorbar(
            x, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], fmt="o", ms=4, capsize=2, color=colour, label=label
        )
    if k_star is not None:
        ax.axhline(k_star, color="0.3", ls="--", lw=1, label=f"exact k* = {k_star}")
    ax.axhline(top, color="0.8", lw=0.8)
    ax.text(np.log2(ns[0]), top, " no k* found (unbiased: none up to n - 1)", fontsize=7, va="bottom", color="0.4")
    ax.set_xticks(np.log2(ns), [str(n) for n in ns])
    ax.set_xlabel("answers per prompt n")
    ax.set_ylabel("estimated k* (median, 10-90%)")
    ax.set_yscale("log", base=2)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


_STDERR = {"prompts": "jackknife over prompts", "answers": "jackknife over answers"}


def _calibration(ax, series, kind, title):
    markers = ["o", "s", "^"]
    for (label, study), marker in zip(series, markers):
        ns = np.array([e["n"] for e in study["by_n"]])
        for key, style in (("coverage", "-"), ("upper_established", ":")):
            rows = [e["unbiased"][kind][key] for e in study["by_n"]]
            v = np.array([r["value"] for r in rows])
            err = [v - np.array([r["lower"] for r in rows]), np.array([r["upper"] for r in rows]) - v]
            name = "covers exact k*" if key == "coverage" else "upper end established"
            ax.errorbar(
                np.log2(ns),
                v,
                yerr=err,
                fmt=marker,
                ls=style,
                ms=4,
                capsize=2,
                label=f"{label}: {name}" if len(series) > 1 else name,
            )
    ax.axhline(0.9, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(np.log2(ns), [str(n) for n in ns])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("answers per prompt n")
    ax.set_ylabel("share of runs (Wilson 95%)")
    ax.set_title(f"{title}: interval for k*, {_STDERR[kind]}, nominal {int(round(100 * study['level']))}%", fontsize=9)
    ax.legend(fontsize=7)
