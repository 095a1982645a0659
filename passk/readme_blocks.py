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
                r["above_agree"],
                r["below_agree"],
            )
        )
    header = (
        "setting",
        "trainer",
        "seeds",
        "pass@1 change",
        "pass@k change",
        "steps agreeing at k >= k*",
        "steps agreeing below k*",
    )
    return _table(header, rows)


#: The renderers, by block name.
BLOCKS: dict[str, Callable[[dict], str]] = {"lm-summary": lm_summary}


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
