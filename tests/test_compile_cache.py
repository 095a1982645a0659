"""The persistent compilation cache (`passk.cache`) and the toy notebook's sliders.

A command run with `PASSK_CACHE_DIR` fills the folder, a second run reads it back (no new entry)
and prints the same numbers as the first; the off-switch changes nothing. The sliders' `update`
recompiles nothing after its first call and shows the numbers of `sim.toy_diagnostics`.
(Two short processes and two compiles here: about 20 s on 2 idle cores.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import sim
from passk import cache
from passk.benchmarks._timing import CompileCounter
from passk.benchmarks.start import slider_namespace

TOY = ["toy", "--p-hard", "0.3", "--separation", "1.0", "--k", "1", "2", "4", "8", "--n-prompts", "64"]


def _run(args, env_extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PASSK_CACHE_DIR", "PASSK_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")
    }
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-m", "passk.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir().parent == tmp_path / "xdg" / "passk-interference" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir().parent == tmp_path / "home" / ".cache" / "passk-interference" / "jax"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir().parent == tmp_path / "mine"
    assert cache.cache_dir().name  # one subfolder per CPU kind


@pytest.mark.parametrize("value", ["1", "yes"])
def test_off_switch_changes_nothing(monkeypatch, tmp_path, value):
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "c"))
    monkeypatch.setenv(cache.DISABLE_ENV, value)
    before = jax.config.jax_compilation_cache_dir
    assert cache.enable_compile_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_second_run_reads_the_cache_and_prints_the_same(tmp_path):
    folder = tmp_path / "cache"
    cold_run = _run(TOY, {cache.CACHE_DIR_ENV: str(folder), "JAX_LOG_COMPILES": "1"})
    cold = cold_run.stdout
    compiled = cold_run.stderr.count("Compiling ")
    written = _entries(folder)
    # one entry per program the first run compiled (the cache keeps every program, however quick)
    assert compiled >= 1 and len(written) == compiled, cold_run.stderr
    assert all(p.parent.parent == folder for p in written)
    stamps = {p: p.stat().st_mtime_ns for p in written}
    warm = _run(TOY, {cache.CACHE_DIR_ENV: str(folder), cache.DISABLE_ENV: "0"}).stdout
    assert _entries(folder) == written  # every program read back, none compiled anew
    assert {p: p.stat().st_mtime_ns for p in written} == stamps
    assert "critical k* = " in cold
    assert warm == cold  # the same numbers, digit for digit


@pytest.mark.slow
def test_sliders_redraw_without_recompiling():
    ns = slider_namespace()  # the notebook's parameter and slider cells; the first update compiles
    update, diag = ns["update"], ns["slider_diagnostics"]
    with CompileCounter() as counter:
        pngs = [update(*s) for s in [(0.3, 1.0, 8, 8), (0.1, 2.5, 2, 64), (0.5, 0.0, 16, 1)]]
    assert counter.count == 0
    assert all(png.startswith(b"\x89PNG") for png in pngs)
    # answers beyond n_actions switched off give the numbers of the smaller bandit (one size:
    # every other n_actions would compile sim.toy_diagnostics anew)
    for p_hard, separation, n_actions in [(0.3, 1.0, 4), (0.1, 0.5, 4)]:
        want = sim.toy_diagnostics(
            p_hard,
            separation,
            8,
            n_actions=n_actions,
            n_prompts=ns["N_PROMPTS"],
            start_logit=ns["START_LOGIT"],
            key=jax.random.PRNGKey(ns["SEED"]),
        )
        p, a, w, cos, j1, k_star, hard = jax.device_get(diag(p_hard, separation, n_actions))
        assert int(k_star) == want["k_star"]
        np.testing.assert_allclose(float(j1), want["j1"], rtol=1e-6)
        np.testing.assert_allclose(cos[7], want["cos"], rtol=1e-5, atol=1e-6)
