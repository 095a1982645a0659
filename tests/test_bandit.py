"""SoftmaxBandit: validation, pytree behaviour, exact gradients, agreements and diagnostics."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
from sim import SoftmaxBandit


def _instance(seed, n_prompts=6, n_actions=4, dim=3, dtype=jnp.float64, scale=1.5):
    key = jax.random.PRNGKey(seed)
    kf, kr, kt = jax.random.split(key, 3)
    feats = jax.random.normal(kf, (n_prompts, dim), dtype)
    rewards = (jax.random.uniform(kr, (n_prompts, n_actions), dtype) < 0.4).astype(dtype)
    # answer 0 always wrong: p < 1, where autodiff through pass_at_k's log1p(-p) stays finite
    rewards = rewards.at[:, 0].set(0.0)
    theta = scale * jax.random.normal(kt, (n_actions, dim), dtype)
    return SoftmaxBandit(feats, rewards), theta


# --------------------------------------------------------------------------- construction


def test_fields_and_defaults():
    b = SoftmaxBandit(np.eye(3), np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    assert [f.name for f in dataclasses.fields(b)] == ["features", "rewards", "prompt_weights"]
    np.testing.assert_allclose(np.asarray(b.prompt_weights), np.full(3, 1 / 3), rtol=1e-6)
    assert b.rewards.dtype == b.features.dtype
    assert (b.n_prompts, b.n_actions, b.dim, b.param_shape) == (3, 2, 3, (2, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.features = np.eye(3)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(features=np.ones(3), rewards=np.ones((3, 2))), ValueError, "features"),
        (dict(features=np.ones((3, 2)), rewards=np.ones((2, 2))), ValueError, "rewards"),
        (dict(features=np.ones((3, 2)), rewards=np.full((3, 2), 1.5)), ValueError, "rewards must lie in"),
        (dict(features=np.ones((3, 2)), rewards=np.full((3, 2), np.nan)), ValueError, "rewards"),
        (dict(features=np.array([[1.0, np.inf]] * 3), rewards=np.ones((3, 2))), ValueError, "features must be finite"),
        (dict(features=np.ones((3, 2)), rewards=np.ones((3, 2)), prompt_weights=np.ones(3)), ValueError, "sum to 1"),
        (dict(features=np.ones((3, 2)), rewards=np.ones((3, 2)), prompt_weights=np.array([1.2, -0.2, 0.0])), ValueError, "non-negative"),
        (dict(features=np.ones((3, 2)), rewards=np.ones((3, 2)), prompt_weights=np.ones(2) / 2), ValueError, "prompt_weights"),
        (dict(features="abc", rewards=np.ones((3, 2))), TypeError, "features"),
        (dict(features=np.ones((3, 2), bool), rewards=np.ones((3, 2))), TypeError, "features"),
    ],
)
def test_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        SoftmaxBandit(**kwargs)


def test_theta_shape_is_checked():
    b, theta = _instance(0, dtype=jnp.float32)
    with pytest.raises(ValueError, match="theta must have shape"):
        b.success(theta.T)
    with pytest.raises(ValueError, match="ks must be >= 1"):
        b.diagnostics(theta, jnp.array([0, 1]))
    with pytest.raises(TypeError, match="ks"):
        b.diagnostics(theta, jnp.array([1.0, 2.0]))


def test_pytree_jit_vmap():
    b, theta = _instance(1, dtype=jnp.float32)
    leaves, treedef = jax.tree_util.tree_flatten(b)
    assert len(leaves) == 3
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    assert paths == [".features", ".rewards", ".prompt_weights"]
    jitted = jax.jit(lambda bb, th: bb.success(th))(b, theta)
    np.testing.assert_allclose(jitted, b.success(theta), rtol=1e-6)
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), b)
    out = jax.vmap(lambda bb: bb.agreement_scores(theta))(batch)
    np.testing.assert_allclose(out[1], b.agreement_scores(theta), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- exact quantities


def test_tabular_uniform_success():
    b = SoftmaxBandit(jnp.eye(2), jnp.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(b.success(jnp.zeros((2, 2))), [0.5, 0.5])
    np.testing.assert_allclose(b.objective(jnp.zeros((2, 2)), 2), 0.75)
    np.testing.assert_allclose(b.objective(jnp.zeros((2, 2)), jnp.array([1, 2, 3])), [0.5, 0.75, 0.875])


@jax.jit
def _autodiff_reference(b, theta):
    """Autodiff references for one instance (compiled once per shape)."""
    ks = (1, 3, 17)
    return {
        "g": b.per_prompt_grads(theta),
        "jac": jax.jacrev(b.success)(theta),
        "a": b.agreement_scores(theta),
        "g1": jax.grad(lambda th: b.objective(th, 1))(theta),
        "gk_closed": jnp.stack([b.pass_at_k_grad(theta, k) for k in ks]),
        "gk_auto": jnp.stack([jax.grad(lambda th, k=k: b.objective(th, k))(theta) for k in ks]),
    }


@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 10_000))
def test_gradients_and_agreements_match_autodiff(seed):
    with jax.enable_x64(True):
        b, theta = _instance(seed)
        r = _autodiff_reference(b, theta)
        np.testing.assert_allclose(r["g"], r["jac"], atol=1e-14)
        np.testing.assert_allclose(r["a"], theory.agreement_scores(r["g"], b.prompt_weights), atol=1e-14)
        np.testing.assert_allclose(jnp.sum(b.prompt_weights * r["a"]), jnp.vdot(r["g1"], r["g1"]), rtol=1e-12)
        np.testing.assert_allclose(r["gk_closed"], r["gk_auto"], rtol=1e-10, atol=1e-15)


_KS = (1, 2, 3, 5, 8, 13, 64, 500)


@jax.jit
def _diag_reference(b, theta):
    ks = jnp.array(_KS)
    g = b.per_prompt_grads(theta)
    mu = b.prompt_weights
    p = b.success(theta)
    a = theory.agreement_scores(g, mu)
    g1 = jax.grad(lambda th: b.objective(th, 1))(theta).ravel()
    g8 = jax.grad(lambda th: b.objective(th, 8))(theta).ravel()
    return {
        "diag": b.diagnostics(theta, ks, k_max=2000),
        "p": p,
        "a": a,
        "inner": theory.conflict_inner_product(p, a, ks, mu),
        "mean_agreement": theory.weighted_mean_agreement(p, a, ks, mu),
        "cos": theory.gradient_cosine(g, p, ks, mu),
        "jk": jnp.stack([b.objective(theta, k) for k in _KS]),
        "weights": theory.normalized_weights(p, ks, mu),
        "cos8": g8 @ g1 / jnp.linalg.norm(g8) / jnp.linalg.norm(g1),
    }


@settings(deadline=None, max_examples=6)
@given(seed=st.integers(0, 10_000))
def test_diagnostics_match_theory_with_explicit_gradients(seed):
    with jax.enable_x64(True):
        b, theta = _instance(seed, n_prompts=8)
        r = _diag_reference(b, theta)
        d = r["diag"]
        np.testing.assert_allclose(d.p, r["p"], rtol=1e-14)
        np.testing.assert_allclose(d.agreement, r["a"], atol=1e-14)
        np.testing.assert_allclose(d.inner, r["inner"], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(d.mean_agreement, r["mean_agreement"], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(d.cos, r["cos"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(d.jk, r["jk"], rtol=1e-12)
        np.testing.assert_allclose(d.weights, r["weights"], rtol=1e-12)
        ref = theory.critical_k(r["p"], r["a"], b.prompt_weights, k_max=2000)
        assert int(d.k_star) == (2001 if ref is None else ref)
        # cos from passes (fixed omega) equals the cosine of the autodiff gradients
        np.testing.assert_allclose(d.cos[_KS.index(8)], r["cos8"], rtol=1e-9)


def test_scalar_k_diagnostics():
    b, theta = _instance(3, dtype=jnp.float32)
    d = b.diagnostics(theta, 4)
    assert d.inner.shape == () and d.weights.shape == (b.n_prompts,)


def test_agreements_never_form_per_prompt_gradients():
    """The jaxpr of `agreement_scores` holds no array as large as the (P, A, d) Jacobian."""
    n_prompts, n_actions, dim = 512, 8, 16
    b, theta = _instance(4, n_prompts, n_actions, dim, dtype=jnp.float32)
    jaxpr = jax.make_jaxpr(b.agreement_scores)(theta)
    sizes = []

    def walk(jx):
        for eqn in jx.eqns:
            for v in eqn.outvars:
                sizes.append(int(np.prod(getattr(v.aval, "shape", ()))))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jaxpr.jaxpr)
    assert max(sizes) < n_prompts * n_actions * dim
    assert max(sizes) <= n_prompts * max(n_actions, dim)


_hessian = jax.jit(lambda b, theta: jax.hessian(b.success)(theta))


@settings(deadline=None, max_examples=6)
@given(seed=st.integers(0, 10_000))
def test_hessian_norm_below_softmax_bound(seed):
    """SPEC 5 check: ||hess p_i|| <= B^2/2 (`theory.softmax_smoothness_bound`)."""
    with jax.enable_x64(True):
        b, theta = _instance(seed, n_prompts=5, n_actions=4, dim=3, scale=2.0)
        h = _hessian(b, theta).reshape(5, 12, 12)
        norms = np.max(np.abs(np.linalg.eigvalsh(np.asarray(h))), axis=-1)
        bound = float(theory.softmax_smoothness_bound(b.feature_norm))
        assert norms.max() <= bound * (1 + 1e-12)
