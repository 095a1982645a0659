"""Every number the docs quote resolves in figures/results.json; a missing key is an error.

Cheap: reads the pages and the JSON, builds nothing (CI builds the site with `sphinx-build -W`).
"""

import pathlib
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import passk_results  # noqa: E402
from results_keys import SECTIONS  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return passk_results.load()


def test_every_result_role_in_the_docs_resolves(data):
    uses = passk_results.uses(DOCS)
    assert len(uses) > 100
    for page, text in uses:
        shown = passk_results.resolve(text, data)
        assert shown and "nan" not in shown.lower(), (page.name, text, shown)


def test_every_section_of_the_key_table_exists(data):
    for name, _path in SECTIONS.items():
        assert passk_results.lookup(name, data) is not None, name


def test_values_and_formats_are_read_not_invented(data):
    conflict = data["bandit"]["results"]["one_step"]["conflict"]
    shown = passk_results.resolve("one_step.conflict|.4f", data)
    assert shown == f"{conflict['value']:.4f} [{conflict['lower']:.4f}, {conflict['upper']:.4f}]"
    assert passk_results.resolve("toy.k_star", data) == str(data["bandit"]["results"]["toy"]["k_star"])
    assert passk_results.resolve("one_step.conflict|n", data) == str(conflict["n"])
    groups = data["safe"]["results"]["groups"]
    expected = groups[7]["final_passk"]["value"] - groups[9]["final_passk"]["value"]
    assert (
        passk_results.resolve("safe_sgd_passk.final_passk - safe_sgd_project_safe.final_passk|.4f", data)
        == f"{expected:.4f}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "toy.no_such_key",
        "no_such_section.k_star",
        "toy.curves.ks.9999",
        "toy.k_star.deeper",
        "toy.k_star +",
        "toy.k_star ^ toy.k_star",
        "toy[unclosed",
    ],
)
def test_a_missing_or_malformed_key_raises(data, text):
    with pytest.raises(KeyError):
        passk_results.resolve(text, data)


def test_a_changed_value_changes_the_page(data):
    # The role reads the file: edit the value and the rendered text follows.
    import copy

    edited = copy.deepcopy(data)
    edited["bandit"]["results"]["toy"]["k_star"] = 7
    assert passk_results.resolve("toy.k_star", edited) == "7"
