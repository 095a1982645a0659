"""`passk diagnose` against the exact truth on the miniature LLM run.

A run folder of `passk lm` holds per-step dumps (what a practitioner has) and `run.json` with the
exact evaluation at every step (what nobody has in a real run). :func:`diagnose_lm_run` reads every
dump with :func:`passk.runs.diagnose_run` -- the section 11 `"population"` estimate from the
alignments, and the section 10 `"batch"` estimate where the dumps hold sketched score vectors --
and compares each step with the exact values at the parameters that drew the step's batch:

- `inner_covered`: the exact `I_k` at the run's `k` lies in `I_k_hat +- q se`, `q` the pointwise
  t quantile (`F - 1` degrees of freedom for the population estimate, normal for the batch one);
  `degenerate`: `se = 0`, which happens when every group's answers all pass or all fail (no
  answer carries gradient weight: the estimate is exactly 0 and the interval a point);
- `k_star_covered`: the exact `k*` lies in the `k*` interval (a missing lower end reads as
  `k_max + 1`, a missing upper end as infinity, an exact "none up to 1000" as infinity); None
  where the step has no reading (`I_1` not established positive);
- `conflict`: the exact `k* <= k` (the trained `k`); `established`: the `k*` interval's upper
  end is `<= k`; `negative`: the one test `I_k < 0` at the trained `k` (upper bound below 0).

What the exact values are. They are those of the held-out evaluation set: `n_eval` prompts
(64 at the default sizes) with exactly `round(q n_eval)` hard ones, a stratified sample of the
population the batches are drawn from, weighted uniformly. Section 11 estimates the population's
`I_k`; section 10 estimates the batch's own `I_k` (its self term included). Neither estimand is the
evaluation set's, so coverage here mixes the intervals' own error with the gap between estimands;
:func:`estimand_gap` measures that gap at a run's final parameters.

:func:`summarise` pools runs: shares over steps with Wilson intervals and counts, and, because
the steps of one run are dependent, a t interval over runs of the per-run shares.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import numpy as np

__all__ = ["diagnose_lm_run", "estimand_gap", "report", "step_check", "summarise"]


def _k_star_covers(crit: dict, exact) -> bool:
    """Whether the `k*` interval holds the exact `k*` (None: none found, read as infinity)."""
    lower = crit["lower"] if crit["lower"] is not None else crit["k_max"] + 1
    upper = crit["upper"] if crit["upper"] is not None else math.inf
    value = math.inf if exact is None else exact
    return bool(lower <= value <= upper)


def step_check(row: dict, exact: dict, *, trained_k: int, quantile: float) -> dict:
    """One step's estimates (a :func:`passk.runs.step_row`) against its exact record.

    Args:
      row: the step's row of :func:`passk.runs.diagnose_run` (with `inner` at `trained_k`).
      exact: the step's record of `run.json` (`inner`: the exact `I_k` at `trained_k`; `k_star`).
      trained_k: the run's `k`.
      quantile: the pointwise quantile `q` of the `I_k` interval `I_k_hat +- q se`.

    Returns:
      `{step, exact_inner, estimate, lower, upper, inner_covered, degenerate, exact_k_star, k_star,
      k_star_covered, conflict, established, negative}` (module docstring).
    """
    cell = next((c for c in row["inner"] if c["k"] == trained_k), None)
    out = {"step": row["step"], "exact_inner": float(exact["inner"]), "exact_k_star": exact["k_star"]}
    if cell is None:
        out.update(estimate=None, lower=None, upper=None, inner_covered=None, negative=None, degenerate=None)
    else:
        lower = cell["estimate"] - quantile * cell["stderr"]
        upper = cell["estimate"] + quantile * cell["stderr"]
        out.update(
            estimate=cell["estimate"],
            lower=lower,
            upper=upper,
            inner_covered=bool(lower <= exact["inner"] <= upper),
            negative=bool(upper < 0),
            degenerate=bool(cell["stderr"] == 0),
        )
    crit = row["k_star"]
    reading = crit is not None and crit.get("signal") is True
    out["k_star"] = None if crit is None else {key: crit[key] for key in ("estimate", "lower", "upper", "k_max")}
    out["k_star_covered"] = _k_star_covers(crit, exact["k_star"]) if reading else None
    out["conflict"] = exact["k_star"] is not None and exact["k_star"] <= trained_k
    out["established"] = bool(reading and crit["upper"] is not None and crit["upper"] <= trained_k)
    return out


def diagnose_lm_run(path, *, level: float = 0.95) -> dict:
    """Every step of a `passk lm` run folder, each estimate against the exact values.

    Args:
      path: the run folder (`run.json` and the step dumps).
      level: the level of every interval, in `(0, 1)`.

    Returns:
      A dict with `run`, `setting`, `seed`, `estimator`, `k`, `sketch_dim`, `level` and
      `sections`: per section (`population`, and `batch` with a sketch) a list of step checks.
    """
    from passk.frameworks import Options
    from passk.runs import diagnose_run
    from theory.bands import t_quantile

    path = Path(path)
    if not (path / "run.json").is_file():
        raise ValueError(f"path {path} holds no run.json of passk lm")
    run = json.loads((path / "run.json").read_text())
    k = int(run["config"]["k"])
    exact = {r["step"]: r for r in run["records"]}
    sections = ["population"] + (["batch"] if run.get("sketch_dim") else [])
    out = {
        "run": path.name,
        "setting": run["setting"],
        "seed": run["seed"],
        "estimator": run["config"]["estimator"],
        "k": k,
        "sketch_dim": run.get("sketch_dim", 0),
        "level": level,
        "sections": {},
    }
    for section in sections:
        # the reward is in `acc` in every dump (`score` holds the sketch where there is one)
        report = diagnose_run(
            path, options=Options(reward_field="acc"), ks=[k], level=level, trained_k=k, section=section
        )
        dof = int(run["config"]["n_folds"]) - 1 if section == "population" else None
        q = t_quantile(level, dof)
        out["sections"][section] = [
            step_check(row, exact[row["step"]], trained_k=k, quantile=q)
            for row in report["steps"]
            if row["step"] in exact
        ]
    return out


def _share(flags, level) -> dict:
    from sim.intervals import wilson_interval

    flags = [bool(f) for f in flags]
    if not flags:
        return {"value": None, "lower": None, "upper": None, "n": 0, "count": 0}
    return {**wilson_interval(sum(flags), len(flags), level), "count": int(sum(flags))}


def _over_runs(per_run, level) -> dict | None:
    from sim.intervals import mean_interval

    shares = [sum(f) / len(f) for f in per_run if f]
    return mean_interval(shares, level) if shares else None


def _pooled(checks_by_run, level) -> dict:
    """Coverage, power and false alarms over the steps of several runs (module docstring)."""
    measures = {
        "inner_coverage": lambda c: c["inner_covered"] if c["degenerate"] is False else None,
        "inner_coverage_all": lambda c: c["inner_covered"],
        "k_star_coverage": lambda c: c["k_star_covered"],
        "power": lambda c: c["established"] if c["conflict"] else None,
        "power_one_test": lambda c: c["negative"] if c["exact_inner"] < 0 and c["negative"] is not None else None,
        "false_alarm": lambda c: c["established"] if not c["conflict"] else None,
    }
    out = {}
    for name, pick in measures.items():
        per_run = [[pick(c) for c in checks if pick(c) is not None] for checks in checks_by_run]
        flat = [f for run in per_run for f in run]
        out[name] = {"steps": _share(flat, level), "runs": _over_runs(per_run, level)}
        out[name]["runs_with_steps"] = sum(1 for run in per_run if run)
    out["steps"] = sum(len(c) for c in checks_by_run)
    out["no_reading"] = sum(1 for checks in checks_by_run for c in checks if c["k_star_covered"] is None)
    out["degenerate"] = sum(1 for checks in checks_by_run for c in checks if c["degenerate"])
    return out


def summarise(diagnoses: list, *, level: float = 0.95) -> dict:
    """Pool :func:`diagnose_lm_run` results per section, overall and per trainer.

    Each measure (`inner_coverage` over steps with `se > 0`, `inner_coverage_all` over every step,
    `k_star_coverage`, `power` over steps with the exact
    `k* <= k`, `power_one_test` over steps with the exact `I_k < 0`, `false_alarm` over steps with
    the exact `k* > k`) is `{"steps": Wilson share with "count" and "n", "runs": t interval of the
    per-run shares (None without runs), "runs_with_steps"}`; `no_reading` counts steps without a
    `k*` reading (they are left out of `k_star_coverage` and counted as not established),
    `degenerate` the steps with `se = 0`.
    """
    out = {}
    for section in ("population", "batch"):
        runs = [d for d in diagnoses if section in d["sections"]]
        if not runs:
            continue
        trainers = sorted({(d["estimator"], d["k"]) for d in runs})
        out[section] = {
            "runs": len(runs),
            "all": _pooled([d["sections"][section] for d in runs], level),
            "by_trainer": {
                f"{est} k={k}": _pooled(
                    [d["sections"][section] for d in runs if (d["estimator"], d["k"]) == (est, k)], level
                )
                for est, k in trainers
            },
        }
    return out


def estimand_gap(path, *, n_eval: int = 1024, batches: int = 8, seed: int = 0) -> dict:
    """The exact `I_k` of the evaluation set against those of the population and of a batch.

    At the run's final parameters (its checkpoint): the exact `I_k` at the run's `k` and the exact
    `k*` on the run's evaluation set, on a larger stratified set of `n_eval` prompts (the
    population's value, up to its own sampling), and on `batches` fresh training batches of the
    run's size (each weighted uniformly: the batch's own `I_k`, the section 10 estimand).

    Returns:
      `{"k", "eval": {n, inner, k_star}, "large": {...}, "batch": {"inner": [...], "k_star": [...]}}`.
    """
    import dataclasses

    from passk.lm import seed_key
    from sim.lm import run, train
    from sim.lm import task as lm_task
    from sim.transformer import model as _model
    from sim.transformer.checkpoint import load_checkpoint

    path = Path(path)
    record = json.loads((path / "run.json").read_text())
    task = lm_task.LMTask(**record["task"])
    cfg = dict(record["config"])
    config = train.RunConfig(**{**cfg, "model": _model.ModelConfig(**cfg["model"])})
    saved = load_checkpoint(path / run.CHECKPOINT, record["fingerprint"])
    if saved is None:
        raise ValueError(f"path {path} holds no checkpoint of its run")
    params = jax.tree_util.tree_map(jax.numpy.asarray, saved["params"])
    k = config.k

    def read(prompts):
        inner, k_star = jax.device_get(_exact_inner(params, prompts, k, config.model, task, config.k_max))
        return float(inner), (None if int(k_star) > config.k_max else int(k_star))

    out = {"k": k, "step": int(saved["step"])}
    for name, size in (("eval", task.n_eval), ("large", n_eval)):
        inner, k_star = read(lm_task.eval_prompts(dataclasses.replace(task, n_eval=size)))
        out[name] = {"n": size, "inner": inner, "k_star": k_star}
    draws = [
        read(lm_task.draw_prompts(task, config.batch_prompts, key=key))
        for key in jax.random.split(jax.random.fold_in(seed_key(seed), 25), batches)
    ]
    out["batch"] = {"n": config.batch_prompts, "inner": [d[0] for d in draws], "k_star": [d[1] for d in draws]}
    return out


@functools.partial(jax.jit, static_argnames=("model", "task", "k_max"))
def _exact_inner(params, prompts, k, model, task, k_max):
    """The exact `(I_k, k*)` of `prompts`, weighted uniformly (one compile per model, task and size)."""
    from sim.lm import policy

    ev = policy.exact_eval(params, prompts, model, task, k, curve=1, k_max=k_max)
    return ev.inner, ev.k_star


def _per_run(d: dict, section: str) -> dict:
    checks = d["sections"][section]

    def count(flags):
        flags = [f for f in flags if f is not None]
        return [int(sum(flags)), len(flags)]

    return {
        "run": d["run"],
        "section": section,
        "steps": len(checks),
        "inner_covered": count(c["inner_covered"] for c in checks if c["degenerate"] is False),
        "degenerate": sum(1 for c in checks if c["degenerate"]),
        "k_star_covered": count(c["k_star_covered"] for c in checks),
        "established_when_conflict": count(c["established"] for c in checks if c["conflict"]),
        "established_without_conflict": count(c["established"] for c in checks if not c["conflict"]),
    }


def _half_width(checks) -> float | None:
    widths = [(c["upper"] - c["lower"]) / 2 for c in checks if c["degenerate"] is False]
    return float(np.median(widths)) if widths else None


def _pct(cell: dict) -> str:
    if not cell["n"]:
        return "no steps"
    return f"{cell['value']:.0%} ({cell['count']}/{cell['n']} steps, Wilson [{cell['lower']:.0%}, {cell['upper']:.0%}])"


def _runs_pct(cell) -> str:
    return (
        ""
        if cell is None
        else f"; over {cell['n']} runs {cell['value']:.0%} [{cell['lower']:.0%}, {cell['upper']:.0%}]"
    )


def report(diagnoses: list, gaps: list, *, sketch_dim: int, level: float = 0.95) -> dict:
    """The study's record: the pooled summary, per-run counts, the sketched runs' steps, the gaps.

    Args:
      diagnoses: :func:`diagnose_lm_run` results.
      gaps: :func:`estimand_gap` results, each with its `run` (folder name).
      sketch_dim: the sketch's dimension `D` (named in the headline).
      level: the level of the pooled intervals.

    Returns:
      `{"level", "summary", "runs", "examples", "gap", "headline"}`: `summary` of :func:`summarise`;
      `runs` the per-run counts `[covered, n]`; `examples` every step of the sketched runs;
      `gap` each gap with the median half-width of the run's population `I_k` intervals beside it.
    """
    summary = summarise(diagnoses, level=level)
    by_name = {d["run"]: d for d in diagnoses}
    gap_rows = []
    for g in gaps:
        d = by_name.get(g["run"])
        gap_rows.append(
            {
                **g,
                "eval_minus_large": g["eval"]["inner"] - g["large"]["inner"],
                "population_half_width": None if d is None else _half_width(d["sections"]["population"]),
            }
        )
    headline = {}
    names = {"population": "section 11 (alignments, F = 4)", "batch": f"section 10 (sketch D = {sketch_dim})"}
    for section, pooled in summary.items():
        total = pooled["all"]
        what = f"{names[section]}, {pooled['runs']} runs"
        headline[f"{what}: exact I_k inside its {level:.0%} interval"] = (
            _pct(total["inner_coverage"]["steps"])
            + _runs_pct(total["inner_coverage"]["runs"])
            + f"; {total['degenerate']} steps with se = 0 left out"
        )
        headline[f"{what}: exact k* inside its interval (steps with a reading)"] = (
            _pct(total["k_star_coverage"]["steps"]) + f"; no reading at {total['no_reading']} of {total['steps']} steps"
        )
        headline[f"{what}: conflict established when the exact k* <= trained k (power)"] = _pct(
            total["power"]["steps"]
        ) + _runs_pct(total["power"]["runs"])
        headline[f"{what}: conflict established when the exact k* > trained k (false alarms)"] = _pct(
            total["false_alarm"]["steps"]
        )
    if gap_rows:
        diffs = np.array([abs(r["eval_minus_large"]) for r in gap_rows])
        widths = np.array(
            [np.nan if r["population_half_width"] is None else r["population_half_width"] for r in gap_rows]
        )
        spread = [float(np.std(r["batch"]["inner"], ddof=1)) for r in gap_rows if len(r["batch"]["inner"]) > 1]
        headline["estimand gap at the final parameters (median over runs)"] = (
            f"|I_k(eval, {gap_rows[0]['eval']['n']}) - I_k({gap_rows[0]['large']['n']} prompts)| = "
            f"{float(np.median(diffs)):.2g}; sd of a batch's own I_k over fresh batches = "
            f"{float(np.median(spread)) if spread else float('nan'):.2g}; "
            f"half-width of a population I_k interval = {float(np.nanmedian(widths)):.2g}"
        )
    return {
        "level": level,
        "summary": summary,
        "runs": [_per_run(d, section) for d in diagnoses for section in d["sections"]],
        "examples": [d for d in diagnoses if "batch" in d["sections"]],
        "gap": gap_rows,
        "headline": headline,
    }
