"""`passk reproduce`: compute every headline result, draw its figure, record the numbers.

Parts run in the order given (by default theory, bandit, transformer, ksweep, sampled, trainers;
`safe`, `lm` and `forecast` only when named). After each part, `figures/results.json` is rewritten atomically with the
numbers of every finished part, so an interrupted run loses at most the part in progress;
`--resume` skips parts already recorded with the same settings whose figure files all exist, and
lets the transformer part continue from its checkpoints (`figures/.checkpoints/`). Without
`--resume` every part is recomputed from scratch.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

import theory
from sim.files import atomic_write_json
from sim.train import RECORD_NAMES as R

#: The parts `passk reproduce` runs by default, in order.
PARTS = ("theory", "bandit", "transformer", "ksweep", "sampled", "trainers")
#: Parts run only when named (`--parts safe`): the transformer's conflict-safe updates (about 6
#: minutes at full size on 2 CPU cores, 1-2 with --quick).
OPTIONAL_PARTS = ("safe", "lm", "forecast")
ALL_PARTS = PARTS + OPTIONAL_PARTS


class Progress:
    """Timestamped status lines on stderr (stdout keeps the results table)."""

    def __init__(self, stream=sys.stderr):
        self.start = time.perf_counter()
        self.stream = stream

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=self.stream, flush=True)


def theory_results() -> dict:
    """The numbers behind the theory figures, all from `theory` closed forms."""
    p = np.linspace(0.0, 1.0, 201)
    ks = [1, 2, 4, 8, 16, 64]
    weights = {"p": p.tolist(), "k": ks, "w": [np.asarray(theory.pass_at_k_weight(p, k)).tolist() for k in ks]}

    p_prompts = np.array([0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9])
    k_grid = np.unique(np.round(np.logspace(0, 4, 41)).astype(np.int64))
    omega = np.asarray(theory.normalized_weights(p_prompts, k_grid))
    concentration = {"p": p_prompts.tolist(), "k": k_grid.tolist(), "omega": omega.tolist()}

    # Two groups with explicit gradient directions: the easy group's gradient along e_1, the
    # hard group's at an obtuse angle to it, so the hard group interferes negatively.
    q, p_hard, p_easy = 0.2, 0.1, 0.7
    grads = np.array([[-0.6, 0.8], [1.0, 0.0]])  # rows: hard, easy
    mu = np.array([q, 1 - q])
    p_groups = np.array([p_hard, p_easy])
    a = np.asarray(theory.agreement_scores(grads, mu))
    k_two = np.arange(1, 33)
    two_group = {
        "q": q,
        "p_hard": p_hard,
        "p_easy": p_easy,
        "grads": grads.tolist(),
        "agreement": a.tolist(),
        "k": k_two.tolist(),
        "inner_product": np.asarray(theory.conflict_inner_product(p_groups, a, k_two, mu)).tolist(),
        "weighted_mean_agreement": np.asarray(theory.weighted_mean_agreement(p_groups, a, k_two, mu)).tolist(),
        "cosine": np.asarray(theory.gradient_cosine(grads, p_groups, k_two, mu)).tolist(),
        "threshold": theory.two_group_conflict_threshold(q, p_hard, a[0], p_easy, a[1]),
        "k_star_closed_form": theory.two_group_critical_k(q, p_hard, a[0], p_easy, a[1]),
        "k_star_search": theory.critical_k(p_groups, a, mu),
    }
    headline = {
        "two-group k* (closed form)": two_group["k_star_closed_form"],
        "two-group k* (exact search)": two_group["k_star_search"],
        "two-group cos_k at k*": two_group["cosine"][two_group["k_star_closed_form"] - 1],
    }
    return {"weights": weights, "concentration": concentration, "two_group": two_group, "headline": headline}


def _run_theory(*, quick, key, outdir, progress, resume):
    from passk.plots import theory as plots

    results = theory_results()
    return results, plots.draw(results, outdir)


def _share_text(iv, digits=3) -> str:
    """A share or mean with its interval and count: `"0.381 [0.354, 0.408] of 1256"`."""
    return f"{iv['value']:.{digits}f} [{iv['lower']:.{digits}f}, {iv['upper']:.{digits}f}] of {iv['n']}"


def bandit_headline(results: dict) -> dict:
    """The bandit numbers worth a line in the summary table.

    Read from the JSON of `sim.studies.confirmations.run_all`.
    """
    toy, crit, one = results["toy"], results["critical_k"], results["one_step"]
    dyn = results["dynamics"]
    plain = dyn["runs"]["exact/sgd"]["passk"]
    index = {k: i for i, k in enumerate(plain["ks"])}
    j1_hi = plain[R.j1]["mean"][index[dyn["k_high"]]]
    j1_lo = plain[R.j1]["mean"][index[dyn["k_low"]]]
    head = {
        "toy k* at the start": toy["k_star"],
        f"toy cos_k at k={toy['k']}": toy["cos"],
        "k* predicted = first autodiff conflict": (
            f"{crit['n_match']}/{crit['n_regimes']} regimes (mismatch rate <= {crit['mismatch_rate']['upper']:.3f})"
        ),
        f"phase diagram: area in conflict (mean over {results['phase_diagram']['n_seeds']} seeds)": _share_text(
            results["phase_diagram"]["area_in_conflict"]
        ),
        "one plain step in the window: J_1 down and J_k up": _share_text(one["sgd"]["share_both"]),
        "one Adam step: J_1 down": _share_text(one["adam"]["share_pass1_down"]),
    }
    loose = one.get("window_looseness", {})
    if "both" in loose:
        med = loose["both"]["median"]
        head["window looseness: median largest working step / window's step"] = (
            f"{med['value']:.0f} [{med['lower']:.0f}, {med['upper']:.0f}] of {med['n']}"
        )
    adam = one.get("adam_predictors", {})
    if "rules" in adam:
        head["Adam raises J_1 iff |g_1|-weighted sign agreement > 1/2: accuracy"] = _share_text(
            adam["rules"]["weighted_sign_agreement"]
        )
    head[f"pass@{dyn['k_high']} ascent (k > k*={dyn['k_star0']}), exact: J_1 start -> end"] = (
        f"{j1_hi[0]:.3f} -> {j1_hi[-1]:.3f}"
    )
    head[f"pass@{dyn['k_low']} ascent (k < k*), exact: J_1 start -> end"] = f"{j1_lo[0]:.3f} -> {j1_lo[-1]:.3f}"
    for name, run in dyn["runs"].items():
        if name.startswith("exact/"):
            continue
        r = run["passk"]
        i = index[dyn["k_high"]]
        head[f"pass@{dyn['k_high']} ascent, {name}, {r['n_seeds']} seeds: J_1 end (95% t interval)"] = (
            f"{r[R.j1]['mean'][i][-1]:.3f} [{r[R.j1]['lower'][i][-1]:.3f}, {r[R.j1]['upper'][i][-1]:.3f}]"
        )
    return head


def _run_bandit(*, quick, key, outdir, progress, resume):
    from passk import presets
    from passk.plots import bandit as plots
    from sim.studies import confirmations, serialise

    results = serialise.to_json(confirmations.run_all(sizes=presets.preset(quick).bandit, key=key, progress=progress))
    results["meta"] = {"quick": quick, **results["meta"]}
    results["headline"] = bandit_headline(results)
    return results, plots.draw(results, outdir)


def transformer_headline(results: dict) -> dict:
    """The transformer numbers worth a line in the summary table."""
    head = {
        "transformer k* predicted (all parameters, JVP)": results["k_star_predicted"],
        "transformer k* from the last-layer proxy": results["last_layer_k_star"],
        "last-layer proxy: agreement signs right": _share_text(results["last_layer_sign_agreement"]),
        "JVP vs per-prompt agreement, max abs error": results["agreement_jvp_vs_pergrad_max_abs_err"],
    }
    for run in results["runs"]:
        if run["seed"] == 0 and run["k"] > 1:
            side = ">= k*" if run["k_ge_k_star"] else "< k*"
            head[f"{run['name']} (k {side}): pass@1, pass@k before -> after"] = (
                f"{run['pass1_before']:.3f} -> {run['pass1_after']:.3f}, "
                f"{run['passk_before']:.3f} -> {run['passk_after']:.3f}"
            )
    return head


def _run_transformer(*, quick, key, outdir, progress, resume):
    from passk import presets
    from passk.plots import transformer as plots
    from sim.studies import transformer_experiment

    chosen = presets.preset(quick)
    checkpoints = outdir / ".checkpoints" / chosen.name
    if not resume and checkpoints.exists():
        shutil.rmtree(checkpoints)  # a fresh run recomputes; only --resume continues a killed one
    results = {
        "quick": quick,
        **transformer_experiment.run_experiment(
            config=chosen.transformer, key=key, checkpoint_dir=checkpoints, progress=progress
        ),
    }
    results["headline"] = transformer_headline(results)
    return results, plots.draw(results, outdir)


def sampled_headline(results: dict) -> dict:
    """The `sampled` part's headline: `k*` recovered from answers, unbiased against plug-in."""
    head = {}
    for name, study in (
        ("toy", results["toy"]),
        ("transformer", results["transformer"]["all_parameters"]),
        ("transformer, last layer", results["transformer"]["last_layer"]),
        ("transformer, sketch", results["transformer"]["sketch"]),
    ):
        for e in study["by_n"]:
            if e["n"] in (8, 32):
                head[f"{name} n={e['n']}: median k* unbiased / plug-in (exact {study['k_star_exact']})"] = (
                    f"{e['unbiased']['median']} / {e['plugin']['median']}"
                )
                for kind in ("prompts", "answers"):
                    cov, up = e["unbiased"][kind]["coverage"], e["unbiased"][kind]["upper_established"]
                    head[f"{name} n={e['n']}, stderr over {kind}: interval covers k*, upper end established"] = (
                        f"{cov['value']:.3f} [{cov['lower']:.3f}, {cov['upper']:.3f}], "
                        f"{up['value']:.3f} [{up['lower']:.3f}, {up['upper']:.3f}] of {cov['n']}"
                    )
    band = results.get("band")
    if band:
        for rule in ("pointwise", "bonferroni", "max_t"):
            cov = band[rule]["coverage"]
            head[f"band instance (k* = {band['k_star_exact']}), {rule}: k* interval covers k*"] = (
                f"{cov['value']:.3f} [{cov['lower']:.3f}, {cov['upper']:.3f}] of {cov['n']}"
            )
    return head


def _run_sampled(*, quick, key, outdir, progress, resume):
    from passk import presets
    from passk.plots import sampled as plots
    from sim.studies import band_coverage, recovery, transformer_recovery

    chosen = presets.preset(quick)
    ns, repeats = chosen.sampled_ns, chosen.sampled_repeats
    results = {
        "toy": recovery.toy_recovery(key=jax.random.fold_in(key, 100), ns=ns, repeats=repeats),
        # the transformer experiment's key: the same warm start as the `transformer` part
        "transformer": transformer_recovery.transformer_recovery(
            config=chosen.transformer, key=key, ns=ns, repeats=repeats, progress=progress
        ),
        # SPEC section 10: where I_k stays barely above 0 below k*, pointwise bounds against the bands
        "band": band_coverage.band_coverage(key=jax.random.fold_in(key, 200), repeats=chosen.band_repeats),
    }
    results["headline"] = sampled_headline(results)
    return results, plots.draw(results, outdir)


def trainers_headline(results: dict) -> dict:
    """Per trainer at n = 8: the share of toy regimes where its own update conflicts with pass@1."""
    head = {}
    for method, rows in results["trainer_map"].items():
        row = next(r for r in rows if r["n"] == results["grid"]["shown_n"])
        share = row["conflict_at_some_k"] if row["uses_k"] else row["conflict"]
        what = f"some k <= {row['max_k']}" if row["uses_k"] else "(no k)"
        head[f"{method}, n={row['n']}, {what}: toy regimes in conflict"] = _share_text(share)
    warm = results.get("transformer_warm_start")
    if warm:
        for method, rows in warm.items():
            row = next(r for r in rows if r["n"] == results["grid"]["shown_n"])
            value = row["conflict"] if "conflict" in row else row["critical_k"]
            head[
                f"{method}, n={row['n']}, transformer warm start: "
                + ("conflict" if "conflict" in row else "critical k")
            ] = value
    return head


def _run_trainers(*, quick, key, outdir, progress, resume, record=None):
    from passk import presets
    from passk.plots import trainers as plots
    from sim.studies import serialise, trainer_map

    result = trainer_map.trainer_map(key=jax.random.fold_in(key, 200), **presets.preset(quick).trainer_map)
    results = serialise.trainer_map_json(result, shown_n=8)
    warm = (record or {}).get("transformer", {}).get("results", {}).get("warm_start")
    # The transformer part's warm start (uniform prompt weights), when that part has run.
    results["transformer_warm_start"] = (
        trainer_map.trainer_conflicts(warm["p"], warm["agreement"], group_sizes=result.group_sizes) if warm else None
    )
    results["headline"] = trainers_headline(results)
    return results, plots.draw(results, outdir)


def safe_headline(results: dict) -> dict:
    """Per rule, SGD and Adam, exact and sampled, `k` above `k*`: final pass@1 and pass@k, and falls."""
    head = {"safe: L_1 estimate (measured at the warm start, x2)": results["smoothness"]["smoothness"]}
    for g in results["groups"]:
        if g["k_role"] != "high":
            continue
        a, b = g["final_pass1"], g["final_passk"]
        head[f"safe: {g['optimizer']} {g['estimator']} k={g['k']} {g['label']}: final pass@1, pass@k; pass@1 falls"] = (
            f"{a['value']:.3f} [{a['lower']:.3f}, {a['upper']:.3f}], {b['value']:.3f} [{b['lower']:.3f}, "
            f"{b['upper']:.3f}]; {sum(g['pass1_fall_steps'])}"
        )
    return head


def _run_safe(*, quick, key, outdir, progress, resume):
    from passk import presets
    from passk.plots import safe as plots
    from sim.studies import transformer_safe

    # The transformer part's checkpoint folder: its warm start (same key and settings) is reused.
    checkpoints = outdir / ".checkpoints" / ("quick" if quick else "full")
    results = {
        "quick": quick,
        **transformer_safe.safe_update_study(
            config=presets.preset(quick).safe, key=key, checkpoint_dir=checkpoints, progress=progress
        ),
    }
    results["headline"] = safe_headline(results)
    return results, plots.draw(results, outdir)


def ksweep_headline(results: dict) -> dict:
    """The k sweep's verdicts: does pass@1 fall over the first steps iff `k >= k*` at the start?"""
    summary = results["summary"]
    head = {}
    scopes = [("all", summary["counts"], summary["exact_counts"])] + [
        (task, counts, summary["exact_by_task"][task]) for task, counts in summary["by_task"].items()
    ]
    for scope, sampled, exact in scopes:
        head[f"k sweep ({scope}): agree / disagree / inconclusive, sampled; exact"] = (
            f"{sampled['agree']} / {sampled['disagree']} / {sampled['inconclusive']}; "
            f"{exact['agree']} / {exact['disagree']} / {exact['inconclusive']} of {sampled['rows']}"
        )
    for ws in results["warm_starts"]:
        head[f"k sweep {ws['task']}, warm start {ws['warm_start']}: k*, last-layer proxy k*"] = (
            f"{ws['k_star']}, {ws['last_layer_k_star']}"
        )
    return head


def _run_ksweep(*, quick, key, outdir, progress, resume):
    from passk import presets
    from passk.plots import ksweep as plots
    from sim.studies import transformer_ksweep

    results = {
        "quick": quick,
        **transformer_ksweep.ksweep_study(config=presets.preset(quick).ksweep, key=key, progress=progress),
    }
    results["headline"] = ksweep_headline(results)
    return results, plots.draw(results, outdir)


def _run_lm(*, quick, key, outdir, progress, resume):
    from passk import lm

    # `passk lm --seed S` runs are named by S: `key(S)` holds S as its last word
    return lm.study(quick=quick, seed=int(jax.random.key_data(key)[-1]), outdir=outdir, progress=progress)


def _run_forecast(*, quick, key, outdir, progress, resume):
    from passk import forecast_study
    from passk.plots import forecast as plots

    seed = int(jax.random.key_data(key)[-1])  # the runs are `passk lm --seed S` runs, as in the lm part
    results, coefficients = forecast_study.study(quick=quick, seed=seed, outdir=outdir, key=key, progress=progress)
    coefficients_path = Path(outdir) / "forecast_coefficients.json"
    atomic_write_json(coefficients_path, coefficients)
    return results, plots.draw(results, outdir) + [coefficients_path]


RUNNERS: dict[str, Callable] = {
    "theory": _run_theory,
    "bandit": _run_bandit,
    "transformer": _run_transformer,
    "ksweep": _run_ksweep,
    "sampled": _run_sampled,
    "trainers": _run_trainers,
    "safe": _run_safe,
    "lm": _run_lm,
    "forecast": _run_forecast,
}


def load_results(path: Path) -> dict:
    """The record in `path` (`{}` when there is none); ValueError naming the file when unreadable.

    Every part's entry must be an object with `settings` (an object), `figures` (a list of file
    names) and `results` (an object); a part entry of another shape is refused like an unreadable
    file (the file is left as it is, for the user to inspect).
    """
    if not path.exists():
        return {}
    what_to_do = "delete it, or run without --resume to recompute every part"
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path} ({err}); {what_to_do}") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a JSON {type(record).__name__}, not a results record; {what_to_do}")
    for part in ALL_PARTS:
        entry = record.get(part)
        if entry is not None and not _is_part_entry(entry):
            raise ValueError(
                f"{path}: the entry of part {part!r} ({json.dumps(entry)[:60]}) is not a part's record "
                f"(an object with settings, figures and results); {what_to_do}"
            )
    return record


def _is_part_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("settings"), dict)
        and isinstance(entry.get("results"), dict)
        and isinstance(entry.get("figures"), list)
        and all(isinstance(name, str) for name in entry["figures"])
    )


def _rerun_reason(entry: dict | None, settings: dict, outdir: Path) -> str | None:
    """Why `--resume` runs a part again (None: its results and every one of its figure files exist)."""
    if entry is None:
        return "not in results.json"
    if entry["settings"] != settings:
        return f"recorded with other settings {entry['settings']}"
    missing = [name for name in entry["figures"] if not (outdir / name).is_file()]
    if missing:
        return f"figure file{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}"
    return None


def _make_outdir(outdir: Path) -> None:
    """Create the output folder; ValueError naming it when that cannot be done."""
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"output folder {outdir} is an existing file; pass --out a folder path")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"cannot create the output folder {outdir} ({err.strerror or err}); pass --out a folder that can be created"
        ) from err


def reproduce(*, outdir: Path, quick: bool, seed: int, parts=PARTS, resume: bool = False, progress=None) -> dict:
    """Run `parts`, draw their figures into `outdir`, write `outdir/results.json`; return it."""
    progress = progress or Progress()
    outdir = Path(outdir)
    _make_outdir(outdir)
    results_path = outdir / "results.json"
    record = load_results(results_path) if resume else {}
    settings = {"quick": quick, "seed": seed}
    for part in parts:
        if part not in RUNNERS:
            raise ValueError(f"unknown part {part!r}; choose from {ALL_PARTS}")
        reason = _rerun_reason(record.get(part), settings, outdir) if resume else None
        if resume and reason is None:
            progress(f"{part}: already in {results_path} with its figures, skipped (--resume)")
            continue
        progress(f"{part}: running ({'quick' if quick else 'full'} size)" + (f"; {reason}" if reason else ""))
        t0 = time.perf_counter()
        key = jax.random.key(seed)  # the same key as `passk transformer --seed` / `passk toy --seed`
        extra = {"record": record} if part == "trainers" else {}
        results, paths = RUNNERS[part](quick=quick, key=key, outdir=outdir, progress=progress, resume=resume, **extra)
        seconds = time.perf_counter() - t0
        record[part] = {
            "settings": settings,
            "seconds": seconds,
            "figures": [str(p.relative_to(outdir)) for p in paths],
            "results": results,
        }
        atomic_write_json(results_path, record)
        progress(f"{part}: done in {seconds:.1f}s, {len(paths)} figure files")
    return record


def headline_table(record: dict) -> str:
    """A short text table of every part's headline numbers."""
    rows = []
    for part in ALL_PARTS:
        entry = record.get(part)
        if not entry:
            continue
        for name, value in entry["results"].get("headline", {}).items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            rows.append((part, name, str(value)))
    if not rows:
        return "(no results)"
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'part':<{w0}}  {'quantity':<{w1}}  value", f"{'-' * w0}  {'-' * w1}  -----"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
