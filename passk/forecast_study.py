"""The forecast's fit and judgement (`passk reproduce --parts forecast`), from `passk lm` runs it makes.

Fit on one set of runs, judge on another that shares no setting, seed or trained `k` with it
(:data:`DESIGN`). Runs go to `outdir/.lm_runs/{setting}-{estimator}-k{k}-seed{s}` (the `lm`
part's folder and names: a run either part made is resumed from its checkpoint, not redone). Each
run is read back through :func:`passk.runs.diagnose_run` from its dumps, as `passk diagnose
--forecast` reads a run; the events come from its `run.json` (exact evaluation, no sampling noise).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from passk import forecast as fc

__all__ = [
    "DESIGN",
    "LABELS",
    "run_name",
    "trained_k_of",
    "run_table",
    "fit",
    "judge_runs",
    "study",
]

#: The forecasts judged, by key in the results.
LABELS = {
    "logistic": "logistic forecast",
    "base_rate": "base rate of the fit runs",
    "rule": "0/1 rule k >= k*_hat",
    "naive": "naive Phi(-z)",
    "shuffled": "logistic fitted on shuffled outcomes (control)",
    "no_k_star": "logistic without the I_k and k* features (ablation)",
}
#: The ablation's features: all but those read off `I_k` and `k*`.
WITHOUT_K_STAR = ("pass_at_1", "pass_at_1_slope", "share_unsolved", "log_k")

#: Which runs fit and which judge, at full and quick size; seeds are offsets from the part's seed.
DESIGN = {
    "full": {
        "fit": {
            "setting": "few-hard",
            "seeds": (0, 1, 2),
            "trainers": (("grpo", 4), ("grouped-passk", 2), ("grouped-passk", 8), ("grouped-passk", 15)),
            "steps": 200,
        },
        "judge": {
            "setting": "many-hard",
            "seeds": (3, 4, 5),
            "trainers": (("grouped-passk", 3), ("grouped-passk", 6), ("grouped-passk", 12)),
            "steps": 200,
        },
        "n_answers": 16,
        "n_boot": 2000,
        "horizons": fc.HORIZONS,
    },
    "quick": {
        # trainers at k near n, whose pass@1 turns within 40 steps, so the fit sees events
        "fit": {
            "setting": "few-hard",
            "seeds": (0,),
            "trainers": (("grouped-passk", 6), ("grouped-passk", 7)),
            "steps": 40,
        },
        "judge": {
            "setting": "many-hard",
            "seeds": (3,),
            "trainers": (("grouped-passk", 3), ("grouped-passk", 5)),
            "steps": 40,
        },
        "n_answers": 8,
        "n_boot": 200,
        "horizons": (5,),  # 40 steps leave too few outcomes 10 or 20 steps ahead
    },
}
#: The L2 penalty of the fit on standardised features.
RIDGE = 1.0


def run_name(setting: str, estimator: str, k: int, seed: int) -> str:
    return f"{setting}-{estimator}-k{k}-seed{seed}"


def trained_k_of(estimator: str, k: int) -> int:
    """The `k` an estimator trains at: its own `k`, or 1 for a pass@1 trainer (GRPO, RLOO)."""
    import theory

    return k if theory.gradient_estimator(estimator).needs_k else 1


def _runs(part: dict, seed: int):
    for s in part["seeds"]:
        for estimator, k in part["trainers"]:
            yield part["setting"], estimator, k, seed + s


#: What a run's cached diagnosis keeps of each row (all the features read).
ROW_KEYS = ("step", "pass_at_1", "share_unsolved", "inner", "k_star")


def _cached_rows(path: Path, fingerprint: str, steps: int, trained_k: int):
    """The rows cached by an earlier read of the same run (same fingerprint, trained k, steps), or None."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or (cached.get("fingerprint"), cached.get("trained_k")) != (fingerprint, trained_k):
        return None
    rows = [r for r in cached.get("rows", []) if isinstance(r, dict) and r.get("step", steps) < steps]
    return rows if [r["step"] for r in rows] == list(range(steps)) else None


def run_table(part: dict, *, seed: int, n_answers: int, outdir: Path, progress=None) -> list:
    """Make (or resume) every run of `part` and read it back: per run its name, settings, features,
    `z`, the rule's 0/1 and the exact `j1` per step. The rows each run's diagnosis gives are kept in
    `outdir/.forecast_rows/{name}.json` (with the run's fingerprint), so a second call reads no dump."""
    from passk.frameworks import Options
    from passk.lm import run_lm
    from passk.runs import diagnose_run
    from sim.files import atomic_write_json

    out = []
    for setting, estimator, k, s in _runs(part, seed):
        name = run_name(setting, estimator, k, s)
        folder = Path(outdir) / ".lm_runs" / name
        if progress:
            progress(f"forecast: {name}")
        record = run_lm(
            setting=setting,
            estimator=estimator,
            k=k,
            steps=part["steps"],
            seed=s,
            out=folder,
            plot=False,
            n_answers=n_answers,
        )
        steps = part["steps"]
        tk = trained_k_of(estimator, k)
        cache = Path(outdir) / ".forecast_rows" / f"{name}.json"
        rows = _cached_rows(cache, record["fingerprint"], steps, tk)
        if rows is None:
            report = diagnose_run(folder, options=Options(format="verl"), ks=sorted({1, tk}), trained_k=tk)
            rows = [{key: r[key] for key in ROW_KEYS} for r in report["steps"] if r["step"] < steps]
            if [r["step"] for r in rows] != list(range(steps)):
                raise ValueError(f"{folder}: dumps of steps 0 .. {steps - 1} expected")
            atomic_write_json(cache, {"fingerprint": record["fingerprint"], "trained_k": tk, "rows": rows})
        x, z = fc.run_features(rows, tk)
        out.append(
            {
                "name": name,
                "setting": setting,
                "estimator": estimator,
                "k": k,
                "trained_k": tk,
                "seed": s,
                "x": x,
                "z": z,
                "rule": fc.rule_forecast(rows, tk),
                "j1": np.asarray(record["eval"]["j1"][:steps], np.float64),
            }
        )
    return out


def _pooled(runs: list, horizon: int):
    """`(x, z, rule, y, run_ids)` of every step with an outcome `horizon` steps later."""
    from sim.studies.forecast import event_labels

    parts = []
    for i, run in enumerate(runs):
        y = event_labels(run["j1"], horizon)
        m = y.size
        parts.append((run["x"][:m], run["z"][:m], run["rule"][:m], y, np.full(m, i)))
    return tuple(np.concatenate(c) for c in zip(*parts))


def fit(runs: list, horizons=fc.HORIZONS, *, shuffle_key=None, features=fc.FEATURES) -> dict:
    """The coefficients record: per horizon the logistic model and the base rate of the fit runs.

    With `shuffle_key` (the control), the outcomes are permuted over all the fit steps of all runs
    first: the base rate stays, any tie between features and outcomes (within or between runs) goes,
    so the forecast fitted on them has no skill to find.
    """
    from sim.studies.forecast import fit_logistic

    columns = [fc.FEATURES.index(name) for name in features]
    models = {}
    for horizon in horizons:
        x, _, _, y, _ = _pooled(runs, horizon)
        x = x[:, columns]
        if shuffle_key is not None:
            y = y[np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, horizon), y.size))]
        model = fit_logistic(x, y, ridge=RIDGE)
        models[str(horizon)] = {**model, "base_rate": float(y.mean()), "n": int(y.size)}
    return {
        "features": list(features),
        "window": fc.WINDOW,
        "ridge": RIDGE,
        "event": "exact evaluation pass@1 at step t + T below its value at step t",
        "fit_runs": [
            {key: run[key] for key in ("name", "setting", "estimator", "k", "trained_k", "seed")} for run in runs
        ],
        "models": models,
    }


def judge_runs(coefficients: dict, runs: list, *, key, n_boot: int, controls: dict | None = None) -> dict:
    """Per horizon: the forecast, the baselines and the `controls` (other fitted records by name,
    each on its own features) scored on `runs` (:func:`sim.studies.forecast.judge`)."""
    from sim.studies.forecast import judge, predict_logistic

    out = {}
    for horizon, model in coefficients["models"].items():
        x, z, rule, y, run_ids = _pooled(runs, int(horizon))
        base = model["base_rate"]
        forecasts = {
            "logistic": predict_logistic(model, x),
            "base_rate": np.full(y.size, base),
            "rule": rule,
            "naive": fc.naive_forecast(z),
        }
        for name, record in (controls or {}).items():
            columns = [fc.FEATURES.index(f) for f in record["features"]]
            forecasts[name] = predict_logistic(record["models"][horizon], x[:, columns])
        scores = judge(forecasts, y, run_ids, base, key=jax.random.fold_in(key, int(horizon)), n_boot=n_boot)
        out[horizon] = {
            "n": int(y.size),
            "events": int(y.sum()),
            "runs": len(runs),
            "base_rate": base,
            "scores": scores,
        }
    return out


def _interval(cell) -> str:
    return f"{cell['value']:.3f} [{cell['lower']:.3f}, {cell['upper']:.3f}]"


def study(*, quick: bool, seed: int, outdir: Path, key, progress=None) -> tuple[dict, dict]:
    """Make the runs, fit on the fit runs, judge on the judge runs; `(results, coefficients)`."""
    size = DESIGN["quick" if quick else "full"]
    fit_runs = run_table(size["fit"], seed=seed, n_answers=size["n_answers"], outdir=outdir, progress=progress)
    judge_set = run_table(size["judge"], seed=seed, n_answers=size["n_answers"], outdir=outdir, progress=progress)
    ahead = size["horizons"]
    coefficients = fit(fit_runs, ahead)
    key_shuffle, key_judge = jax.random.split(key)
    controls = {
        "shuffled": fit(fit_runs, ahead, shuffle_key=key_shuffle),
        "no_k_star": fit(fit_runs, ahead, features=WITHOUT_K_STAR),
    }
    horizons = judge_runs(coefficients, judge_set, key=key_judge, n_boot=size["n_boot"], controls=controls)
    design = {
        part: {**size[part], "seeds": [seed + s for s in size[part]["seeds"]], "trainers": size[part]["trainers"]}
        for part in ("fit", "judge")
    }
    results = {
        "design": json.loads(
            json.dumps({**design, "n_answers": size["n_answers"], "n_boot": size["n_boot"], "horizons": ahead})
        ),
        "judge_runs": [run["name"] for run in judge_set],
        "coefficients": coefficients,
        "horizons": horizons,
        "goal": {"skill_at_least": 0.3, "ece_at_most": 0.05},
    }
    head = {}
    for horizon, h in horizons.items():
        for name, s in h["scores"].items():
            label = LABELS[name]
            head[f"T={horizon} {label}: Brier skill over the fit base rate [95% over runs]"] = _interval(s["skill"])
            head[f"T={horizon} {label}: Brier skill over the judged steps' own event share"] = _interval(s["skill_own"])
            head[f"T={horizon} {label}: ECE"] = _interval(s["ece"])
        head[f"T={horizon}: judged steps (events), runs"] = f"{h['n']} ({h['events']}), {h['runs']}"
    results["headline"] = head
    return results, coefficients
