"""Imports point one way: `theory` <- `sim` <- `benchmarks` <- `passk` (read from the source)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# each package and the packages it must never import
FORBIDDEN = {
    "theory": {"sim", "passk", "benchmarks", "matplotlib"},
    "sim": {"passk", "benchmarks", "matplotlib"},
    "benchmarks": {"passk", "matplotlib"},
}


def imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {f: roots for f, roots in bad.items() if roots} == {}


def private_reaches(path: pathlib.Path, package: str) -> list[str]:
    """Imports of another package's `_private` modules or names (`from theory import _x`, `sim._x`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == package or parts[0] not in FORBIDDEN | {"passk": None}:
                continue
            if any(p.startswith("_") for p in parts[1:]) or any(a.name.startswith("_") for a in node.names):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != package and parts[0] in FORBIDDEN and any(p.startswith("_") for p in parts[1:]):
                    found.append(alias.name)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN) + ["passk"])
def test_no_package_imports_another_packages_private_modules(package):
    bad = {str(f.relative_to(ROOT)): private_reaches(f, package) for f in sorted((ROOT / package).rglob("*.py"))}
    assert {f: mods for f, mods in bad.items() if mods} == {}
