"""The README's tables of numbers, rendered from `figures/results.json` (never typed by hand).

A block in the README is delimited by two comment lines::

    <!-- results: NAME -->
    ...the rendered table...
    <!-- /results -->

and its body is exactly what :data:`BLOCKS` ``[NAME]`` renders from the record. After
`passk reproduce` has rewritten `figures/results.json`,

    python -m passk.readme_blocks            # rewrite every block of README.md in place
    python -m passk.readme_blocks --check    # exit 1 when a block differs from the record

(the test suite runs the check, so a stale number cannot land).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["BLOCKS", "interval_text", "refresh", "main"]

_BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def interval_text(cell, digits: int = 3, signed: bool = True) -> str:
    """`value [lower, upper]` of an interval dict (`{value, lower, upper, ...}`); `-` for None."""
    if cell is None or cell.get("value") is None:
        return "-"
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    if cell.get("lower") is None or cell.get("upper") is None:
        return fmt.format(cell["value"])
    return f"{fmt.format(cell['value'])} [{fmt.format(cell['lower'])}, {fmt.format(cell['upper'])}]"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _part(record: dict, part: str) -> dict:
    try:
        return record[part]["results"]
    except KeyError:
        raise KeyError(f"figures/results.json has no part {part!r}: run `passk reproduce --parts {part}`") from None


def _k_text(k) -> str:
    return "none" if k is None else str(k)


def lm_summary(record: dict) -> str:
    """The miniature LLM run: per setting and trainer, the changes over the run and the step check."""
    res = _part(record, "lm")
    rows = []
    for r in res["summary"]:
        trainer = "GRPO (control)" if r["estimator"] == "grpo" else f"{r['estimator']}, k = {r['k']}"
        rows.append(
            (
                r["setting"],
                trainer,
                r["seeds"],
                interval_text(r["j1_change"]),
                interval_text(r["jk_change"]),
                "-" if r["estimator"] == "grpo" else interval_text(r["j1_vs_control"]),
                "-" if r["estimator"] == "grpo" else interval_text(r["jk_vs_control"]),
                r["above_agree"],
                r["below_agree"],
                r["against_explained"],
                ", ".join(f"{_k_text(a)} to {_k_text(b)}" for a, b in zip(r["k_star_start"], r["k_star_end"])),
            )
        )
    header = (
        "setting",
        "trainer",
        "seeds",
        "pass@1, last step - first",
        "pass@k, last - first",
        "pass@1 at the end - GRPO's",
        "pass@k at the end - GRPO's",
        "steps as stated, k >= k*",
        "steps as stated, k < k*",
        "steps against, explained by `<g_1, u>`",
        "exact k*, first step to last (per seed)",
    )
    return _table(header, rows)


def _share_text(cell) -> str:
    """`share [lower, upper] (count/n)` of a Wilson share with its count; `-` when there were no steps."""
    if cell is None or not cell.get("n"):
        return "-"
    return f"{interval_text(cell, signed=False)} ({cell['count']}/{cell['n']})"


def _over_runs_text(cell) -> str:
    """A t interval over runs, or why there is none (fewer than 3 runs say nothing about the spread)."""
    if cell is None:
        return "-"
    if cell["n"] < 3:
        return f"- ({cell['n']} runs)"
    return f"{interval_text(cell, signed=False)} ({cell['n']} runs)"


def lm_diagnosis(record: dict) -> str:
    """`passk diagnose` against the exact values of the miniature LLM runs, per estimate."""
    summary = _part(record, "lm")["diagnosis"]["summary"]
    rows = []
    for section, label in (("population", "section 11 (alignments, F = 4)"), ("batch", "section 10 (sketch, D = 256)")):
        if section not in summary:
            continue
        total = summary[section]["all"]
        rows.append(
            (
                label,
                summary[section]["runs"],
                _share_text(total["inner_coverage"]["steps"]),
                _over_runs_text(total["inner_coverage"]["runs"]),
                _share_text(total["k_star_coverage"]["steps"]),
                f"{total['no_reading']}/{total['steps']}",
                _share_text(total["power"]["steps"]),
                _share_text(total["false_alarm"]["steps"]),
            )
        )
    header = (
        "estimate",
        "runs",
        "exact I_k in its 95% interval (steps)",
        "same, mean over runs",
        "exact k* in its interval",
        "steps with no k* reading",
        "power (exact k* <= k)",
        "false alarms (exact k* > k)",
    )
    return _table(header, rows)


def forecast_skill(record: dict) -> str:
    """The forecast and its baselines on the judging runs: skill and calibration error, per horizon."""
    res = _part(record, "forecast")
    order = (
        ("logistic", "logistic forecast"),
        ("naive", "naive Phi(-z)"),
        ("rule", "rule k >= k*_hat"),
        ("no_k_star", "logistic without I_k, k*"),
        ("shuffled", "fitted on shuffled outcomes"),
    )
    rows = []
    for horizon in sorted(res["horizons"], key=int):
        h = res["horizons"][horizon]
        for name, label in order:
            sc = h["scores"][name]
            rows.append(
                (
                    f"T = {horizon}",
                    label,
                    f"{h['n']} ({h['events']}), {h['runs']}",
                    interval_text(sc["skill"], 2),
                    interval_text(sc["skill_own"], 2),
                    interval_text(sc["ece"], 3, signed=False),
                )
            )
    header = (
        "horizon",
        "forecast",
        "steps (events), runs",
        "Brier skill over the fit base rate",
        "skill over the judged event share",
        "calibration error (ECE)",
    )
    met = [
        horizon
        for horizon, h in sorted(res["horizons"].items(), key=lambda item: int(item[0]))
        if h["scores"]["logistic"]["skill"]["value"] >= 0.3 and h["scores"]["logistic"]["ece"]["value"] <= 0.05
    ]
    verdict = (
        f"The goal (Brier skill at least 0.3 and ECE at most 0.05) is met at T = {', '.join(met)}."
        if met
        else "The goal (Brier skill at least 0.3 and ECE at most 0.05) is met at no horizon."
    )
    return _table(header, rows) + "\n" + verdict + "\n"


#: The renderers, by block name.
BLOCKS: dict[str, Callable[[dict], str]] = {
    "lm-summary": lm_summary,
    "lm-diagnosis": lm_diagnosis,
    "forecast-skill": forecast_skill,
}


def refresh(text: str, record: dict) -> str:
    """`text` with the body of every results block replaced by its rendering from `record`."""

    def one(match):
        name = match.group("name")
        if name not in BLOCKS:
            raise ValueError(f"unknown results block {name!r}; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](record) + match.group(4)

    return _BLOCK.sub(one, text)


def main(argv=None) -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="python -m passk.readme_blocks", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=root / "README.md")
    parser.add_argument("--results", type=Path, default=root / "figures" / "results.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when a block differs from the record")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = refresh(text, json.loads(args.results.read_text()))
    if args.check:
        if new != text:
            print(f"{args.readme}: results blocks differ from {args.results}; run python -m passk.readme_blocks")
            return 1
        return 0
    if new != text:
        from sim.files import atomic_write_text

        atomic_write_text(args.readme, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
