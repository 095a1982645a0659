"""Theory figures: the pass@k weight, how normalised weights concentrate, and the two-group
conflict (`I_k`, `cos_k` against `k` with the closed-form `k*`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from passk.plots._style import new_figure, save


def draw(results: dict, outdir: Path) -> list[Path]:
    """Draw every theory figure from `results` (see `passk.reproduce.theory_results`)."""
    return [
        *_weights(results["weights"], outdir),
        *_concentration(results["concentration"], outdir),
        *_two_group(results["two_group"], outdir),
    ]


def _weights(res, outdir):
    fig, ax = new_figure()
    p = np.asarray(res["p"])
    for k, w in zip(res["k"], res["w"]):
        ax.plot(p, w, label=f"k = {k}")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, max(res["k"]) * 1.5)
    ax.set_xlabel("per-prompt success p")
    ax.set_ylabel(r"prompt weight $w_k(p) = k(1-p)^{k-1}$")
    ax.set_title("Pass@k reweights pass@1 towards hard prompts")
    ax.legend(fontsize=8)
    return save(fig, outdir, "theory_weights")


def _concentration(res, outdir):
    fig, ax = new_figure()
    k = np.asarray(res["k"])
    omega = np.asarray(res["omega"])  # (K, P), prompts sorted by p
    p = np.asarray(res["p"])
    for i in range(omega.shape[1]):
        ax.plot(k, omega[:, i], label=f"p = {p[i]:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel(r"normalised weight $\omega_i$")
    ax.set_title("Normalised weights concentrate on the hardest prompts")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, outdir, "theory_concentration")


def _two_group(res, outdir):
    fig, (ax1, ax2) = new_figure(ncols=2, width=10)
    k = np.asarray(res["k"])
    ax1.axhline(0, color="0.6", lw=0.8)
    ax1.plot(k, res["weighted_mean_agreement"], marker=".", label=r"$A_k = I_k / \sum \mu w_k$")
    ax1.plot(k, res["inner_product"], marker=".", label=r"$I_k$")
    ax1.set_xscale("log")
    ax1.set_xlabel("k")
    ax1.set_ylabel("inner product with the pass@1 gradient")
    ax2.axhline(0, color="0.6", lw=0.8)
    ax2.plot(k, res["cosine"], marker=".", color="C2")
    ax2.set_xscale("log")
    ax2.set_xlabel("k")
    ax2.set_ylabel(r"$\cos_k$")
    for ax in (ax1, ax2):
        ax.axvline(
            res["k_star_closed_form"], color="C3", ls="--", label=f"closed-form k* = {res['k_star_closed_form']}"
        )
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"Two groups: hard share q={res['q']}, p_h={res['p_hard']}, p_e={res['p_easy']}: "
        "the pass@k gradient rotates past 90 degrees at k*"
    )
    return save(fig, outdir, "theory_two_group")
