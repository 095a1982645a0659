"""Execute `notebooks/diagnose_a_run.ipynb` (the transformer's warm start and the example verl run; about a minute)."""

from __future__ import annotations

import pathlib

import pytest
from notebook_runner import assert_stored_with_outputs, execute, images, stream_text

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "diagnose_a_run.ipynb"


def test_notebook_is_stored_with_its_outputs():
    nb = assert_stored_with_outputs(NOTEBOOK, min_images=2)
    assert "exact k* = " in stream_text(nb)


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
    nb = assert_stored_with_outputs(NOTEBOOK, min_images=2)
    text = execute(nb, NOTEBOOK, tmp_path, monkeypatch)
    assert "exact k* = " in text and "k* (first k" in text
    assert "exact scores (Python): estimate" in text and "16-dim sketch (file): estimate" in text
    assert len(images(nb)) == 2
    assert "pass@1 fell while pass@8 rose from step" in text and "in conflict at the trained k = 8 from step" in text
