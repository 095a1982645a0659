"""The figure of one `passk lm` run (from its `run.json` record).

Three panels over training steps: the exact evaluation pass@1 and pass@k (with pass@1 of the
plain and hard evaluation prompts, thin); the exact `k*` of the evaluation set (none: marked at
the top), with the trained `k` as a line; the update-aware inner product `<g_1, u>` of the update
actually taken and the exact `I_k` at the trained `k` (symmetric log scale).
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from passk.plots._style import save

__all__ = ["draw", "draw_diagnosis", "draw_study"]


def _series(records, name):
    return np.array([np.nan if r[name] is None else r[name] for r in records], dtype=float)


def draw(record: dict, outdir: pathlib.Path, *, name: str = "lm_run") -> list[pathlib.Path]:
    """Draw `name.png` and `name.pdf` into `outdir` (atomically); returns their paths."""
    records = record["records"]
    k = record["config"]["k"]
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(3, 1, figsize=(6.0, 8.0), sharex=True)
    ax = axes[0]
    ax.plot(steps, _series(records, "j1"), color="C0", label="pass@1 (eval, exact)")
    ax.plot(steps, _series(records, "jk"), color="C1", label=f"pass@{k} (eval, exact)")
    ax.plot(steps, _series(records, "j1_plain"), color="C0", lw=0.8, ls=":", label="pass@1, plain prompts")
    if record["task"]["hard_share"] > 0:
        ax.plot(steps, _series(records, "j1_hard"), color="C0", lw=0.8, ls="--", label="pass@1, hard prompts")
    ax.set_ylabel("success")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{record['setting']}: {record['config']['estimator']}, k={k}, seed {record['seed']}", fontsize=9)

    ax = axes[1]
    k_star = _series(records, "k_star")
    top = max(2 * k, np.nanmax(k_star) if np.isfinite(k_star).any() else 2 * k)
    ax.plot(steps, k_star, color="C3", marker=".", ms=2, lw=0.8, label="exact k* (eval)")
    none = ~np.isfinite(k_star)
    if none.any():
        ax.plot(steps[none], np.full(none.sum(), top), "x", color="0.5", ms=3, label="no k* (no conflict)")
    ax.axhline(k, color="k", lw=0.8, ls="--", label=f"trained k = {k}")
    ax.set_yscale("log")
    ax.set_ylabel("k*")
    ax.legend(fontsize=7, loc="best")

    ax = axes[2]
    ax.plot(steps, _series(records, "update_inner"), color="C2", lw=0.8, label="<g_1, u> (update taken)")
    ax.plot(steps, _series(records, "inner"), color="C4", lw=0.8, label=f"I_{k} (exact)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_yscale("symlog", linthresh=1e-5)
    ax.set_xlabel("step")
    ax.legend(fontsize=7, loc="best")
    return save(fig, outdir, name, dpi=130, bbox_inches="tight")


def draw_study(results: dict, outdir: pathlib.Path, *, name: str = "lm_confirmation") -> list[pathlib.Path]:
    """The confirmation: per setting (rows), exact eval pass@1, pass@k and `k*` over steps per trainer.

    One colour per trainer (GRPO, the control, in black); the mean over seeds bold, each seed faint.
    """
    runs = results["runs"]
    settings = list(dict.fromkeys(r["setting"] for r in runs))
    trainers = list(dict.fromkeys((r["estimator"], r["k"]) for r in runs))
    colours = {t: ("k" if t[0] == "grpo" else f"C{i}") for i, t in enumerate(trainers)}
    fig, axes = plt.subplots(
        len(settings), 3, figsize=(12.0, 3.6 * len(settings)), squeeze=False, constrained_layout=True
    )
    for row, setting in enumerate(settings):
        for trainer in trainers:
            group = [r for r in runs if r["setting"] == setting and (r["estimator"], r["k"]) == trainer]
            if not group:
                continue
            label = "grpo (control)" if trainer[0] == "grpo" else f"{trainer[0]} k={trainer[1]}"
            for col, field in enumerate(("j1", "jk", "k_star")):
                ax = axes[row, col]
                series = np.array([[np.nan if v is None else v for v in r[field]] for r in group], dtype=float)
                for s in series:
                    ax.plot(s, color=colours[trainer], lw=0.5, alpha=0.3)
                with np.errstate(all="ignore"):
                    mean = np.nanmean(series, axis=0) if field != "k_star" else np.nanmedian(series, axis=0)
                ax.plot(mean, color=colours[trainer], lw=1.4, label=label)
        axes[row, 0].set_ylabel(f"{setting}")
        axes[row, 0].set_title("exact eval pass@1", fontsize=9)
        axes[row, 1].set_title("exact eval pass@k (each trainer's k; grpo at 4)", fontsize=9)
        axes[row, 2].set_title("exact k* of the eval set (median over seeds; gaps: none)", fontsize=9)
        axes[row, 2].set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=7, loc="best")
    return save(fig, outdir, name, dpi=130, bbox_inches="tight")


def draw_diagnosis(diagnosis: dict, outdir: pathlib.Path, *, name: str = "lm_diagnosis") -> list[pathlib.Path]:
    """`passk diagnose` against the exact values, on each sketched run (columns).

    Top: the exact `I_k` of the evaluation set at the trained `k` and the pointwise intervals of
    the section 11 (population) and section 10 (batch) estimates. Bottom: the exact `k*` and the
    `k*` intervals (steps with a reading; an open upper end drawn to the top, dotted).
    """
    examples = diagnosis["examples"]
    if not examples:
        return []
    colours = {"population": "C0", "batch": "C1"}
    fig, axes = plt.subplots(2, len(examples), figsize=(5.5 * len(examples), 6.4), squeeze=False)
    for col, ex in enumerate(examples):
        k = ex["k"]
        ax, bx = axes[0, col], axes[1, col]
        for section, checks in ex["sections"].items():
            steps = np.array([c["step"] for c in checks], float)
            lo = np.array([np.nan if c["lower"] is None else c["lower"] for c in checks])
            hi = np.array([np.nan if c["upper"] is None else c["upper"] for c in checks])
            ax.fill_between(steps, lo, hi, color=colours[section], alpha=0.25, lw=0, label=f"{section} interval")
            for c in checks:
                crit = c["k_star"]
                if c["k_star_covered"] is None or crit is None:
                    continue
                bottom = crit["lower"] if crit["lower"] is not None else crit["k_max"] + 1
                top = crit["upper"] if crit["upper"] is not None else crit["k_max"] + 1
                shift = -0.2 if section == "population" else 0.2
                bx.plot(
                    [c["step"] + shift] * 2, [bottom, top], ls="-" if crit["upper"] else ":", color=colours[section]
                )
            bx.plot([], [], color=colours[section], label=f"{section} k* interval")
        checks = next(iter(ex["sections"].values()))
        steps = np.array([c["step"] for c in checks], float)
        ax.plot(steps, [c["exact_inner"] for c in checks], color="k", lw=1, label=f"exact I_{k} (eval set)")
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{ex['setting']}: {ex['estimator']} k={k}, seed {ex['seed']}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        exact = np.array([np.nan if c["exact_k_star"] is None else c["exact_k_star"] for c in checks], float)
        bx.plot(steps, exact, "k.", ms=2, label="exact k* (eval set; none: absent)")
        bx.axhline(k, color="k", ls="--", lw=0.8, label=f"trained k = {k}")
        bx.set_yscale("log")
        bx.set_xlabel("step")
        bx.set_ylabel("k*")
        bx.legend(fontsize=7, loc="best")
    return save(fig, outdir, name, dpi=130, bbox_inches="tight")
