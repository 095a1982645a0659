"""The toy-regimes notebook is stored with its outputs and runs top to bottom (small sizes) on this interpreter."""

from __future__ import annotations

import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from notebook_runner import assert_stored_with_outputs, cleared, stream_text

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "toy_regimes.ipynb"


def test_notebook_is_stored_with_its_outputs():
    nb = assert_stored_with_outputs(NOTEBOOK, min_images=4)
    assert "k* = " in stream_text(nb)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


@pytest.mark.slow  # the whole notebook end to end in a kernel (about 12 s on 2 cores)
def test_notebook_executes(tmp_path):
    nb = cleared(nbformat.read(NOTEBOOK, as_version=4))
    params = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    # small sizes: what a user would do by editing the parameter cell
    params.source = params.source.replace("N_PROMPTS = 256", "N_PROMPTS = 48").replace("K = 16", "K = 32")
    assert "N_PROMPTS = 48" in params.source
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        resources={"metadata": {"path": str(tmp_path)}},
        extra_arguments=[],
        startup_timeout=120,
    )
    client.execute()
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "stream"
    )
    # the kernel ran this interpreter (the project's environment), not some other python on PATH
    assert f"interpreter: {sys.executable}" in text
    assert "k* = " in text
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "data" in out and "image/png" in out["data"]
    ]
    assert len(images) == 4
