"""Imports point one way: `theory` <- `sim` <- `passk` (its benchmarks, plots and command), and inside `sim` the studies
read the worlds, never the reverse; presets stay in the command (all read from the source)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# each package and the packages it must never import
FORBIDDEN = {
    "theory": {"sim", "passk", "matplotlib"},
    "sim": {"passk", "matplotlib"},
    # the benchmarks return numbers; the command draws them (passk.plots.bench)
    "passk/benchmarks": {"matplotlib"},
}

PACKAGES = ("theory", "sim", "passk")


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
            if parts[0] == package or parts[0] not in PACKAGES:
                continue
            if any(p.startswith("_") for p in parts[1:]) or any(a.name.startswith("_") for a in node.names):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != package and parts[0] in PACKAGES and any(p.startswith("_") for p in parts[1:]):
                    found.append(alias.name)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_another_packages_private_modules(package):
    bad = {str(f.relative_to(ROOT)): private_reaches(f, package) for f in sorted((ROOT / package).rglob("*.py"))}
    assert {f: mods for f, mods in bad.items() if mods} == {}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_worlds_of_sim_do_not_import_the_studies():
    worlds = [f for f in sorted((ROOT / "sim").rglob("*.py")) if "studies" not in f.relative_to(ROOT).parts]
    assert len(worlds) > 10
    bad = {}
    for f in worlds:
        name = str(f.relative_to(ROOT))
        reached = sorted(m for m in imported_modules(f) if m == "sim.studies" or m.startswith("sim.studies."))
        if reached:
            bad[name] = reached
    assert bad == {}


def test_no_library_function_takes_a_quick_preset():
    """Which sizes a run uses is the command's choice (`passk.presets`): no function of `theory`
    or `sim` takes `quick`."""
    bad = {}
    for f in sorted((ROOT / "theory").rglob("*.py")) + sorted((ROOT / "sim").rglob("*.py")):
        name = str(f.relative_to(ROOT))
        for node in ast.walk(ast.parse(f.read_text(), filename=name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(a.arg == "quick" for a in args):
                    bad.setdefault(name, []).append(node.name)
    assert bad == {}
