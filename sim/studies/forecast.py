"""The forecast of "pass@1 lower `T` steps later": its event, its fit and its scores, on plain arrays.

The event at step `t` of a run with exact evaluation values `J_1(0), J_1(1), ...` and horizon `T`:

    y_t = 1[J_1(t + T) < J_1(t)],   t = 0 .. len - T - 1.

The forecast is a logistic regression `p = sigmoid(b + w . (x - m) / s)` fitted by Newton's method
(iteratively reweighted least squares) with a ridge `lambda ||w||^2 / 2` on the standardised
weights (the intercept is not penalised); `m`, `s` are the fit rows' feature means and standard
deviations. Scores: the Brier score, its skill over a constant forecast, the expected calibration
error over equal-width bins and the reliability table with Wilson intervals per bin; each with a
percentile bootstrap interval over runs (the steps of a run are dependent, runs are not).
Numbers only: the features come from the caller (:mod:`passk.forecast`).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from sim.intervals import wilson_interval

__all__ = [
    "event_labels",
    "fit_logistic",
    "predict_logistic",
    "brier_score",
    "brier_skill",
    "calibration_error",
    "reliability_table",
    "bootstrap_over_runs",
    "judge",
]


def event_labels(j1, horizon: int) -> np.ndarray:
    """`y_t = 1[J_1(t + T) < J_1(t)]` for `t = 0 .. len(j1) - T - 1` (int array, possibly empty).

    Args:
      j1: the exact evaluation pass@1 per step, finite.
      horizon: `T >= 1`.
    """
    j1 = np.asarray(j1, np.float64)
    if j1.ndim != 1 or not np.all(np.isfinite(j1)):
        raise ValueError(f"j1 must be a 1-d array of finite numbers; got shape {j1.shape}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1; got {horizon!r}")
    if j1.size <= horizon:
        return np.zeros(0, np.int64)
    return (j1[horizon:] < j1[:-horizon]).astype(np.int64)


def _check_xy(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, d) and y (N,); got x {x.shape}, y {y.shape}")
    if x.shape[0] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"x must hold at least 2 rows of finite numbers; got shape {x.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must hold 0/1 outcomes")
    return x, y


def fit_logistic(x, y, *, ridge: float = 1e-2, max_iter: int = 100, tol: float = 1e-10) -> dict:
    """Ridge logistic regression by Newton's method (IRLS) on standardised features.

    Maximises `sum_i [y_i eta_i - log(1 + e^{eta_i})] - (lambda / 2) ||w||^2` with
    `eta_i = b + w . z_i`, `z_i = (x_i - m) / s`. Newton step with `p_i = sigmoid(eta_i)`,
    `W = diag(p_i (1 - p_i))`, design `Z1 = [1, z]`, penalty `R = diag(0, lambda, ..., lambda)`:

        beta <- beta + (Z1' W Z1 + R)^{-1} (Z1' (y - p) - R beta).

    Args:
      x: `(N, d)` features, finite (a constant column gets scale 1).
      y: `(N,)` outcomes in `{0, 1}`.
      ridge: `lambda > 0` (keeps the fit finite when the classes separate).
      max_iter, tol: stop when the largest Newton step is below `tol`.

    Returns:
      `{"mean": m, "scale": s, "intercept": b, "coef": w, "iterations"}` (lists of floats).
    """
    x, y = _check_xy(x, y)
    if y.min() == y.max():
        raise ValueError(f"y holds only {int(y[0])}s: the likelihood has no maximum (the intercept runs off)")
    if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a finite number > 0; got {ridge!r}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z1 = np.column_stack([np.ones(x.shape[0]), (x - mean) / scale])
    penalty = np.full(z1.shape[1], float(ridge))
    penalty[0] = 0.0
    beta = np.zeros(z1.shape[1])
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        p = _sigmoid(z1 @ beta)
        w = p * (1 - p)
        hessian = (z1 * w[:, None]).T @ z1 + np.diag(penalty)
        step = np.linalg.solve(hessian, z1.T @ (y - p) - penalty * beta)
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    if np.max(np.abs(step)) >= tol:
        raise ValueError(f"the Newton iteration did not converge in {max_iter} steps (ridge {ridge})")
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "intercept": float(beta[0]),
        "coef": beta[1:].tolist(),
        "iterations": iterations,
    }


def _sigmoid(eta):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(eta, np.float64)))  # no overflow for large |eta|


def predict_logistic(model: dict, x) -> np.ndarray:
    """`sigmoid(b + w . (x - m) / s)` per row of `x` (`(N, d)`, or one row `(d,)`)."""
    x = np.asarray(x, np.float64)
    coef = np.asarray(model["coef"], np.float64)
    if x.shape[-1] != coef.size or not np.all(np.isfinite(x)):
        raise ValueError(f"x must hold {coef.size} finite features per row; got shape {x.shape}")
    eta = model["intercept"] + ((x - np.asarray(model["mean"])) / np.asarray(model["scale"])) @ coef
    return _sigmoid(eta)


def _check_py(p, y):
    p = np.asarray(p, np.float64)
    y = np.asarray(y, np.float64)
    if p.ndim != 1 or p.shape != y.shape or p.size == 0:
        raise ValueError(f"p and y must be 1-d arrays of one non-zero length; got {p.shape}, {y.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p must hold probabilities in [0, 1]")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must hold 0/1 outcomes")
    return p, y


def brier_score(p, y) -> float:
    """`mean_i (p_i - y_i)^2`."""
    p, y = _check_py(p, y)
    return float(np.mean((p - y) ** 2))


def brier_skill(p, y, base_rate: float) -> float:
    """`1 - Brier(p) / Brier(base_rate)`, the constant forecast `base_rate` the reference.

    Returns NaN-free results only: a reference Brier score of 0 (all outcomes equal the base
    rate) is a ValueError.
    """
    if not 0 <= base_rate <= 1:
        raise ValueError(f"base_rate must lie in [0, 1]; got {base_rate!r}")
    p, y = _check_py(p, y)
    reference = float(np.mean((base_rate - y) ** 2))
    if reference == 0:
        raise ValueError("the base-rate forecast is exact on these outcomes: skill is undefined")
    return 1.0 - float(np.mean((p - y) ** 2)) / reference


def _bins(p, n_bins: int):
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    # bin b holds [b/B, (b+1)/B); p = 1 falls in the last bin
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def calibration_error(p, y, n_bins: int = 10) -> float:
    """Expected calibration error `sum_b (n_b / N) |mean_{i in b} y_i - mean_{i in b} p_i|`
    over `n_bins` equal-width bins of `[0, 1]`."""
    p, y = _check_py(p, y)
    b = _bins(p, n_bins)
    n = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, y, n_bins) - np.bincount(b, p, n_bins))  # n_b |ybar_b - pbar_b|
    return float(np.sum(gap[n > 0]) / p.size)


def reliability_table(p, y, n_bins: int = 10, level: float = 0.95) -> list:
    """Per non-empty bin: `{lower_edge, upper_edge, n, mean_forecast, observed}`, `observed` the
    share of events with its Wilson interval (:func:`sim.intervals.wilson_interval`)."""
    p, y = _check_py(p, y)
    b = _bins(p, n_bins)
    rows = []
    for i in range(n_bins):
        at = b == i
        if not at.any():
            continue
        rows.append(
            {
                "lower_edge": i / n_bins,
                "upper_edge": (i + 1) / n_bins,
                "n": int(at.sum()),
                "mean_forecast": float(p[at].mean()),
                "observed": wilson_interval(int(y[at].sum()), int(at.sum()), level),
            }
        )
    return rows


def bootstrap_over_runs(statistic, run_ids, *, key, n_boot: int = 2000, level: float = 0.95) -> dict:
    """`statistic(index)` on the pooled rows, and its percentile interval over resampled runs.

    Each replicate draws as many runs as there are, with replacement (`jax.random.choice` under
    `key`), and pools every row of each drawn run (a run drawn twice counts twice).

    Args:
      statistic: `index -> float`, index an int array of rows.
      run_ids: `(N,)` the run of each row.
      key: a `jax.random` key.
      n_boot: replicates, `>= 100`.
      level: the interval's level.

    Returns:
      `{"value", "lower", "upper", "runs", "n", "n_boot"}`.
    """
    run_ids = np.asarray(run_ids)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100; got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    runs = np.unique(run_ids)
    rows_of = [np.flatnonzero(run_ids == r) for r in runs]
    draws = np.asarray(jax.random.randint(key, (n_boot, runs.size), 0, runs.size))
    values = []
    for draw in draws:
        index = np.concatenate([rows_of[i] for i in draw])
        try:
            values.append(statistic(index))
        except ValueError:  # e.g. a replicate whose outcomes are all equal: no skill to read
            continue
    values = np.asarray(values, np.float64)
    alpha = (1 - level) / 2
    return {
        "value": float(statistic(np.arange(run_ids.size))),
        "lower": float(np.quantile(values, alpha)),
        "upper": float(np.quantile(values, 1 - alpha)),
        "runs": int(runs.size),
        "n": int(run_ids.size),
        "n_boot": int(values.size),
    }


def judge(forecasts: dict, y, run_ids, base_rate: float, *, key, n_boot: int = 2000, n_bins: int = 10) -> dict:
    """Every forecast's Brier score, skill over `base_rate`, skill over the judged steps' own event
    share (`skill_own`: the constant no forecast made in advance can know, a stricter reference when
    the judged runs' rate differs from the fit runs') and calibration error, each with its bootstrap
    interval over runs (one key for all, so the forecasts see the same replicates), and its
    reliability table.

    Args:
      forecasts: `{name: (N,) probabilities}`.
      y: `(N,)` outcomes; run_ids: `(N,)` the run of each row.
      base_rate: the reference of the skill (from the fitting runs).

    Returns:
      `{name: {"brier", "skill", "skill_own", "ece", "reliability"}}`.
    """
    y = np.asarray(y, np.float64)
    out = {}
    for name, p in forecasts.items():
        p, _ = _check_py(p, y)
        out[name] = {
            "brier": bootstrap_over_runs(lambda i, p=p: brier_score(p[i], y[i]), run_ids, key=key, n_boot=n_boot),
            "skill": bootstrap_over_runs(
                lambda i, p=p: brier_skill(p[i], y[i], base_rate), run_ids, key=key, n_boot=n_boot
            ),
            "skill_own": bootstrap_over_runs(
                lambda i, p=p: brier_skill(p[i], y[i], float(y[i].mean())), run_ids, key=key, n_boot=n_boot
            ),
            "ece": bootstrap_over_runs(
                lambda i, p=p: calibration_error(p[i], y[i], n_bins), run_ids, key=key, n_boot=n_boot
            ),
            "reliability": reliability_table(p, y, n_bins),
        }
    return out
