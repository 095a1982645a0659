"""Figures of the simulated bandits, drawn from the numbers of :func:`sim.studies.confirmations.run_all`.

`draw(results, outdir)` writes one PNG and one PDF per figure (atomically, via
`passk.plots._style.save`) for every section present in `results`, and returns the paths:

- `bandit_toy`: agreement against `p` per prompt at the toy start, and `cos_k` against `k` with
  `k*` marked;
- `bandit_critical_k`: predicted `k*` (theory, from `p` and agreements) against the first `k`
  where the autodiff inner product `<grad J_k, grad J_1>` is negative; sample curves `I_k/|I_1|`;
- `bandit_phase`: the probability of conflict over `p_hard x separation` (share of seeds), `k*`
  where every seed conflicts, and the share of negatively interfering prompts;
- `bandit_one_step`: change of `J_1` and `J_k` after one plain step inside the windows and one
  Adam step, and how often each update lowers pass@1;
- `bandit_first_order`: how far past the window pass@1 keeps falling (and pass@k rising), which
  factor of the window accounts for it, and what predicts that Adam's first step raises pass@1;
- `bandit_dynamics`: `J_1`, `J_k` and `k*` along training, exact and sampled, plain and Adam,
  and the conflict-safe rules, with 95% intervals over seeds;
- `bandit_estimators`: variance of each sampled estimator, and the implied prompt weights.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from passk.plots._style import save  # noqa: E402
from sim.train import RECORD_NAMES as R  # noqa: E402

__all__ = ["draw"]


def _arr(x):
    """JSON lists (None for missing) to a float array with NaN."""
    return (
        np.array([[np.nan if v is None else v for v in row] for row in x], dtype=float)
        if x and isinstance(x[0], list)
        else np.array([np.nan if v is None else v for v in x], dtype=float)
    )


def _save(fig, outdir: pathlib.Path, name: str) -> list[pathlib.Path]:
    return save(fig, outdir, name, dpi=150, bbox_inches="tight")


def _toy(res):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    pr = res["prompts"]
    p = np.asarray(pr["p"], float)
    a = np.asarray(pr["agreement"], float)
    hard = np.asarray(pr["hard"], bool)
    ax1.scatter(p[~hard], a[~hard], s=10, label="easy prompts", color="tab:blue")
    ax1.scatter(p[hard], a[hard], s=10, label="hard prompts", color="tab:red")
    ax1.axhline(0, color="k", lw=0.7)
    ax1.set_xlabel("per-prompt success p")
    ax1.set_ylabel("agreement a = <grad p, grad J_1>")
    ax1.set_title("Agreement against success at the toy start")
    ax1.legend()
    cur = res["curves"]
    ks = np.asarray(cur["ks"], float)
    ax2.plot(ks, _arr(cur["cos"]), marker="o", ms=3)
    ax2.axhline(0, color="k", lw=0.7)
    if res.get("k_star") is not None:
        ax2.axvline(res["k_star"], color="tab:red", ls="--", label=f"k* = {res['k_star']}")
        ax2.legend()
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("k")
    ax2.set_ylabel("cos(grad J_k, grad J_1)")
    reg = res["regime"]
    ax2.set_title(f"p_hard={reg['p_hard']:g}, separation={reg['separation']:g}, A={reg['n_actions']}")
    return fig


def _critical(res):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    pred = res["k_star_predicted"]
    auto = res["k_star_autodiff"]
    kg = res["k_grid"]
    none_at = kg * 1.5
    x = np.array([none_at if v is None else v for v in pred], float)
    y = np.array([none_at if v is None else v for v in auto], float)
    ax1.scatter(x, y, s=14, alpha=0.7)
    lo, hi = 1, none_at * 1.2
    ax1.plot([lo, hi], [lo, hi], color="k", lw=0.7)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log", base=2)
    ax1.set_xlabel("k* predicted (theory.critical_k from p and agreements)")
    ax1.set_ylabel("first k with autodiff <grad J_k, grad J_1> < 0")
    ax1.set_title(f"{res['n_match']}/{res['n_regimes']} regimes agree (none plotted at {none_at:g})")
    cur = res["curves"]
    ks = np.asarray(cur["ks"], float)
    for i, row in zip(cur["regimes"], cur["inner_over_inner1"]):
        vals = _arr(row)
        ax2.plot(ks, np.sign(vals) * np.log1p(np.abs(vals)), label=f"regime {i}: k*={pred[i]}")
    ax2.axhline(0, color="k", lw=0.7)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("k")
    ax2.set_ylabel("sign(I) log(1 + |I_k / I_1|)")
    ax2.set_title("Autodiff inner products crossing zero")
    ax2.legend(fontsize=7)
    return fig


def _phase(res):
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(16, 4.2))
    ph = np.asarray(res["p_hard"], float)
    sep = np.asarray(res["separation"], float)
    extent = [sep[0], sep[-1], ph[0], ph[-1]]
    area = res["area_in_conflict"]
    im0 = ax0.imshow(
        _arr(res["conflict_fraction"]), origin="lower", aspect="auto", extent=extent, cmap="cividis", vmin=0, vmax=1
    )
    fig.colorbar(im0, ax=ax0).set_label(f"share of {res['n_seeds']} seeds with a conflict")
    ax0.set_title(f"P(conflict): area {area['value']:.3f} [{area['lower']:.3f}, {area['upper']:.3f}]")
    im = ax1.imshow(np.log2(_arr(res["k_star_agreed"])), origin="lower", aspect="auto", extent=extent, cmap="viridis")
    fig.colorbar(im, ax=ax1).set_label("log2 median k* (blank: not every seed conflicts)")
    ax1.set_title(f"Critical k where all seeds conflict ({len(ph)} x {len(sep)} regimes)")
    share = _arr(res["share_negative_agreement"])
    im2 = ax2.imshow(share, origin="lower", aspect="auto", extent=extent, cmap="magma")
    fig.colorbar(im2, ax=ax2).set_label("share of prompts with a < 0")
    ax2.set_title("Negatively interfering prompts")
    for ax in (ax0, ax1, ax2):
        ax.set_xlabel("separation")
        ax.set_ylabel("p_hard")
    fig.tight_layout()
    return fig


def _symlog_scatter(ax, x, y, label, color):
    ax.scatter(x, y, s=8, alpha=0.6, label=label, color=color)


def _one_step(res):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    sc = res["scatter"]
    _symlog_scatter(ax1, _arr(sc["d1_sgd"]), _arr(sc["dk_sgd"]), "plain step (inside the windows)", "tab:blue")
    _symlog_scatter(ax1, _arr(sc["d1_adam"]), _arr(sc["dk_adam"]), "Adam first step (same norm)", "tab:orange")
    ax1.axvline(0, color="k", lw=0.7)
    ax1.axhline(0, color="k", lw=0.7)
    ax1.set_xscale("symlog", linthresh=1e-8)
    ax1.set_yscale("symlog", linthresh=1e-8)
    ax1.set_xlabel("change of J_1")
    ax1.set_ylabel("change of J_k")
    ax1.set_title(f"{res['n_conflict']} random conflict instances, k = k*")
    ax1.legend(fontsize=8)
    names = ["plain", "Adam", "projection", "step-safe projection"]
    keys = ["sgd", "adam", "project", "project_safe"]
    xs = np.arange(len(names))
    for shift, field, label in ((-0.2, "share_pass1_down", "pass@1 falls"), (0.2, "share_passk_up", "pass@k rises")):
        shares = [res[k][field] or {"value": 0.0, "lower": 0.0, "upper": 0.0} for k in keys]
        value = np.array([s["value"] for s in shares])
        err = np.array([[s["value"] - s["lower"] for s in shares], [s["upper"] - s["value"] for s in shares]])
        ax2.bar(xs + shift, value, width=0.4, yerr=err, capsize=3, label=label)
    ax2.set_xticks(xs, names, rotation=15)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of conflict instances")
    ax2.set_title("One step of each update")
    ax2.legend(fontsize=8)
    return fig


def _band(ax, record, row, label, color=None, ls="-"):
    """A mean curve over seeds with its 95% t interval as a band (none for one seed)."""
    m = _arr(record["mean"][row])
    lo, hi = _arr(record["lower"][row]), _arr(record["upper"][row])
    t = np.arange(m.size)
    line = ax.plot(t, m, label=label, color=color, ls=ls)[0]
    if np.nanmax(hi - lo) > 0:
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.2)


def _dynamics(res):
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ks = res["ks"]
    runs = res["runs"]
    ex = runs["exact/sgd"]["passk"]
    labels = [f"k={k}" + (" (pass@1)" if k == 1 else (" < k*" if k < res["k_star0"] else " > k*")) for k in ks]
    ax = axes[0, 0]
    for i, lab in enumerate(labels):
        _band(ax, ex[R.j1], i, lab)
    ax.set_title(f"J_1 under exact pass@k ascent (k* = {res['k_star0']} at start)")
    ax.set_xlabel("step")
    ax.set_ylabel("J_1")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for i, lab in enumerate(labels):
        _band(ax, ex[R.jk], i, lab)
    ax.set_title("J_k (its own k) under exact pass@k ascent")
    ax.set_xlabel("step")
    ax.set_ylabel("J_k")
    ax = axes[0, 2]
    for i, lab in enumerate(labels):
        ax.plot(_arr(ex["k_star_median"][i]), label=lab)
    ax.set_yscale("log", base=2)
    ax.set_title("k* along each trajectory")
    ax.set_xlabel("step")
    ax.set_ylabel("k*")
    ax = axes[1, 0]
    hi = len(ks) - 1
    for name, run in runs.items():
        if name.startswith("exact/sgd"):
            continue
        r = run["passk"]
        _band(ax, r[R.j1], hi, f"{name} (S={r['n_seeds']})")
    _band(ax, ex[R.j1], hi, "exact/sgd", color="k", ls="--")
    ax.set_title(f"J_1 under pass@k ascent at k={ks[hi]}: sampled, Adam")
    ax.set_xlabel("step")
    ax.set_ylabel("J_1 (mean, 95% t interval over seeds)")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for rule, r in runs["exact/sgd"].items():
        ax.plot(_arr(r[R.j1]["mean"][hi]), label=f"{rule}: J_1")
        ax.plot(_arr(r[R.jk]["mean"][hi]), ls=":", color=ax.lines[-1].get_color())
    ax.set_title(f"Conflict-safe rules at k={ks[hi]} (solid J_1, dotted J_k)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    for name in ("exact/sgd", "exact/adam"):
        r = runs[name]["passk"]
        ax.plot(_arr(r[R.update_inner]["mean"][hi]), label=name)
    ax.axhline(0, color="k", lw=0.7)
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_title(f"<grad J_1, u> of the update taken, k={ks[hi]}")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _estimators(res):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = res["estimators"]
    names = list(rows)
    tot = [rows[n]["relative_total_variance"] for n in names]
    along = [rows[n]["relative_variance_along_grad_jk"] or np.nan for n in names]
    xs = np.arange(len(names))
    ax1.bar(xs - 0.2, tot, width=0.4, label="total variance / |E u|^2")
    ax1.bar(xs + 0.2, along, width=0.4, label="variance along grad J_k / (E u . e)^2")
    ax1.set_yscale("log")
    ax1.set_xticks(xs, names, rotation=30)
    ax1.set_title(f"Per-update variance (k={res['k']}, n={res['n_samples']}, {res['n_draws']} draws)")
    ax1.legend(fontsize=7)
    for i, n in enumerate(names):
        ax1.annotate(f"err {rows[n]['relative_error']:.2%}", (xs[i], tot[i]), fontsize=6, ha="center", va="bottom")
    iw = res["implied_weights"]
    p = np.asarray(iw["p"], float)
    for n, cur in iw["curves"].items():
        line = ax2.plot(p, _arr(cur["finite_n"]), label=f"{n}")[0]
        ax2.plot(p, _arr(cur["limit"]), ls=":", color=line.get_color())
    ax2.set_yscale("log")
    ax2.set_xlabel("p")
    ax2.set_ylabel("implied prompt weight v(p)")
    ax2.set_title(f"Implied weights at n={res['n_samples']} (solid) and n -> inf (dotted)")
    ax2.legend(fontsize=7)
    return fig


def _interval_text(iv, digits=1):
    return f"{iv['value']:.{digits}f} [{iv['lower']:.{digits}f}, {iv['upper']:.{digits}f}]"


def _first_order(res):
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    loose = res["window_looseness"]
    bins = np.linspace(-0.5, 6.0, 53)
    for key, label in (
        ("both", "both (vs min window)"),
        ("pass1", "pass@1 falls (vs eta_1)"),
        ("passk", "pass@k rises (vs eta_k)"),
    ):
        entry = loose[key]
        med = entry["median"]
        ax1.hist(
            _arr(entry["log10_sample"]),
            bins=bins,
            histtype="step",
            lw=1.5,
            label=f"{label}: median {med['value']:.0f} [{med['lower']:.0f}, {med['upper']:.0f}], "
            f"{entry['censored']} past 1e6",
        )
    ax1.set_xlabel("log10 (largest step that still works / window's step)")
    ax1.set_ylabel(f"conflict instances (of {loose['both']['n']})")
    ax1.set_title("How loose the one-step window is")
    ax1.legend(fontsize=7)
    factors = loose.get("factors", {})
    if factors:
        names = list(factors)
        ax2.boxplot([_arr(factors[n]["log10_sample"]) for n in names], showfliers=False)
        ax2.set_xticks(
            range(1, len(names) + 1), [f"{n}\n{_interval_text(factors[n]['median'])}" for n in names], fontsize=7
        )
        ax2.axhline(0, color="k", lw=0.7)
        ax2.set_ylabel("log10 factor")
        neg = loose["negative_curvature"]
        ax2.set_title(f"Factors of the pass@1 ratio (c > 0: {neg['n'] - round(neg['value'] * neg['n'])} instances)")
    adam = res["adam_predictors"]
    if "sample" in adam:
        sample = adam["sample"]
        raises = np.asarray(sample["raises"], bool)
        x, y = _arr(sample["sign_agreement"]), _arr(sample["weighted_sign_agreement"])
        jitter = np.random.default_rng(0).uniform(-0.015, 0.015, x.size)  # coordinates are few: spread ties
        ax3.scatter(x[raises] + jitter[raises], y[raises], s=8, color="tab:green", label="Adam step raises J_1")
        ax3.scatter(x[~raises] + jitter[~raises], y[~raises], s=8, color="tab:red", label="Adam step lowers J_1")
        ax3.axhline(0.5, color="k", lw=0.7)
        ax3.axvline(0.5, color="k", lw=0.7, ls=":")
        rules = adam["rules"]
        ax3.set_xlabel(
            f"share of coordinates with sign(g_1) = sign(g_k)  (rule accuracy "
            f"{_interval_text(rules['sign_agreement'], 2)})"
        )
        ax3.set_ylabel("|g_1|-weighted share")
        ax3.set_title(
            f"Adam under conflict: weighted rule accuracy {_interval_text(rules['weighted_sign_agreement'], 3)}",
            fontsize=9,
        )
        ax3.legend(fontsize=7)
    fig.tight_layout()
    return fig


_FIGURES = (
    ("toy", "bandit_toy", _toy),
    ("critical_k", "bandit_critical_k", _critical),
    ("phase_diagram", "bandit_phase", _phase),
    ("one_step", "bandit_one_step", _one_step),
    ("one_step", "bandit_first_order", _first_order),
    ("dynamics", "bandit_dynamics", _dynamics),
    ("estimators", "bandit_estimators", _estimators),
)


def draw(results: dict, outdir: pathlib.Path) -> list[pathlib.Path]:
    """Draw every figure whose section is in `results` (a `sim.studies.confirmations.run_all` dict).

    Args:
      results: the JSON-serialisable dict of :func:`sim.studies.confirmations.run_all` (or a subset of its
        sections).
      outdir: folder for the figures (created if missing).

    Returns:
      The written paths, PNG and PDF per figure.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict from sim.studies.confirmations.run_all; got {type(results).__name__}")
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: list[pathlib.Path] = []
    for section, name, fn in _FIGURES:
        if section in results and results[section] is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                fig = fn(results[section])
            paths.extend(_save(fig, outdir, name))
    return paths
