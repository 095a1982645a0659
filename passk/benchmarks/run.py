"""The benchmarks behind `passk bench`: run them and format their rows (the command prints, writes
and draws them).

Every benchmark times ours and a baseline in this process, after compilation, interleaved over
several repeats, and reports median seconds, `ratio = baseline_s / ours_s` and its target. The
JSON file is a list of rows `{name, ours_s, baseline_s, ratio, target, ...}` (extra keys: `met`,
`compile_s`, sizes, correctness checks, `device`), written atomically.
"""

from __future__ import annotations

import math
import time

import jax

__all__ = ["BENCHMARKS", "PER_RUN_KEYS", "run", "median_of_runs", "format_table", "markdown_table", "details_text"]

#: Benchmark names, in run order, and their modules (each has `bench(quick=, key=) -> list[dict]`).
BENCHMARKS = {
    "bandit-sweep": "passk.benchmarks.bandit_sweep",
    "agreement": "passk.benchmarks.agreement",
    "probe": "passk.benchmarks.probe",
    "lm": "passk.benchmarks.lm",
    "estimators": "passk.benchmarks.estimators",
    "sampled": "passk.benchmarks.sampled",
    "diagnose": "passk.benchmarks.diagnose",
    "diagnose-run": "passk.benchmarks.run_scale",
    "scaling": "passk.benchmarks.scaling",
    "multi-device": "passk.benchmarks.multi_device",
    "start": "passk.benchmarks.start",
}


def run(*, quick: bool, only: list[str] | None = None, seed: int = 0) -> list[dict]:
    """Run the selected benchmarks (all when `only` is None) and return their rows."""
    import importlib

    names = list(BENCHMARKS) if not only else list(only)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    keys = dict(zip(BENCHMARKS, jax.random.split(jax.random.key(seed), len(BENCHMARKS))))
    rows = []
    for name in names:
        start = time.perf_counter()
        module = importlib.import_module(BENCHMARKS[name])
        for r in module.bench(quick=quick, key=keys[name]):
            r.setdefault("wall_s", time.perf_counter() - start)
            rows.append(r)
    return rows


#: Quantities a target may be set on besides the ratio; :func:`median_of_runs` keeps each run's value
#: (`<key>_runs`) so that the table shows their median, which the row picked by its ratio need not have.
PER_RUN_KEYS = (
    "exponent_upper",
    "exponent",
    "ours_over_hardware",
    "ours_over_minimal",
    "ours_over_floor",
    "statistics_over_floor",
)


def _middle(count: int) -> int:
    """Index of the median of `count` sorted values (the lower middle for an even count)."""
    return (count - 1) // 2


def _median(values) -> float:
    return sorted(values)[_middle(len(values))]


def median_of_runs(runs: list[list[dict]]) -> list[dict]:
    """One row per benchmark from several full runs: the run whose ratio is the median, with the
    spread over runs.

    For each name (in the first run's order) the row of the run with the median `ratio` is kept
    (an odd number of runs: the middle one; even: the lower middle), with `runs` (their count),
    `ratio_min`, `ratio_max` and `met_runs` (how many runs met the target). `met` is whether more
    than half of the runs met it: for a one-sided target on any one quantity (a ratio, or a time
    such as "under 2 s"), that is whether the median of that quantity meets it, even where the
    quantity is not the ratio the row was picked by. Each key of :data:`PER_RUN_KEYS` that every
    run reports is also kept as a list over runs (`exponent_upper_runs`, ...).

    Args:
      runs: the rows of each run (:func:`run`), the same benchmarks in each.

    Returns:
      The combined rows.
    """
    if not runs or any(not isinstance(rows, list) for rows in runs):
        raise ValueError(f"runs must be a non-empty list of row lists; got {type(runs).__name__}")
    names = [r["name"] for r in runs[0]]
    by_name = [{r["name"]: r for r in rows} for rows in runs]
    missing = [(i, n) for i, rows in enumerate(by_name) for n in names if n not in rows]
    if missing:
        raise ValueError(f"every run must have the same benchmarks; run {missing[0][0]} lacks {missing[0][1]!r}")
    out = []
    for name in names:
        rows = [rows[name] for rows in by_name]
        ratios = [r["ratio"] for r in rows]
        finite = [x for x in ratios if x is not None and math.isfinite(x)]
        order = sorted(
            range(len(rows)),
            key=lambda i: (
                ratios[i] is None or not math.isfinite(ratios[i]),
                ratios[i] if ratios[i] is not None else 0.0,
            ),
        )
        middle = dict(rows[order[_middle(len(rows))]])
        middle.update(
            runs=len(rows),
            ratio_min=min(finite) if finite else None,
            ratio_max=max(finite) if finite else None,
            met_runs=sum(bool(r.get("met")) for r in rows) if any(r.get("met") is not None for r in rows) else None,
        )
        if middle["met_runs"] is not None:
            middle["met"] = 2 * middle["met_runs"] > len(rows)
        for key in PER_RUN_KEYS:
            if all(isinstance(r.get(key), (int, float)) for r in rows):
                middle[f"{key}_runs"] = [float(r[key]) for r in rows]
        out.append(middle)
    return out


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.4g}"


def format_table(rows: list[dict]) -> str:
    """Plain-text table: name, ours_s, baseline_s, ratio, target, met."""
    header = ("benchmark", "ours_s", "baseline_s", "ratio", "target", "met")
    body = [
        (
            r["name"],
            _fmt(r["ours_s"]),
            _fmt(r["baseline_s"]),
            _fmt(r["ratio"]),
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r.get("met")],
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The README's table: name, ours (s), baseline (s), ratio (with the scaling exponents), target, met.

    `python -c "import json, benchmarks.run as r; print(r.markdown_table(json.load(open(PATH))))"`.
    """
    lines = ["| benchmark | ours (s) | baseline (s) | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3g}"
        if r.get("runs", 1) > 1 and r.get("ratio_min") is not None:
            ratio += f" [{r['ratio_min']:.3g}, {r['ratio_max']:.3g}]"
        if "exponent_upper_runs" in r:
            # the target is on the exponent: its median and range over runs, not the picked run's
            ups, alls = r["exponent_upper_runs"], r["exponent_runs"]
            ratio += (
                f" (exponent {_median(ups):.2f} [{min(ups):.2f}, {max(ups):.2f}] largest {r['fit_points']},"
                f" {_median(alls):.2f} all)"
            )
        elif "exponent_upper" in r:
            ratio += f" (exponent {r['exponent_upper']:.2f} largest {r['fit_points']}, {r['exponent']:.2f} all)"
        met = {True: "yes", False: "no", None: "-"}[r.get("met")]
        if r.get("met_runs") is not None and r.get("runs", 1) > 1:
            met += f" ({r['met_runs']} of {r['runs']})"
        lines.append(
            f"| `{r['name']}` | {_fmt(r['ours_s'])} | {_fmt(r['baseline_s'])} | {ratio} | {r['target']} | {met} |"
        )
    return "\n".join(lines)


def details_text(rows: list[dict]) -> str:
    """Compile times and counts, exponents and memory, each distinct detail printed once."""
    keys = (
        "compile_s",
        "compiles_first_call",
        "compiles_later_calls",
        "exponent",
        "exponent_upper",
        "max_abs_diff_1_vs_n",
        "temp_bytes",
        "baseline_layouts",
        "ours_per_config_step_s",
        "floor",
        "ratio_ceiling",
        "one_pass_s",
    )
    out, seen = [], set()
    for r in rows:
        extra = {k: r[k] for k in keys if k in r and repr((k, r[k])) not in seen}
        seen.update(repr((k, v)) for k, v in extra.items())
        if extra:
            out.append(f"{r['name']}: {extra}")
    return "\n".join(out)
