"""Shared scaffolding for the notebook tests: notebooks are stored with their outputs (so that
they read without running) and executed afresh, from cleared outputs, on this interpreter.

Store fresh outputs after changing a notebook or what it calls:

    python tests/notebook_runner.py notebooks/*.ipynb
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import sys
import tempfile

import nbformat
from nbclient import NotebookClient


def assert_stored_with_outputs(path, *, min_images: int) -> nbformat.NotebookNode:
    """The notebook at `path` validates, was executed top to bottom in one kernel (execution counts
    1, 2, ... in cell order), holds no error output and at least `min_images` PNG images."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        f"{path} is not stored as one top-to-bottom run; store it with `python tests/notebook_runner.py {path}`"
    )
    for cell in code:
        assert all(out.get("output_type") != "error" for out in cell.outputs), cell.source[:80]
    assert len(images(nb)) >= min_images
    return nb


def cleared(nb) -> nbformat.NotebookNode:
    """A copy of `nb` with every code cell's outputs and execution count removed."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def _kernel_here(folder: pathlib.Path) -> str:
    """Write a kernelspec `python3` that runs `sys.executable` under `folder`; return the folder
    to put first on `JUPYTER_PATH`."""
    from sim.files import atomic_write_text

    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    atomic_write_text(folder / "kernels" / "python3" / "kernel.json", json.dumps(spec))
    return str(folder)


def _run(nb, path, *, timeout: int) -> None:
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        startup_timeout=120,
        resources={"metadata": {"path": str(pathlib.Path(path).parent)}},
    )
    client.execute()


def execute(nb, path, tmp_path, monkeypatch, *, timeout: int = 600) -> str:
    """Run `nb` (read from `path`, outputs cleared first) in a kernel of this interpreter; the
    executed cells replace `nb`'s. Returns its stream text.

    A kernelspec named `python3` that runs `sys.executable` is written under `tmp_path` and put
    first on `JUPYTER_PATH`, so the notebook runs in the same environment as the tests.
    """
    monkeypatch.setenv("JUPYTER_PATH", _kernel_here(tmp_path))
    fresh = cleared(nb)
    _run(fresh, path, timeout=timeout)
    nb.cells = fresh.cells
    return stream_text(nb)


def stream_text(nb) -> str:
    """The printed text of a notebook's outputs."""
    return "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def images(nb) -> list:
    """The PNG outputs of an executed notebook."""
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]


def store_outputs(path, *, timeout: int = 1200) -> None:
    """Execute the notebook at `path` from cleared outputs and write it back with its outputs
    (atomically, keeping the notebook's permissions: `sim.files`)."""
    from sim.files import atomic_write_text

    path = pathlib.Path(path)
    nb = cleared(nbformat.read(path, as_version=4))
    with tempfile.TemporaryDirectory() as kernels:
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = _kernel_here(pathlib.Path(kernels))
        try:
            _run(nb, path, timeout=timeout)
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH")
            else:
                os.environ["JUPYTER_PATH"] = old
    text = nbformat.writes(nb)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")  # as nbformat.write; keeps the mode


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python tests/notebook_runner.py NOTEBOOK.ipynb [...]")
    for name in sys.argv[1:]:
        store_outputs(name)
        print(f"stored {name} with its outputs")
