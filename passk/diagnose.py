"""`passk diagnose`: read a run's logged answers, print the diagnosis, write JSON and a figure.

The files (`.npz`, `.jsonl`, `.csv`) are read by :mod:`passk.readers`; the numbers come from
:func:`sim.diagnose.diagnosis_report`; this module turns a file into a report and a report into
text and a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# `passk/benchmarks/diagnose.py` times the line-by-line reader through these names.
from passk.readers import _JSONL_BLOCK, InputError, RunData, _fail, _JsonlReader, read_run  # noqa: F401
from sim.files import check_writable

__all__ = [
    "InputError",
    "RunData",
    "read_run",
    "diagnose_file",
    "format_report",
    "plot_report",
    "example_path",
    "PLOT_SUFFIXES",
]

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def example_path(kind: str = "npz") -> Path:
    """The shipped example run: a file (`kind` one of `"npz"`, `"jsonl"`, `"csv"`) or a run
    directory in a framework's schema (`"verl"`, `"trl"`, `"nemo-rl"`)."""
    from passk import examples

    names = {"npz": examples.NPZ, "jsonl": examples.JSONL, "csv": examples.CSV, **examples.RUNS}
    if kind not in names:
        raise ValueError(f"kind must be one of {tuple(names)}; got {kind!r}")
    return names[kind]


def check_outputs(*, json_path=None, plot_path=None) -> None:
    """Raise ValueError unless every output path can be written (run before any work).

    A path must not be an existing directory; its nearest existing ancestor must be a directory
    this process can create a file in (missing folders are created when the file is written); `--plot`
    must end in one of :data:`PLOT_SUFFIXES`; the two must differ.
    """
    if plot_path is not None and Path(plot_path).suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot must end in one of {', '.join(PLOT_SUFFIXES)}; got {str(plot_path)!r}")
    if json_path is not None and plot_path is not None and Path(json_path).resolve() == Path(plot_path).resolve():
        raise ValueError(f"--json and --plot name the same file {str(json_path)!r}")
    for flag, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None:
            check_writable(path, name=flag)


def is_run_input(path, args) -> bool:
    """Whether `passk diagnose` reads `path` step by step (:mod:`passk.runs`) rather than as one run."""
    from passk.frameworks import RUN_FORMATS, detect_format
    from passk.runs import _plain_jsonl

    path = Path(path)
    if path.is_dir() or args.format in RUN_FORMATS or args.trained_k is not None:
        return True
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return True
    if suffix == ".jsonl" and path.is_file():
        from passk.frameworks import Options

        options = Options(args.format, args.reward_field, args.group_size, args.success_threshold)
        return detect_format(path, args.format) != "jsonl" or not _plain_jsonl(path, options)
    return False


def diagnose_file(path, *, ks=None, level: float = 0.95) -> dict:
    """Read `path` and return :func:`sim.diagnose.diagnosis_report` of it (with `"file"` added)."""
    import theory
    from sim.diagnose import diagnosis_report

    theory.normal_quantile(level)  # validates level before reading: a bad level is not the file's fault
    level = float(level)
    run = read_run(path)
    if ks is not None and max(ks) > run.n:
        _fail(
            path,
            f"--k {max(ks)} exceeds the n = {run.n} answers per prompt (pass@k and the trainers' weights need k <= n)",
        )
    try:
        report = diagnosis_report(
            run.correct,
            run.n,
            score_sum=run.score_sum,
            score_sq_sum=run.score_sq_sum,
            mu=run.mu,
            prompt_ids=run.prompt_ids,
            ks=ks,
            level=level,
            scores="file" if run.score_sum is not None else None,
        )
    except (ValueError, TypeError) as err:
        _fail(path, err)
    return {"file": str(path), **report}


# ---------------------------------------------------------------------------------------------
# Text and figure


def _k_text(k, none_text):
    return str(k) if k is not None else none_text


def _verdict(report: dict) -> str:
    """The answer of a report with scores: no signal, no conflict, possible, or established from which `k`."""
    ks, k_max = report["k_star"], report["k_max"]
    level = f"{ks['level']:.0%}"
    if ks.get("signal") is False:
        verdict = (
            "no signal: the estimate of I_1 = ||grad J_1||^2 is not clearly positive, so these answers "
            "carry no information about k* (more prompts or answers, or score vectors with less noise)"
        )
    elif ks["lower"] is None:
        verdict = f"no conflict: I_k > 0 with {level} confidence at every k <= {k_max}"
    elif ks["upper"] is None:
        verdict = (
            f"conflict possible from k = {ks['lower']} on, not established up to k = {k_max} "
            f"(more answers per prompt or more prompts narrow it)"
        )
    else:
        verdict = f"conflict established: pass@k ascent lowers pass@1 from k = {ks['upper']} at the latest"
    return verdict


def format_report(report: dict) -> str:
    """A short text report of :func:`diagnose_file` / :func:`sim.diagnose.diagnose_model`."""
    n = report["samples_per_prompt"]
    prompts = report["prompts"]
    p_hat = np.array([p["p_hat"] for p in prompts])
    weight = np.array([p["weight"] for p in prompts])
    unsolved = float(np.sum(weight[p_hat == 0]))
    lines = [
        f"run: {report.get('file', 'model')}: {report['n_prompts']} prompts, n = {n} answers each, "
        + (
            f"score vectors of dimension {report['score_dim']} ({report['scores']})"
            if report["score_dim"]
            else "counts only (no score vectors)"
        ),
        f"pass@1 (weighted mean of c/n) = {float(weight @ p_hat):.4f}; prompts never solved (c = 0): "
        f"{int(np.sum(p_hat == 0))} ({unsolved:.1%} of the weight)",
    ]
    ks = report["k_star"]
    if report["inner"]:
        level = f"{ks['level']:.0%}"
        k_max = report["k_max"]
        verdict = _verdict(report)
        if ks.get("signal") is not False:
            lines.append(
                f"k* (first k with I_k = <grad J_k, grad J_1> < 0): estimate "
                f"{_k_text(ks['estimate'], f'none <= {k_max}')}, interval "
                f"[{_k_text(ks['lower'], f'> {k_max}')}, {_k_text(ks['upper'], 'not established')}] "
                f"from a simultaneous {level} {ks['band']} band over k = 1 .. {k_max} (both ends hold {level} "
                f"together; q = {ks['quantile']:.2f})"
            )
        lines.append(f"  {verdict}")
        z = report["z"]
        shown = [e for e in report["inner"] if e["k"] in set(report["ks"]) | {ks["estimate"]}]
        lines.append(f"{'k':>6}  {'I_k':>11}  {'stderr':>10}  sign")
        for e in shown:
            lo = e["scaled_estimate"] - z * e["scaled_stderr"]
            hi = e["scaled_estimate"] + z * e["scaled_stderr"]
            sign = "negative" if hi < 0 else ("positive" if lo > 0 else "unclear")
            lines.append(f"{e['k']:>6}  {e['estimate']:11.3e}  {e['stderr']:10.2e}  {sign}")
    lines.append(
        "trainers (weight on prompts, finite-n, unbiased from counts): effective prompts / share on c = 0 "
        "/ share on top 10%"
    )
    for method, entries in report["trainers"].items():
        cells = []
        for e in entries:
            label = "" if e["k"] is None else f"k={e['k']}: "
            if e["effective_prompts"] is None:
                cells.append(f"{label}no weight")
            else:
                cells.append(
                    f"{label}{e['effective_prompts']:.1f} / {e['share_unsolved']:.2f} / {e['top_decile_share']:.2f}"
                )
        lines.append(f"  {method:>13}  " + ";  ".join(cells))
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plot_report(report: dict):
    """`I_k` with its interval against `k`, and the effective number of prompts per trainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if report["inner"]:
        k = np.array([e["k"] for e in report["inner"]])
        est = np.array([e["estimate"] for e in report["inner"]])
        half = report["z"] * np.array([e["stderr"] for e in report["inner"]])
        ax1.fill_between(k, est - half, est + half, alpha=0.3, label=f"{report['k_star']['level']:.0%} interval")
        ax1.plot(k, est, "o-", ms=3, label="unbiased I_k")
        ax1.axhline(0.0, color="k", lw=0.8)
        ks = report["k_star"]
        if ks.get("signal") is not False and ks["lower"] is not None:
            if ks["upper"] is not None:
                ax1.axvspan(ks["lower"], ks["upper"], color="C3", alpha=0.15, label="k* interval")
            else:
                ax1.axvspan(
                    ks["lower"],
                    k[-1],
                    facecolor="none",
                    edgecolor="C3",
                    hatch="//",
                    lw=0,
                    label="k* interval, upper end not established",
                )
        if ks.get("signal") is not False and ks["estimate"] is not None:
            ax1.axvline(ks["estimate"], color="C3", ls="--", lw=1.2, label=f"k* estimate = {ks['estimate']}")
        ax1.set_xlabel("k")
        ax1.set_ylabel("I_k = <grad J_k, grad J_1>")
        ax1.legend(fontsize=8)
    else:
        ax1.text(
            0.5, 0.5, "no score vectors:\nthe sign of I_k needs them", ha="center", va="center", transform=ax1.transAxes
        )
        ax1.set_axis_off()
    # Trainers often coincide (REINFORCE and RLOO; the PKPO variants): open markers of growing size and
    # distinct dashes keep every curve visible under the others.
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for index, (method, entries) in enumerate(report["trainers"].items()):
        pts = [(e["k"], e["effective_prompts"]) for e in entries if e["effective_prompts"] is not None]
        if not pts:
            continue
        style = dict(color=f"C{index}", ls=styles[index % 4], lw=1.2, label=method)
        if pts[0][0] is None:
            ax2.axhline(pts[0][1], **style)
        else:
            ax2.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=markers[index % 7],
                ms=3 + 1.5 * index,
                mfc="none",
                **style,
            )
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("k")
    ax2.set_ylabel("effective prompts 1 / sum omega^2")
    ax2.legend(fontsize=7)
    fig.suptitle(
        f"{report.get('file', 'model')}: "
        + (_verdict(report) if report["inner"] else "counts only: k* needs score vectors"),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def figure_bytes(report: dict, suffix: str) -> bytes:
    """The figure of :func:`plot_report` encoded as `suffix` (`.png`, `.pdf`, `.svg`)."""
    from passk.plots._style import encode

    return encode(plot_report(report), suffix)
