"""The README's example runs and prints what the README says."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_finds_k_star_4():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    lines = out.getvalue().strip().splitlines()
    assert lines[-2:] == ["4", "4"]


def test_readme_shows_both_setup_commands():
    text = README.read_text()
    assert "passk reproduce" in text and "python -m pytest" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and "python -m pytest" in ci
