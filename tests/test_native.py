"""The compiled kernel of `theory/native.py`: the answer sums `G`, `Q` in one pass over the scores.

Checked against a float64 numpy reference (tolerances per dtype below) and against the XLA formula
of `theory.answers` (with binary rewards, `G` bit for bit), under `jit`, `vmap` and `jvp`, with
several threads, and for what happens when it cannot be built.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import theory
from theory import native
from theory import answers as answers_module

ROOT = Path(__file__).resolve().parents[1]
# Relative tolerance of Q against the float64 reference: its squared norms are summed in another
# order than numpy's, so a few units in the last place per term, over up to 64 x 1024 terms.
Q_RTOL = {np.float32: 2e-5, np.float64: 1e-12}
# Shapes (leading prompt axes..., n, D): one prompt and D = 1, D not a multiple of the kernel's
# 16 lanes, P not a multiple of its 16-prompt blocks, two leading axes, and a size split over threads.
SHAPES = [(1, 2, 1), (5, 7, 33), (19, 3, 16), (2, 3, 4, 5), (67, 16, 1024)]

needs_kernel = pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler on this machine")


def reference_sums(r, s):
    """`G_i = sum_j r_ij s_ij`, `Q_i = sum_j r_ij ||s_ij||^2` in float64 numpy."""
    r64, s64 = np.asarray(r, np.float64), np.asarray(s, np.float64)
    return np.einsum("...n,...nd->...d", r64, s64), np.einsum("...n,...nd->...", r64, s64 * s64)


def xla_sums(r, s):
    """The XLA formula of `theory.answers` (answer by answer, left to right) for any leading axes."""
    n = r.shape[-1]
    g = r[..., 0, None] * s[..., 0, :]
    for j in range(1, n):
        g = g + r[..., j, None] * s[..., j, :]
    return g, jnp.sum(r * jnp.sum(s * s, axis=-1), axis=-1)


def draw(seed, shape, dtype, binary=True):
    rng = np.random.default_rng(seed)
    r = (rng.random(shape[:-1]) < 0.5) if binary else rng.normal(size=shape[:-1])
    s = rng.normal(size=shape) * rng.choice([1e-3, 1.0, 1e3])
    return jnp.asarray(r, dtype), jnp.asarray(s, dtype)


@needs_kernel
def test_kernel_builds_where_a_compiler_exists():
    status = theory.native_status()
    assert status.available, status.reason
    assert native.usable(np.float32) and native.usable(np.float64)
    assert not native.usable(np.float16)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(SHAPES), binary=st.booleans())
def test_sums_match_reference_and_xla_formula(dtype, seed, shape, binary):
    r, s = draw(seed, shape, dtype, binary)
    g, q = jax.jit(native.answer_sums_native)(r, s)
    assert g.dtype == dtype and q.dtype == dtype
    assert g.shape == shape[:-2] + shape[-1:] and q.shape == shape[:-2]
    g_ref, q_ref = reference_sums(r, s)
    scale = np.einsum("...n,...nd->...d", np.abs(np.asarray(r, np.float64)), np.abs(np.asarray(s, np.float64)))
    g_tol = 4 * shape[-2] * np.finfo(dtype).eps * scale + 1e-300  # n roundings of a sum of |terms|
    np.testing.assert_array_less(np.abs(np.asarray(g, np.float64) - g_ref), g_tol)
    q_scale = np.einsum("...n,...nd->...", np.abs(np.asarray(r, np.float64)), np.asarray(s, np.float64) ** 2)
    np.testing.assert_array_less(np.abs(np.asarray(q, np.float64) - q_ref), Q_RTOL[dtype] * q_scale + 1e-300)
    if binary:  # with rewards in {0, 1} every product is exact: the same sums in the same order
        g_xla, _ = jax.jit(xla_sums)(r, s)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(g_xla))


@needs_kernel
def test_bad_input_is_named():
    r, s = draw(6, (3, 4, 5), np.float64)
    with pytest.raises(TypeError, match="float32 or float64.*float16"):
        native.answer_sums_native(r, s.astype(jnp.float16))
    with pytest.raises(ValueError, match=r"rewards must have shape \(\.\.\., n\) = \(3, 4\).*got \(3, 5\)"):
        native.answer_sums_native(jnp.ones((3, 5)), s)


@needs_kernel
def test_vmap_is_more_prompts():
    r, s = draw(1, (3, 6, 5, 9), np.float64)
    g, q = jax.vmap(native.answer_sums_native)(r, s)
    for b in range(3):
        g_b, q_b = native.answer_sums_native(r[b], s[b])
        np.testing.assert_array_equal(np.asarray(g[b]), np.asarray(g_b))
        np.testing.assert_array_equal(np.asarray(q[b]), np.asarray(q_b))


@needs_kernel
def test_jvp_and_vjp_match_the_xla_formula():
    r, s = draw(2, (4, 5, 6), np.float64, binary=False)
    dr, ds = draw(3, (4, 5, 6), np.float64, binary=False)
    _, (dg, dq) = jax.jvp(native.answer_sums_native, (r, s), (dr, ds))
    _, (dg_ref, dq_ref) = jax.jvp(xla_sums, (r, s), (dr, ds))
    np.testing.assert_allclose(dg, dg_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dq, dq_ref, rtol=1e-12, atol=1e-12)

    def loss(fn, r, s):
        g, q = fn(r, s)
        return jnp.sum(jnp.sin(g)) + jnp.sum(q**2)

    grads = jax.grad(lambda r, s: loss(native.answer_sums_native, r, s), argnums=(0, 1))(r, s)
    grads_ref = jax.grad(lambda r, s: loss(xla_sums, r, s), argnums=(0, 1))(r, s)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@needs_kernel
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_score_of_a_wrong_answer_makes_the_sums_non_finite(bad):
    r, s = draw(4, (3, 4, 5), np.float64)
    r = r.at[1, 2].set(0.0)
    s = s.at[1, 2, 3].set(bad)
    g, q = native.answer_sums_native(r, s)
    assert not np.isfinite(np.asarray(g[1, 3])) and not np.isfinite(np.asarray(q[1]))
    assert np.all(np.isfinite(np.asarray(g[0]))) and np.isfinite(np.asarray(q[0]))
    with pytest.raises(ValueError, match=r"scores must be finite.*prompt 1 \(answer 2, coordinate 3\)"):
        theory.answer_statistics(np.asarray(r), np.asarray(s))


@needs_kernel
def test_statistics_equal_with_and_without_the_kernel(monkeypatch):
    r, s = draw(5, (33, 8, 21), np.float64)
    with_kernel = theory.answer_statistics(r, s)
    monkeypatch.setattr(native, "usable", lambda dtype: False)
    without = answers_module.AnswerStatistics(*jax.jit(lambda r, s: answers_module._statistics(r, s)[:3])(r, s), n=8)
    np.testing.assert_array_equal(with_kernel.correct, without.correct)
    np.testing.assert_array_equal(with_kernel.mean_score, without.mean_score)
    np.testing.assert_allclose(with_kernel.pair, without.pair, rtol=1e-12, atol=1e-15)


def _child(env_extra: dict, tmp_path) -> str:
    """Run a fresh process that reports `native_status()` and checks `answer_statistics`."""
    code = textwrap.dedent(
        """
        import numpy as np, theory
        from theory import native
        status = theory.native_status()
        rng = np.random.default_rng(0)
        r, s = rng.random((6, 4)) < 0.5, rng.normal(size=(6, 4, 3))
        stats = theory.answer_statistics(r, s)
        g = np.einsum("pn,pnd->pd", r, s) / 4
        assert np.allclose(stats.mean_score, g, rtol=1e-5, atol=1e-6)
        print(status.available, "|", status.reason)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", native.DISABLE_NATIVE_ENV)}
    env.update({native.NATIVE_DIR_ENV: str(tmp_path / "native")}, **env_extra)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_without_a_working_compiler_the_xla_formulas_are_used(tmp_path):
    out = _child({"CXX": "false"}, tmp_path)
    assert out.startswith("False |") and "failed to build" in out
    assert not [p for p in (tmp_path / "native").rglob("*") if p.is_file()]  # no half-written library left
    off = _child({native.DISABLE_NATIVE_ENV: "1"}, tmp_path)
    assert off.startswith(f"False | turned off by {native.DISABLE_NATIVE_ENV}")


@needs_kernel
def test_built_once_then_loaded(tmp_path):
    assert _child({}, tmp_path) == "True | built"
    assert _child({}, tmp_path) == "True | loaded"
    files = [p.name for p in (tmp_path / "native").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].startswith("answer_sums-") and files[0].endswith(".so")
