"""Execute `notebooks/transformer_confirmation.ipynb` at the quick size (about 30 s)."""

from __future__ import annotations

import pathlib
import sys

import pytest
from notebook_runner import assert_stored_with_outputs, execute, images, stream_text

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "transformer_confirmation.ipynb"


def test_notebook_is_stored_with_its_outputs():
    nb = assert_stored_with_outputs(NOTEBOOK, min_images=3)
    assert "predicted k*" in stream_text(nb)


@pytest.mark.slow  # the whole notebook end to end (about 45 s on 2 cores)
def test_notebook_runs_at_quick_size(tmp_path, monkeypatch):
    nb = assert_stored_with_outputs(NOTEBOOK, min_images=3)
    text = execute(nb, NOTEBOOK, tmp_path, monkeypatch)
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    assert "predicted k*" in text and "small-step sign test" in text
    assert len(images(nb)) == 3
