"""The ``result`` role: a number from figures/results.json, read when the docs are built.

A table of the README (:mod:`passk.readme_blocks`) is the directive ``results-table NAME``.

Usage in MyST: {result}`one_step.conflict` or {result}`toy.k_star|d` or
{result}`safe.x - safe.y|.3f`. The text before ``|`` is a path or a difference, sum, product or
ratio of paths (operators with spaces around them); after ``|`` an optional Python format spec.

A path starts with a section name of ``results_keys.SECTIONS`` and goes on with keys and list
indices separated by dots; a key holding dots or spaces is written in brackets: ``toy[some key]``.
A missing section, key or index stops the build (an error, not a warning).

Formatting: an interval ``{"value", "lower", "upper", "n"}`` prints as ``value [lower, upper]``
with the spec applied to each (default ``.3f``); a float takes the spec (default ``.3f``); an int
takes it too (default: plain digits); ``None`` prints as ``none``; a string as is. The spec
``len`` gives the length of a list or table; ``n`` the ``n`` of an interval.
"""

from __future__ import annotations

import json
import math
import pathlib
import re

from results_keys import SECTIONS

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "figures" / "results.json"
ROLE_PATTERN = re.compile(r"\{result\}`([^`]+)`")
_SEGMENT = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")
_OPERATORS = {
    "-": lambda a, b: a - b,
    "+": lambda a, b: a + b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}
_INTERVAL_KEYS = {"value", "lower", "upper", "n"}


class ResultKeyError(KeyError):
    """A path that does not lead to a value in results.json."""

    def __str__(self) -> str:
        return str(self.args[0])


def load(path: pathlib.Path = RESULTS) -> dict:
    """The parsed results.json."""
    with open(path) as f:
        return json.load(f)


def split_path(path: str) -> list[str]:
    """``'a.b[c.d].0'`` -> ``['a', 'b', 'c.d', '0']``."""
    segments = []
    position = 0
    for match in _SEGMENT.finditer(path):
        gap = path[position : match.start()]
        if gap not in ("", "."):
            raise ResultKeyError(f"result path {path!r}: cannot read {gap!r}")
        segments.append(match.group(1) if match.group(1) is not None else match.group(2))
        position = match.end()
        if path[position : position + 1] == ".":
            position += 1
    if position != len(path) or not segments:
        raise ResultKeyError(f"result path {path!r}: cannot read it")
    return segments


def lookup(path: str, data: dict):
    """The value at ``path`` (its first segment a section of SECTIONS) in ``data``."""
    segments = split_path(path.strip())
    section = segments[0]
    if section not in SECTIONS:
        raise ResultKeyError(f"result path {path!r}: no section {section!r} in docs/_ext/results_keys.py")
    full = (split_path(SECTIONS[section]) if SECTIONS[section] else []) + segments[1:]
    value = data
    for depth, key in enumerate(full):
        where = ".".join(full[:depth]) or "results.json"
        if isinstance(value, dict):
            if key not in value:
                raise ResultKeyError(f"result path {path!r}: {where} has no key {key!r}")
            value = value[key]
        elif isinstance(value, list):
            try:
                value = value[int(key)]
            except (ValueError, IndexError):
                raise ResultKeyError(
                    f"result path {path!r}: {where} is a list of {len(value)}, no index {key!r}"
                ) from None
        else:
            raise ResultKeyError(f"result path {path!r}: {where} is {value!r}, not a table")
    return value


def evaluate(expression: str, data: dict):
    """A path, or paths joined by `` - ``, `` + ``, `` * ``, `` / `` (left to right)."""
    tokens = _tokens(expression)
    value = lookup(tokens[0], data)
    for operator, operand in zip(tokens[1::2], tokens[2::2]):
        if operator not in _OPERATORS:
            raise ResultKeyError(f"result {expression!r}: unknown operator {operator!r}")
        value = _OPERATORS[operator](_number(value, expression), _number(lookup(operand, data), expression))
    if len(tokens) % 2 == 0:
        raise ResultKeyError(f"result {expression!r}: an operator without an operand")
    return value


def _tokens(expression: str) -> list[str]:
    """Paths and operators; an operator stands alone between spaces, outside brackets."""
    tokens, current, depth = [], "", 0
    for part in re.split(r"(\[|\]|\s+)", expression.strip()):
        depth += (part == "[") - (part == "]")
        if depth == 0 and part.isspace():
            tokens.append(current)
            current = ""
        else:
            current += part
    tokens.append(current)
    return [t for t in tokens if t]


def _number(value, expression):
    if isinstance(value, dict) and _INTERVAL_KEYS <= set(value):
        value = value["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultKeyError(f"result {expression!r}: {value!r} is not a number")
    return value


def format_value(value, spec: str = "") -> str:
    """The text of a value: see the module docstring."""
    if spec == "len":
        return str(len(value))
    if isinstance(value, dict) and _INTERVAL_KEYS <= set(value):
        if spec == "n":
            return str(value["n"])
        spec = spec or ".3f"
        return f"{format(value['value'], spec)} [{format(value['lower'], spec)}, {format(value['upper'], spec)}]"
    if value is None:
        return "none"
    if isinstance(value, bool):
        raise ResultKeyError(f"a result is {value!r}: write the words, not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ResultKeyError(f"a result is {value!r}")
        return format(value, spec or ".3f")
    if isinstance(value, int):
        return format(value, spec)
    if isinstance(value, str) and not spec:
        return value
    raise ResultKeyError(f"cannot format {value!r} with {spec!r}")


def resolve(text: str, data: dict) -> str:
    """The text the role ``{result}`text``` renders."""
    expression, _, spec = text.partition("|")
    return format_value(evaluate(expression.strip(), data), spec.strip())


def uses(folder: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """Every ``{result}`...``` in the MyST pages under ``folder``, with its file."""
    found = []
    for page in sorted(folder.rglob("*.md")):
        if "_build" in page.parts:
            continue
        found.extend((page, text) for text in ROLE_PATTERN.findall(page.read_text()))
    return found


def setup(app):
    from docutils import nodes
    from sphinx.errors import ExtensionError

    data = load()

    def result_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        try:
            shown = resolve(text, data)
        except (ResultKeyError, ZeroDivisionError) as error:
            source = inliner.document.current_source
            raise ExtensionError(f"{source}:{lineno}: {error}") from None
        return [nodes.inline(rawtext, shown, classes=["result"])], []

    app.add_role("result", result_role)

    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList

    class ResultsTable(Directive):
        """``results-table NAME``: the README's table NAME (:mod:`passk.readme_blocks`), from results.json."""

        required_arguments = 1

        def run(self):
            from passk import readme_blocks

            name = self.arguments[0]
            if name not in readme_blocks.BLOCKS:
                raise self.error(f"unknown results table {name!r}; known: {', '.join(readme_blocks.BLOCKS)}")
            try:
                text = readme_blocks.BLOCKS[name](data)
            except KeyError as error:
                raise self.error(f"results table {name!r}: {error}") from None
            container = nodes.container()
            self.state.nested_parse(StringList(text.splitlines()), self.content_offset, container)
            return container.children

    app.add_directive("results-table", ResultsTable)
    app.add_config_value("results_json", str(RESULTS), "env")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
