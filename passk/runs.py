"""`passk diagnose` over a run's steps: one row per step and the run-level reading.

Each step (one dump file) gives a row (a JSON-serialisable dict):

- `step`, `file`, `n_prompts` (groups kept), `n_answers`, `group_sizes` `{min, max}`;
- `pass_at_1`, and `pass_at_k` keyed by each requested `k`: `{value, lower, upper, n}`, the mean
  over prompts of the unbiased per-prompt estimate `1 - C(n_i - c_i, k) / C(n_i, k)` with a t
  interval over the `n` prompts; `{value: None, why}` when `k` exceeds a group's size;
- `share_unsolved`: the share of prompts with `c_i = 0` (no sampled estimator updates them);
- `trainers`: `{method: [{k, effective_prompts}]}`, the effective number of prompts `1 / sum omega_i^2`
  of each trainer's weights `omega_i ∝ T(c_i)` (:func:`theory.implied_weight_unbiased` at the
  prompt's own `n_i`);
- `inner` and `k_star`, where alignments (SPEC section 11, `"population"`) or score vectors
  (section 10, `"batch"`, equal group sizes only) were logged: `inner` lists `{k, estimate, stderr}`
  at the requested `k`; `k_star` is `{kind, estimate, lower, upper, k_max, level, band, signal}`,
  read off a simultaneous Bonferroni band over `k = 1 .. k_max` (:mod:`theory.bands`), `signal`
  False when `I_1 = ||grad J_1||^2` is not established positive (then no `k*` is read), and
  `first_negative`, the first `k` with `I_k_hat < 0` whatever the signal (the forecast's input);
- `notes`: groups left out, the filtered-groups note of SPEC section 11, what could not be computed.

The run-level reading (`reading`): `conflict_from_step`, the first step whose whole `k*` interval
lies at or below the trained `k` (with `trained_k`); and for pass@1 and each pass@k the slope over
steps (least squares; its standard error from the steps' own standard errors, steps independent)
with an interval, and `fell_rose_from`: the first step from which, over it and every later step
(3 or more), the pass@1 slope is below 0 and the pass@k slope above 0, both at the level.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from passk.frameworks import Options, StepData, list_steps, read_step
from passk.readers import InputError, read_run

__all__ = ["SECTIONS", "diagnose_run", "step_row", "run_reading", "format_run", "plot_run", "from_run_data"]


def from_run_data(run, path, step, fmt) -> StepData:
    """A :class:`StepData` of a :class:`passk.readers.RunData` (equal groups of `run.n`)."""
    n_prompts = run.correct.size
    c = run.correct.astype(np.int64)
    success = (np.arange(run.n)[None, :] < c[:, None]).astype(np.int64)  # only the counts matter
    data = StepData(str(path), step, fmt, list(run.prompt_ids), success, np.ones((n_prompts, run.n), bool))
    data.score_sum, data.score_sq_sum = run.score_sum, run.score_sq_sum
    if run.mu is not None:
        data.notes.append("prompt weights of the file are not used over steps (every prompt counts once)")
    return data


def _mean_interval(values: np.ndarray, level: float) -> dict:
    from theory.bands import t_quantile

    n = int(values.size)
    mean = float(values.mean())
    if n < 2:
        return {"value": mean, "lower": None, "upper": None, "n": n, "stderr": None}
    se = float(values.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(level, n - 1) * se
    return {"value": mean, "lower": mean - half, "upper": mean + half, "n": n, "stderr": se}


@functools.lru_cache(maxsize=512)
def _weight_table(n: int, method: str, k) -> np.ndarray:
    """`T(c)` of :func:`theory.implied_weight_unbiased` at `c = 0 .. n` (a run's steps share their `n`)."""
    import theory

    table = np.asarray(theory.implied_weight_unbiased(n, np.arange(n + 1), method, k), np.float64)
    table.flags.writeable = False
    return table


def _trainers(c: np.ndarray, sizes: np.ndarray, ks) -> dict:
    import theory

    out = {}
    for method, estimator in theory.ESTIMATOR_TABLE.items():
        entries = []
        for k in ks if estimator.needs_k else [None]:
            if k is not None and any(k > estimator.max_k(int(n)) for n in np.unique(sizes)):
                entries.append(
                    {"k": k, "effective_prompts": None, "why": f"needs k <= {estimator.k_bound} for every group"}
                )
                continue
            weight = np.zeros(c.size)
            for n in np.unique(sizes):
                at = sizes == n
                weight[at] = _weight_table(int(n), method, k)[c[at]]
            total = weight.sum()
            if total > 0:
                omega = weight / total
                entries.append({"k": k, "effective_prompts": float(1.0 / np.sum(omega * omega))})
            else:
                entries.append({"k": k, "effective_prompts": None, "why": "no weight on any prompt"})
        out[method] = entries
    return out


def _k_star(kind, scaled, scaled_se, level, dof, k_max) -> dict:
    from theory import bands

    q = bands.bonferroni_quantile(k_max, level=level, dof=dof)
    crit = bands.read_critical_k(
        scaled, scaled_se, quantile=q, level=level, band="bonferroni", signal_quantile=bands.t_quantile(level, dof)
    )
    out = {"kind": kind, **crit._asdict()}
    out["first_negative"] = crit.estimate  # the first k with I_k_hat < 0, kept without a signal too
    if not crit.signal:
        out.update(estimate=None, lower=None, upper=None)
    return out


#: The estimates of `I_k` a dump can hold: SPEC section 11 (alignments) and section 10 (score vectors).
SECTIONS = ("population", "batch")


def _interference(data: StepData, ks, level: float, notes: list, section: str | None = None):
    """`(inner, k_star)` of the step: `section` if given, else population (alignments) before batch (scores)."""
    import jax

    import theory

    sizes = data.counts
    if section == "population" and data.alignments is None:
        notes.append("no alignments logged: the population I_k (SPEC section 11) cannot be read")
        return [], None
    if section == "batch" and data.score_sum is None:
        notes.append("no score vectors logged: the batch I_k (SPEC section 10) cannot be read")
        return [], None
    if data.alignments is not None and section != "batch":
        n_folds = data.alignments.shape[2]
        k_max = int(sizes.min())
        with jax.enable_x64(True):
            inner = theory.population_inner_product(
                data.success, data.alignments, data.folds, np.arange(1, k_max + 1), mask=data.mask
            )
        fields = [np.asarray(x, np.float64) for x in inner[:4]]
        rows = [
            {"k": k, "estimate": float(fields[0][k - 1]), "stderr": float(fields[1][k - 1])} for k in ks if k <= k_max
        ]
        if n_folds < 3:
            notes.append(f"F = {n_folds} folds: the population I_k has no standard error (the jackknife needs F >= 3)")
            return rows, {
                "kind": "population",
                "estimate": None,
                "lower": None,
                "upper": None,
                "k_max": k_max,
                "level": level,
                "band": None,
                "signal": None,
            }
        return rows, _k_star("population", fields[2], fields[3], level, n_folds - 1, k_max)
    if data.score_sum is not None:
        if sizes.min() != sizes.max():
            notes.append(
                "score vectors with groups of different sizes: the batch I_k (SPEC section 10) is "
                "computed for equal groups only"
            )
            return [], None
        n = int(sizes[0])
        if n < 3:
            notes.append("the batch I_k needs n >= 3 answers per prompt")
            return [], None
        with jax.enable_x64(True):
            stats = theory.statistics_from_sums(data.correct, data.score_sum, data.score_sq_sum, n=n)
            inner = theory.inner_product_from_statistics(stats, np.arange(1, n))
        fields = [np.asarray(x, np.float64) for x in inner[:4]]
        rows = [
            {"k": k, "estimate": float(fields[0][k - 1]), "stderr": float(fields[1][k - 1])} for k in ks if k <= n - 1
        ]
        return rows, _k_star("batch", fields[2], fields[3], level, None, n - 1)
    return [], None


def step_row(data: StepData, ks, level: float, section: str | None = None) -> dict:
    """The row of one step (module docstring); `section` picks the `I_k` estimate (:func:`diagnose_run`)."""
    import jax

    import theory

    sizes, c = data.counts.astype(np.int64), data.correct.astype(np.int64)
    notes = list(data.notes)
    row = {
        "step": data.step,
        "file": data.file,
        "n_prompts": int(sizes.size),
        "n_answers": int(sizes.sum()),
        "group_sizes": {"min": int(sizes.min()), "max": int(sizes.max())},
    }
    with jax.enable_x64(True):
        row["pass_at_1"] = _mean_interval(c / sizes, level)
        row["pass_at_k"] = {}
        for k in ks:
            if k > sizes.min():
                i = int(np.argmin(sizes))
                row["pass_at_k"][str(k)] = {
                    "value": None,
                    "lower": None,
                    "upper": None,
                    "n": 0,
                    "why": f"k = {k} exceeds the {int(sizes[i])} answers of prompt {data.prompt_ids[i]!r}"[:160],
                }
                continue
            rho = np.asarray(theory.pass_at_k_unbiased(sizes, c, k), np.float64)
            row["pass_at_k"][str(k)] = _mean_interval(rho, level)
    row["share_unsolved"] = float(np.mean(c == 0))
    row["trainers"] = _trainers(c, sizes, ks)
    if not np.any(c == 0) and not np.any(c == sizes):
        notes.append(
            "no prompt with c = 0 and none with c = n: the trainer may have dropped the groups whose "
            "answers all pass or all fail (dynamic sampling); the hard prompts that drive k* down are then "
            "missing from this dump (SPEC section 11)"
        )
    row["inner"], row["k_star"] = _interference(data, ks, level, notes, section)
    row["notes"] = notes
    return row


def _slope(steps: np.ndarray, values: np.ndarray, ses: np.ndarray, z: float):
    x = steps - steps.mean()
    a = x / np.sum(x * x)
    slope = float(a @ values)
    se = float(np.sqrt(np.sum(a * a * ses * ses)))
    return {"slope": slope, "lower": slope - z * se, "upper": slope + z * se, "steps": int(steps.size)}


def _series(rows, key):
    """`(steps, values, stderrs)` of pass@`key` over the steps that have a standard error."""
    pts = []
    for r in rows:
        cell = r["pass_at_1"] if key == "1" else r["pass_at_k"][key]
        if r["step"] is not None and cell.get("stderr") is not None:
            pts.append((r["step"], cell["value"], cell["stderr"]))
    return np.array(pts, np.float64).reshape(-1, 3)


def run_reading(rows: list, ks, level: float, trained_k: int | None) -> dict:
    """The run-level reading (module docstring)."""
    from theory.bands import t_quantile

    z = t_quantile(level)
    reading = {"trained_k": trained_k, "conflict_from_step": None, "slopes": {}, "fell_rose_from": {}}
    if trained_k is not None:
        for r in rows:
            crit = r["k_star"]
            if crit and crit.get("upper") is not None and crit["upper"] <= trained_k:
                reading["conflict_from_step"] = r["step"]
                break
    series = {key: _series(rows, key) for key in ["1"] + [str(k) for k in ks if k > 1]}
    for key, pts in series.items():
        if pts.shape[0] >= 2 and np.ptp(pts[:, 0]) > 0:
            reading["slopes"]["pass_at_" + key] = _slope(pts[:, 0], pts[:, 1], pts[:, 2], z)
    one = series["1"]
    for key, other in series.items():
        if key == "1":
            continue
        reading["fell_rose_from"][key] = None
        common = np.intersect1d(one[:, 0], other[:, 0])
        for start in common:
            tail = common[common >= start]
            if tail.size < 3:
                break
            a, b = one[np.isin(one[:, 0], tail)], other[np.isin(other[:, 0], tail)]
            s1, sk = _slope(a[:, 0], a[:, 1], a[:, 2], z), _slope(b[:, 0], b[:, 1], b[:, 2], z)
            if s1["upper"] < 0 and sk["lower"] > 0:
                reading["fell_rose_from"][key] = int(start)
                break
    return reading


def diagnose_run(
    path,
    *,
    options: Options,
    ks=None,
    level: float = 0.95,
    trained_k: int | None = None,
    section: str | None = None,
) -> dict:
    """Read a run directory (or one step file) step by step and return the run report.

    Args:
      path: a directory of per-step dumps, or one dump file.
      options: the reading flags (:class:`passk.frameworks.Options`).
      ks: the orders of pass@k reported (sorted, `>= 1`); None: `1, 2, 4, ...` up to the first
        step's smallest group, and `trained_k`.
      level: the level of every interval, in `(0, 1)`.
      trained_k: the `k` the run trains at, or None.
      section: which estimate of `I_k` and `k*` to read where a dump holds both: `"population"`
        (SPEC section 11, alignments), `"batch"` (section 10, score vectors), or None (population
        where there are alignments, else batch).

    Returns:
      `{"run", "format", "level", "ks", "steps": [row, ...], "reading", "notes"}` (module docstring).
    """
    from pathlib import Path

    from passk.frameworks import detect_format, step_number

    if section is not None and section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS} or None; got {section!r}")
    path = Path(path)
    if path.is_dir():
        entries = list_steps(path, options.format)
    elif path.is_file():
        entries = [(step_number(path), path, detect_format(path, options.format))]
    else:
        raise InputError(f"{path}: no such file or directory")
    rows = []
    for step, file, fmt in entries:
        if fmt in ("npz", "csv") or (fmt == "jsonl" and _plain_jsonl(file, options)):
            data = from_run_data(read_run(file), file, step, fmt)
        else:
            data = read_step(file, fmt, step, options)
        if ks is None:  # 1, 2, 4, ... up to the first step's smallest group, and the trained k
            from sim.diagnose import default_ks

            ks = sorted(set(default_ks(int(data.counts.min()))) | ({trained_k} if trained_k else set()))
        try:
            rows.append(step_row(data, ks, level, section))
        except (ValueError, TypeError) as err:
            raise InputError(f"{file} (step {step}): {' '.join(str(err).split())}") from None
    return {
        "run": str(path),
        "format": entries[0][2],
        "level": level,
        "ks": list(ks),
        "steps": rows,
        "reading": run_reading(rows, ks, level, trained_k),
        "notes": sorted({n for r in rows for n in r["notes"]}),
    }


def _plain_jsonl(path, options: Options) -> bool:
    """Whether a project `.jsonl` fits :func:`passk.readers.read_run` (0/1 rewards, no folds, default flags)."""
    from passk.dump_files import _first_record

    first = _first_record(path) or {}
    return (
        options.success_threshold is None
        and options.reward_field is None
        and options.group_size is None
        and "alignment" not in first
        and "fold" not in first
    )


# ---------------------------------------------------------------------------------------------
# Text and figure


def _cell(cell) -> str:
    if cell["value"] is None:
        return "-"
    if cell["lower"] is None:
        return f"{cell['value']:.3f}"
    return f"{cell['value']:.3f} [{cell['lower']:.3f}, {cell['upper']:.3f}]"


def _k_star_text(ks) -> str:
    if ks is None:
        return "-"
    if ks.get("signal") is False:
        return f"no signal ({ks['kind']})"
    if ks.get("band") is None:
        return f"no interval ({ks['kind']})"
    lo = ks["lower"] if ks["lower"] is not None else f">{ks['k_max']}"
    hi = ks["upper"] if ks["upper"] is not None else "?"
    return f"{ks['estimate'] if ks['estimate'] is not None else '-'} [{lo}, {hi}] ({ks['kind']})"


def verdict(report: dict) -> str:
    """One sentence: in conflict from which step, or not established, or no signal."""
    reading, rows = report["reading"], report["steps"]
    if not any(r["k_star"] for r in rows):
        return "no alignments or score vectors logged: the sign of I_k, and so k*, cannot be read"
    if all(r["k_star"] is None or r["k_star"].get("signal") is False for r in rows):
        return (
            "no signal: I_1 = ||grad J_1||^2 is not established positive at any step, so the dumps say nothing about k*"
        )
    tk = reading["trained_k"]
    if tk is None:
        return "k* read at each step (give --trained-k to ask when the run crossed into conflict)"
    if reading["conflict_from_step"] is not None:
        return (
            f"in conflict at the trained k = {tk} from step {reading['conflict_from_step']} "
            "(k* interval at or below it)"
        )
    return f"conflict at the trained k = {tk} not established at any step"


def format_run(report: dict) -> str:
    """The per-step table and the run-level reading as text."""
    ks = [k for k in report["ks"] if k > 1]
    head = f"{'step':>6}  {'prompts':>7}  {'answers':>7}  {'pass@1':>22}" + "".join(
        f"  {'pass@' + str(k):>22}" for k in ks
    )
    head += f"  {'unsolved':>8}  k* [interval]"
    lines = [
        f"run: {report['run']} ({report['format']}, {len(report['steps'])} steps, intervals at {report['level']:.0%})",
        head,
    ]
    for r in report["steps"]:
        line = (
            f"{r['step'] if r['step'] is not None else '-':>6}  {r['n_prompts']:>7}  {r['n_answers']:>7}  "
            f"{_cell(r['pass_at_1']):>22}"
        )
        line += "".join(f"  {_cell(r['pass_at_k'][str(k)]):>22}" for k in ks)
        line += f"  {r['share_unsolved']:>8.2f}  {_k_star_text(r['k_star'])}"
        lines.append(line)
    reading = report["reading"]
    for key, s in reading["slopes"].items():
        lines.append(
            f"{key.replace('_at_', '@')} slope per step: {s['slope']:+.2e} [{s['lower']:+.2e}, "
            f"{s['upper']:+.2e}] over {s['steps']} steps"
        )
    for key, start in reading["fell_rose_from"].items():
        if start is not None:
            lines.append(f"pass@1 fell while pass@{key} rose from step {start}")
    lines.append(verdict(report))
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def plot_run(report: dict):
    """pass@1 and pass@k over steps with their bands; the `k*` interval over steps against the trained `k`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["steps"] if r["step"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = np.array([r["step"] for r in rows], float)
    for i, key in enumerate(["1"] + [str(k) for k in report["ks"] if k > 1]):
        cells = [r["pass_at_1"] if key == "1" else r["pass_at_k"][key] for r in rows]
        value = np.array([np.nan if c["value"] is None else c["value"] for c in cells])
        lo = np.array([np.nan if c["lower"] is None else c["lower"] for c in cells])
        hi = np.array([np.nan if c["upper"] is None else c["upper"] for c in cells])
        ax1.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.2)
        ax1.plot(steps, value, "o-", ms=3, color=f"C{i}", label=f"pass@{key}")
    ax1.set_xlabel("step")
    ax1.set_ylabel(f"pass@k ({report['level']:.0%} interval over prompts)")
    ax1.legend(fontsize=8)
    tk = report["reading"]["trained_k"]
    shown = False
    for r in rows:
        ks_ = r["k_star"]
        if not ks_ or ks_.get("signal") is not True:
            continue
        top = ks_["upper"] if ks_["upper"] is not None else ks_["k_max"]
        bottom = ks_["lower"] if ks_["lower"] is not None else ks_["k_max"]
        style = "-" if ks_["upper"] is not None else ":"
        ax2.plot([r["step"], r["step"]], [bottom, top], style, color="C3", lw=2)
        if ks_["estimate"] is not None:
            ax2.plot(r["step"], ks_["estimate"], "D", color="C3", ms=4, label=None if shown else "k* estimate")
            shown = True
    if not any(r["k_star"] and r["k_star"].get("signal") is True for r in rows):
        ax2.text(
            0.5,
            0.5,
            "no k* interval at any step:\n"
            + (
                "no signal (I_1 not established positive)"
                if any(r["k_star"] for r in rows)
                else "no alignments or score vectors logged"
            ),
            ha="center",
            va="center",
            transform=ax2.transAxes,
        )
    ax2.set_xlim(ax1.get_xlim())
    ax2.plot([], [], "-", color="C3", lw=2, label="k* interval")
    ax2.plot([], [], ":", color="C3", lw=2, label="upper end not established")
    if tk is not None:
        ax2.axhline(tk, color="k", ls="--", lw=1, label=f"trained k = {tk}")
    ax2.set_xlabel("step")
    ax2.set_ylabel("k*")
    ax2.legend(fontsize=8)
    fig.suptitle(verdict(report), fontsize=9)
    fig.tight_layout()
    return fig


def run_figure_bytes(report: dict, suffix: str) -> bytes:
    """:func:`plot_run` encoded as `suffix` (`.png`, `.pdf`, `.svg`)."""
    from passk.plots._style import encode

    return encode(plot_run(report), suffix)
