"""The trainer figure (`passk/plots/trainers.py`) lays out one panel per trainer, however many the
estimator table has, and the warm-start panel after them."""

import copy
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest

from passk.plots import trainers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded():
    """The `trainers` part of the committed `figures/results.json` (a full table of trainers)."""
    return json.loads((ROOT / "figures" / "results.json").read_text())["trainers"]["results"]


def _with_methods(recorded, n_methods: int) -> dict:
    """`recorded` with its trainers cut to, or repeated up to, `n_methods` names."""
    results = copy.deepcopy(recorded)
    names = list(results["trainer_map"])
    chosen = [(f"{names[i % len(names)]}#{i}", names[i % len(names)]) for i in range(n_methods)]
    for key in ("trainer_map", "cells"):
        results[key] = {new: copy.deepcopy(recorded[key][old]) for new, old in chosen}
    if results.get("transformer_warm_start"):
        results["transformer_warm_start"] = {new: recorded["transformer_warm_start"][old] for new, old in chosen}
    return results


@pytest.mark.parametrize("n", range(1, 13))
def test_panel_grid_holds_the_panels_in_as_few_rows_as_possible(n):
    rows, cols = trainers.panel_grid(n)
    assert 1 <= cols <= trainers.MAX_COLUMNS and rows * cols >= n > (rows - 1) * cols
    assert cols == min(n, trainers.MAX_COLUMNS)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_panel_grid_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="n_panels"):
        trainers.panel_grid(bad)


@pytest.mark.parametrize("n_methods, shape", [(8, (3, 4)), (3, (1, 4)), (7, (2, 4))])
@pytest.mark.parametrize("warm", [True, False], ids=["warm-start", "no-warm-start"])
def test_draws_one_panel_per_trainer(tmp_path, monkeypatch, recorded, n_methods, shape, warm):
    results = _with_methods(recorded, n_methods)
    if not warm:
        results["transformer_warm_start"] = None
    figures = []
    real_save = trainers.save

    def save(fig, *args, **kwargs):
        figures.append(fig)
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(trainers, "save", save)
    paths = trainers.draw(results, tmp_path)
    assert sorted(p.name for p in paths) == ["trainer_map.pdf", "trainer_map.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == shape[0] * shape[1]
    visible = [ax for ax in panels if ax.get_visible()]
    assert len(visible) == n_methods + 1
    titles = [ax.get_title() for ax in visible]
    assert [t.split(",")[0] for t in titles[:n_methods]] == list(results["trainer_map"])
    assert all(ax.images for ax in visible[:n_methods])  # each trainer's map
    assert bool(visible[-1].images) == warm  # the warm-start panel after them
    assert fig.get_size_inches()[1] == pytest.approx(4.4 * shape[0])
