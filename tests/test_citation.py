"""CITATION.cff: readable as YAML, the fields CFF 1.2.0 requires, the version and license of pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _citation() -> dict:
    """The CFF file as a mapping (PyYAML where installed, else its top-level `key: value` lines)."""
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        top, key = {}, None
        for line in text.splitlines():
            match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if match:
                key, value = match.group(1), match.group(2).strip().strip('"')
                top[key] = value or []  # an empty value: a block of indented lines follows
            elif key is not None and line.startswith(" ") and isinstance(top[key], list):
                top[key].append(line.strip())
        return top
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"CITATION.cff is a YAML {type(data).__name__}, not a mapping"
    return data


def test_citation_has_the_fields_cff_requires():
    cff = _citation()
    assert cff["cff-version"] == "1.2.0"
    for field in ("message", "title", "authors"):
        assert cff.get(field), f"CITATION.cff lacks {field!r}"
    assert cff["title"] == _pyproject()["name"]


def test_citation_version_and_license_are_pyprojects():
    cff, project = _citation(), _pyproject()
    # a string in the CFF (YAML would read 0.1 as a float)
    assert isinstance(cff["version"], str) and cff["version"] == project["version"]
    assert cff["license"] == project["license"] == "Apache-2.0"


def test_citation_names_the_seed_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    (paper,) = [r for r in cff["references"] if "Prompt Interference" in r["title"]]
    assert paper["type"] == "article" and paper["year"] == 2026
    assert all(set(a) <= {"given-names", "family-names"} and a for a in paper["authors"])
    assert "2602.21189" in paper["url"]
    assert isinstance(paper["date-published"], str)  # CFF dates are strings, not YAML dates
