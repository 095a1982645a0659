"""`passk diagnose DIR --forecast`: the probability that pass@1 is lower `T` steps later, per step.

The features of step `t` come from the rows of :func:`passk.runs.diagnose_run` up to `t` (step
`t`'s dump and the `WINDOW - 1` before it), at the trained `k`:

- `asinh_z`: `asinh(z)`, `z = I_k_hat / stderr` (SPEC section 11); the naive forecast is `Phi(-z)`;
- `log_k_over_k_star`: `log k - log k*_ref`, `k*_ref` the step's first `k` with `I_k_hat < 0`
  (`first_negative`, read whether or not `I_1` is established positive: at `F = 4` folds it
  rarely is), or `k_max + 1` when `I_k_hat > 0` up to `k_max` (a bound);
- `no_signal`: 1 when `I_1` is not established positive (no `k*` interval is read);
- `k_star_slope`: the least-squares slope per step of `log k*_ref` over the window;
- `pass_at_1`, `pass_at_1_slope`: the batch pass@1 and its slope per step over the window;
- `share_unsolved`: the share of prompts with no correct answer;
- `log_k`: `log` of the trained `k`.

The optimiser's settings (Adam's step size, epochs, clip) are the same in every run the
coefficients were fitted on, so they are not features. The coefficients (a logistic regression per
horizon, :func:`sim.studies.forecast.fit_logistic`) ship in `forecast_coefficients.json` with the
runs they were fitted on named; they hold for runs like those (the miniature LLM run of `passk
lm`) and are unchecked on anything else.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np

__all__ = [
    "FEATURES",
    "WINDOW",
    "HORIZONS",
    "COEFFICIENTS",
    "run_features",
    "naive_forecast",
    "rule_forecast",
    "load_coefficients",
    "check_request",
    "forecast_run",
    "format_forecast",
    "figure_bytes",
]

FEATURES = (
    "asinh_z",
    "log_k_over_k_star",
    "no_signal",
    "k_star_slope",
    "pass_at_1",
    "pass_at_1_slope",
    "share_unsolved",
    "log_k",
)
#: Steps (this one and those before it) the slopes are read over.
WINDOW = 10
#: The horizons the shipped coefficients cover.
HORIZONS = (5, 10, 20)
COEFFICIENTS = "forecast_coefficients.json"


def _inner_at(row: dict, k: int):
    for cell in row.get("inner") or []:
        if cell["k"] == k:
            return cell
    return None


def _z(cell) -> float:
    estimate, stderr = cell["estimate"], cell["stderr"]
    if stderr is None or not math.isfinite(stderr):
        raise ValueError(f"I_{cell['k']} has no standard error (the forecast needs F >= 3 folds)")
    if stderr == 0:
        return 0.0 if estimate == 0 else math.copysign(math.inf, estimate)
    return estimate / stderr


def _log_k_star(row: dict) -> float:
    """`log k*_ref` of a row: its first `k` with `I_k_hat < 0`, or `k_max + 1` when there is none."""
    crit = row.get("k_star")
    if not crit or "first_negative" not in crit:
        raise ValueError(f"step {row.get('step')}: no k* read (the forecast needs alignments, SPEC section 11)")
    if crit["first_negative"] is not None:
        return math.log(crit["first_negative"])
    return math.log(crit["k_max"] + 1)  # I_k_hat > 0 at every k read: k* lies beyond k_max


def _slope(values) -> float:
    """Least-squares slope of `(step, value)` pairs; 0 with fewer than 2 distinct steps."""
    pts = np.asarray(values, np.float64).reshape(-1, 2)
    if pts.shape[0] < 2 or np.ptp(pts[:, 0]) == 0:
        return 0.0
    x = pts[:, 0] - pts[:, 0].mean()
    return float(x @ pts[:, 1] / (x @ x))


def run_features(rows: list, trained_k: int, *, window: int = WINDOW):
    """The feature matrix of a run's rows (module docstring) and each step's `z`.

    Args:
      rows: :func:`passk.runs.diagnose_run`'s `steps`, in step order, each with `inner` at
        `trained_k` (alignments logged, `trained_k` among the orders).
      trained_k: the `k` the run trains at (`1` for a pass@1 trainer such as GRPO).
      window: the steps of each slope (this one and `window - 1` before it).

    Returns:
      `(x, z)`: `(N, len(FEATURES))` float array and `(N,)` array of `I_k_hat / stderr`.
    """
    if isinstance(trained_k, bool) or not isinstance(trained_k, int) or trained_k < 1:
        raise ValueError(f"trained_k must be an integer >= 1; got {trained_k!r}")
    x, z = [], []
    for t, row in enumerate(rows):
        cell = _inner_at(row, trained_k)
        if cell is None:
            raise ValueError(
                f"step {row.get('step')}: no I_k at the trained k = {trained_k} (the forecast needs "
                "alignments, SPEC section 11, and k at most the smallest group)"
            )
        z.append(_z(cell))
        recent = rows[max(0, t - window + 1) : t + 1]
        log_ks = _log_k_star(row)
        at = [r["step"] if r["step"] is not None else i for i, r in enumerate(recent)]  # slopes per step
        ks_pts = [(s, _log_k_star(r)) for s, r in zip(at, recent)]
        p1_pts = [(s, r["pass_at_1"]["value"]) for s, r in zip(at, recent)]
        x.append(
            [
                # a zero standard error with a non-zero estimate: a cap far beyond any fitted value
                math.asinh(z[-1]) if math.isfinite(z[-1]) else math.copysign(50.0, z[-1]),
                math.log(trained_k) - log_ks,
                float(row["k_star"].get("signal") is not True),
                _slope(ks_pts),
                row["pass_at_1"]["value"],
                _slope(p1_pts),
                row["share_unsolved"],
                math.log(trained_k),
            ]
        )
    return np.asarray(x, np.float64).reshape(-1, len(FEATURES)), np.asarray(z, np.float64)


def naive_forecast(z) -> np.ndarray:
    """`Phi(-z)`, the chance that `I_k < 0` read off `z = I_k_hat / stderr` as if normal."""
    from scipy.special import ndtr

    return ndtr(-np.asarray(z, np.float64))


def rule_forecast(rows: list, trained_k: int) -> np.ndarray:
    """The 0/1 rule "`k >= k*_hat`", `k*_hat` the step's first `k` with `I_k_hat < 0` (0 where none)."""
    out = []
    for row in rows:
        first = (row.get("k_star") or {}).get("first_negative")
        out.append(float(first is not None and trained_k >= first))
    return np.asarray(out, np.float64)


def load_coefficients(path=None) -> dict:
    """The shipped coefficients (or those in `path`): `{"features", "window", "fit_runs", "models"}`."""
    if path is None:
        text = resources.files("passk").joinpath(COEFFICIENTS).read_text()
    else:
        with open(path) as f:
            text = f.read()
    record = json.loads(text)
    if tuple(record.get("features", ())) != FEATURES:
        raise ValueError(f"{path or COEFFICIENTS}: features {record.get('features')} differ from {list(FEATURES)}")
    return record


def check_request(trained_k, horizon, ks):
    """Check `--forecast`'s flags before any work; return the orders to read (with `trained_k`).

    ValueError: no `--trained-k`, or a horizon the shipped coefficients do not cover.
    """
    if trained_k is None:
        raise ValueError("--forecast needs --trained-k (the k the run trains at; 1 for GRPO)")
    models = load_coefficients()["models"]
    if str(horizon) not in models:
        raise ValueError(f"--horizon must be one of {', '.join(models)} (the fitted horizons); got {horizon}")
    return None if ks is None else sorted(set(ks) | {trained_k})


def forecast_run(report: dict, *, trained_k: int, horizon: int = 10, coefficients: dict | None = None) -> list:
    """Per step of `report` (:func:`passk.runs.diagnose_run`): the forecast and its basis.

    Returns:
      One `{step, horizon, probability, naive, rule, basis}` per row, `basis` the feature values
      by name (also stored in each row as `row["forecast"]`).
    """
    from sim.studies.forecast import predict_logistic

    record = coefficients or load_coefficients()
    models = record["models"]
    if str(horizon) not in models:
        raise ValueError(f"--horizon must be one of {', '.join(models)} (the fitted horizons); got {horizon!r}")
    rows = report["steps"]
    x, z = run_features(rows, trained_k, window=record["window"])
    p = predict_logistic(models[str(horizon)], x)
    naive, rule = naive_forecast(z), rule_forecast(rows, trained_k)
    out = []
    for i, row in enumerate(rows):
        entry = {
            "step": row["step"],
            "horizon": horizon,
            "probability": float(p[i]),
            "naive": float(naive[i]),
            "rule": int(rule[i]),
            "basis": {name: float(v) for name, v in zip(FEATURES, x[i])},
        }
        row["forecast"] = entry
        out.append(entry)
    return out


def format_forecast(entries: list, trained_k: int) -> str:
    """The forecast per step as text: probability, the naive `Phi(-z)`, the rule, and the basis."""
    if not entries:
        return "forecast: no steps"
    horizon = entries[0]["horizon"]
    lines = [
        f"forecast: P(exact pass@1 lower {horizon} steps later) at the trained k = {trained_k} "
        "(fitted on miniature LLM runs; unchecked on other runs)",
        f"{'step':>6}  {'P':>5}  {'Phi(-z)':>7}  {'k>=k*':>5}  "
        + "  ".join(f"{name:>{max(8, len(name))}}" for name in FEATURES),
    ]
    for e in entries:
        step = e["step"] if e["step"] is not None else "-"
        lines.append(
            f"{step:>6}  {e['probability']:>5.3f}  {e['naive']:>7.2f}  {e['rule']:>5d}  "
            + "  ".join(f"{e['basis'][name]:>{max(8, len(name))}.3g}" for name in FEATURES)
        )
    return "\n".join(lines)


def figure_bytes(report: dict, entries: list, suffix: str) -> bytes:
    """:func:`passk.runs.plot_run` with a third panel: the forecast per step (and the naive one)."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    from passk.plots._style import encode
    from passk.runs import plot_run

    fig = plot_run(report)
    fig.set_size_inches(16, 4.2)
    grid = GridSpec(1, 3, figure=fig)
    for i, ax in enumerate(fig.axes):
        ax.set_subplotspec(grid[i])
    ax = fig.add_subplot(grid[2])
    pts = [(e["step"], e["probability"], e["naive"]) for e in entries if e["step"] is not None]
    steps, p, naive = (np.array(c, np.float64) for c in zip(*pts)) if pts else (np.zeros(0),) * 3
    horizon = entries[0]["horizon"] if entries else "T"
    ax.plot(steps, p, "o-", ms=3, color="C2", label="forecast (logistic)")
    ax.plot(steps, naive, ":", color="0.4", label="naive Phi(-z)")
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel(f"P(pass@1 lower {horizon} steps later)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = encode(fig, suffix)
    plt.close("all")
    return data
