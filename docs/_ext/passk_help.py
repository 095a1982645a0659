"""The ``passk-help`` directive: the help text of ``passk`` or one subcommand, from passk.cli's parser.

    ```{passk-help}
    ```
    ```{passk-help} diagnose
    ```
    ```{passk-help} all
    ```

``all`` renders every subcommand in the parser's order, each under a rubric, so a new subcommand
appears without editing the page.
"""

from __future__ import annotations

import argparse
import os

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.errors import ExtensionError

# argparse wraps at the terminal's width; a fixed width keeps the pages the same on every machine.
HELP_COLUMNS = "100"


def help_text(command: str | None = None) -> str:
    """``passk --help`` (``command`` None) or ``passk COMMAND --help``, as argparse prints it."""
    from passk.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        if command is not None:
            actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            choices = actions[0].choices if actions else {}
            if command not in choices:
                raise ExtensionError(f"passk-help: no subcommand {command!r} (passk has {sorted(choices)})")
            parser = choices[command]
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def subcommands() -> list[str]:
    """The subcommands of ``passk``, in the parser's order."""
    from passk.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices) if actions else []


class PasskHelp(Directive):
    optional_arguments = 1
    has_content = False

    def run(self):
        command = self.arguments[0] if self.arguments else None
        if command == "all":
            result = []
            for name in subcommands():
                result.append(nodes.rubric(text=f"passk {name}"))
                result.append(_block(help_text(name)))
            return result
        return [_block(help_text(command))]


def _block(text):
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


def setup(app):
    app.add_directive("passk-help", PasskHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
