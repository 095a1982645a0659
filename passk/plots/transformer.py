"""Figures of the transformer confirmation (from the dict of `sim.transformer.run_experiment`).

Three figures, each written as PNG and PDF (atomically):

- `transformer_trajectories`: pass@1 (top) and pass@k (bottom) along fine-tuning, one column per
  optimiser/estimator family, one colour per `k`; solid lines for `k >= k*` (conflict predicted),
  dashed for `k < k*`; sampled runs show the mean over seeds with the seeds faint.
- `transformer_proxy`: last-layer agreement against the full agreement of every prompt (hard
  prompts marked), with the fraction of prompts whose sign the proxy gets right.
- `transformer_sign`: the predicted sign of `I_k` (through `A_k` and `cos_k`) against the observed
  change of pass@1 after one small plain step along `grad J_k`, with `k*` marked.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from passk.plots._style import save  # noqa: E402
from sim.records import RECORD_NAMES as R  # noqa: E402

__all__ = ["draw"]

_DPI = 150


def _save(fig, outdir: pathlib.Path, name: str) -> list[pathlib.Path]:
    return save(fig, outdir, name, dpi=_DPI, bbox_inches="tight")


def _families(runs):
    """Group runs into panels: (optimizer, estimator family) -> {k: [runs over seeds]}."""
    panels: dict = {}
    for run in runs:
        family = "exact" if run["estimator"] == "exact" else "sampled"
        panels.setdefault((run["optimizer"], family), {}).setdefault((run["estimator"], run["k"]), []).append(run)
    order = [("sgd", "exact"), ("sgd", "sampled"), ("adam", "exact"), ("adam", "sampled")]
    return [(key, panels[key]) for key in order if key in panels]


def _trajectories(results, outdir):
    k_star = results.get("k_star_predicted")
    panels = _families(results["runs"])
    all_ks = sorted({run["k"] for run in results["runs"]})
    cmap = plt.get_cmap("viridis")
    colour = {k: cmap(i / max(1, len(all_ks) - 1)) for i, k in enumerate(all_ks)}
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.4), squeeze=False, sharex="col")
    for col, ((optimizer, family), groups) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        for (estimator, k), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
            conflict = k_star is not None and k >= k_star
            style = "-" if conflict else "--"
            label = f"{estimator} k={k}" + (" (k>=k*)" if conflict else "")
            for metric, ax in (("pass1", top), ("passk", bottom)):
                curves = np.asarray([run[metric] for run in group])
                steps = np.arange(curves.shape[1])
                if len(group) > 1:
                    for curve in curves:
                        ax.plot(steps, curve, style, color=colour[k], alpha=0.25, lw=0.8)
                ax.plot(
                    steps,
                    curves.mean(axis=0),
                    style,
                    color=colour[k],
                    lw=1.8,
                    label=label if metric == "pass1" else None,
                    marker="o" if estimator == "rloo" else None,
                    markevery=max(1, len(steps) // 8),
                    ms=3,
                )
        n_seeds = max(len(group) for group in groups.values())
        seeds_note = f"\n(mean of {n_seeds} seeds, seeds faint)" if n_seeds > 1 else ""
        top.set_title(f"{optimizer.upper()}, {family} gradient{seeds_note}", fontsize=10)
        top.set_ylabel("pass@1 (exact)")
        bottom.set_ylabel("pass@k of the run's k (exact)")
        bottom.set_xlabel("fine-tuning step")
        top.legend(fontsize=7)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.suptitle(
        f"Transformer fine-tuning from the warm start: predicted k* = {k_star} "
        "(solid: k >= k*, pass@1 should fall while pass@k rises)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, outdir, "transformer_trajectories")


def _proxy(results, outdir):
    ws = results["warm_start"]
    full = np.asarray(ws["agreement"])
    last = np.asarray(ws["agreement_last_layer"])
    hard = np.asarray(ws["is_hard"], bool)
    study = results.get("last_layer_proxy")
    fig, axes = plt.subplots(1, 2 if study else 1, figsize=(11.0 if study else 5.2, 4.6), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(full[~hard], last[~hard], s=12, alpha=0.6, label="easy (rule) prompts")
    ax.scatter(full[hard], last[hard], s=22, marker="x", color="C3", label="hard (exception) prompts")
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(0, color="k", lw=0.6)
    scale = max(np.max(np.abs(full)), 1e-30)
    ax.set_xscale("symlog", linthresh=scale * 1e-3)
    ax.set_yscale("symlog", linthresh=max(np.max(np.abs(last)), 1e-30) * 1e-3)
    ax.set_xlabel("agreement a_i, all parameters (JVP)")
    ax.set_ylabel("agreement, output head only")
    right = results["last_layer_sign_agreement"]
    ax.set_title(
        f"Last-layer proxy: sign right for {right['value']:.3f} [{right['lower']:.3f}, {right['upper']:.3f}] "
        f"of {right['n']} prompts\nk* full = {results.get('k_star_predicted')}, "
        f"k* last layer = {results.get('last_layer_k_star')}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    if study:
        ax = axes[0, 1]
        bins = [b for b in study["errors"]["wrong_by_p"] if b["wrong"] is not None]
        xs = np.arange(len(bins))
        value = np.array([b["wrong"]["value"] for b in bins])
        err = np.array(
            [
                [b["wrong"]["value"] - b["wrong"]["lower"] for b in bins],
                [b["wrong"]["upper"] - b["wrong"]["value"] for b in bins],
            ]
        )
        ax.bar(xs, value, yerr=err, capsize=3, color="C1")
        ax.set_xticks(
            xs, [f"p in [{b['p_range'][0]}, {b['p_range'][1]}]\n{b['wrong']['n']} prompts" for b in bins], fontsize=7
        )
        ax.set_ylabel("share of prompts with the wrong proxy sign (95% Wilson)")
        weights = ", ".join(f"w_{w['k']}: {w['share']:.3f}" for w in study["errors"]["weight_on_wrong"])
        mc = study["monte_carlo"]
        case = study["hidden_conflict_case"]
        ax.set_title(
            f"Wrong signs by success; pass@k weight on them {weights}\n"
            f"Monte Carlo proxy (n={mc['n']}): sign right {mc['sign_right_vs_exact']['value']:.3f}, "
            f"k* {mc['k_star']['estimate']} [{mc['k_star']['lower']}, {mc['k_star']['upper']}]; "
            f"constructed case: k* {case['k_star']}, proxy {case['k_star_proxy']}",
            fontsize=8,
        )
    fig.tight_layout()
    return _save(fig, outdir, "transformer_proxy")


def _sign(results, outdir):
    st = results["sign_test"]
    ks = np.asarray(st["ks"])
    a_k = np.asarray(results[R.mean_agreement])
    cos = np.asarray(results[R.cos])
    d1 = np.asarray(st["delta_pass1"])
    k_star = results.get("k_star_predicted")
    match = np.asarray(st["predicted_sign"]) == np.asarray(st["observed_sign"])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.0, 6.0), sharex=True)
    ax1.plot(ks, cos, "o-", ms=3, label="cos_k (predicted, from I_k)")
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_ylabel("cos(grad J_k, grad J_1)")
    ax1b = ax1.twinx()
    ax1b.plot(ks, a_k, "s:", ms=3, color="C2", label="A_k = I_k / sum mu w_k")
    ax1b.set_ylabel("A_k (sign of I_k)", color="C2")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.bar(ks[match], d1[match], width=0.6, color="C0", label="observed sign = predicted")
    if (~match).any():
        ax2.bar(ks[~match], d1[~match], width=0.6, color="C3", label="observed sign != predicted")
    ax2.axhline(0, color="k", lw=0.6)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("k")
    ax2.set_ylabel(f"change of pass@1 after a step\nof length {st['step']} along grad J_k")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        if k_star is not None:
            ax.axvline(k_star, color="C3", ls="--", lw=1)
        ax.grid(alpha=0.3)
    ax1.set_title(
        f"Predicted vs observed direction of pass@1 (k* = {k_star}; "
        f"{st['agreement_fraction']['value']:.2f} [{st['agreement_fraction']['lower']:.2f}, "
        f"{st['agreement_fraction']['upper']:.2f}] of {st['agreement_fraction']['n']} k agree)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, outdir, "transformer_sign")


def draw(results: dict, outdir: pathlib.Path) -> list[pathlib.Path]:
    """Write the transformer figures (PNG and PDF) into `outdir`; returns the paths written."""
    if not isinstance(results, dict):
        raise TypeError(f"results must be the dict returned by run_experiment; got {type(results).__name__}")
    for name in ("runs", "warm_start", "sign_test", R.mean_agreement, R.cos, "last_layer_sign_agreement"):
        if name not in results:
            raise ValueError(f"results is missing {name!r}: pass the dict returned by run_experiment")
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return _trajectories(results, outdir) + _proxy(results, outdir) + _sign(results, outdir)
