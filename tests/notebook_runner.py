"""Shared scaffolding for the notebook tests: stored without outputs, executed on this interpreter."""

from __future__ import annotations

import json
import sys

import nbformat
from nbclient import NotebookClient


def assert_stored_without_outputs(path) -> nbformat.NotebookNode:
    """The notebook at `path` validates and every code cell is stored without outputs."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    return nb


def execute(nb, path, tmp_path, monkeypatch, *, timeout: int = 600) -> str:
    """Run `nb` (read from `path`) in a kernel of this interpreter; return its stream text.

    A kernelspec named `python3` that runs `sys.executable` is written under `tmp_path` and put
    first on `JUPYTER_PATH`, so the notebook runs in the same environment as the tests.
    """
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, startup_timeout=120,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def images(nb) -> list:
    """The PNG outputs of an executed notebook."""
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
            if "image/png" in out.get("data", {})]
