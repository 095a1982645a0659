"""SoftmaxBandit: validation, pytree behaviour, exact gradients, agreements and diagnostics."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
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
        (
            dict(features=np.ones((3, 2)), rewards=np.ones((3, 2)), prompt_weights=np.array([1.2, -0.2, 0.0])),
            ValueError,
            "non-negative",
        ),
        (
            dict(features=np.ones((3, 2)), rewards=np.ones((3, 2)), prompt_weights=np.ones(2) / 2),
            ValueError,
            "prompt_weights",
        ),
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


# The references below differentiate `tests/reference.py`'s own linear-softmax policy and its own
# `1 - (1 - p)^k` (`jnp` power, autodiff's derivative of it): nothing of `theory.pass_at_k` or
# its derivative rule, nor of the bandit's closed forms.


@jax.jit
def _autodiff_reference(b, theta):
    """Autodiff references for one instance (compiled once per shape)."""
    ks = (1, 3, 17)
    f, r, mu = b.features, b.rewards, b.prompt_weights
    # a central difference of the bandit's own objective along a random direction: the gradient
    # must be the derivative of the values (which never see the derivative rule)
    v = jax.random.normal(jax.random.PRNGKey(0), theta.shape, theta.dtype)
    h = 1e-5
    return {
        "g": b.per_prompt_grads(theta),
        "jac": ref.per_prompt_grads(theta, f, r),
        "a": b.agreement_scores(theta),
        "g1": jax.grad(ref.pass1)(theta, f, r, mu),
        "gk_closed": jnp.stack([b.pass_at_k_grad(theta, k) for k in ks]),
        "gk_auto": jnp.stack([jax.grad(ref.passk)(theta, f, r, mu, k) for k in ks]),
        "gk_dir": jnp.stack([jnp.vdot(b.pass_at_k_grad(theta, k), v) for k in ks]),
        "gk_fd": jnp.stack([(b.objective(theta + h * v, k) - b.objective(theta - h * v, k)) / (2 * h) for k in ks]),
    }


@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 10_000))
def test_gradients_and_agreements_match_autodiff(seed):
    with jax.enable_x64(True):
        b, theta = _instance(seed)
        r = _autodiff_reference(b, theta)
        np.testing.assert_allclose(r["g"], r["jac"], atol=1e-14)
        jac = np.asarray(r["jac"]).reshape(b.n_prompts, -1)
        mu = np.asarray(b.prompt_weights)
        # a_i = <grad p_i, grad J_1>, grad J_1 by autodiff of the reference J_1
        np.testing.assert_allclose(r["a"], jac @ np.asarray(r["g1"]).ravel(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mu @ jac, np.asarray(r["g1"]).ravel(), atol=1e-14)
        # the reweighting lemma: grad J_k (closed form, one reverse pass) = autodiff of 1 - (1-p)^k
        np.testing.assert_allclose(r["gk_closed"], r["gk_auto"], rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(r["gk_fd"], r["gk_dir"], rtol=1e-7, atol=1e-10)


_KS = (1, 2, 3, 5, 8, 13, 64, 500)
_K_MAX = 2000


@jax.jit
def _diag_reference(b, theta):
    """Everything `diagnostics` reports, from the reference policy: autodiff gradients of `J_1`
    and of each `J_k`, weights `k (1-p)^(k-1)` written out (in logs, so nothing underflows), and
    `k*` as the first `k <= k_max` whose weighted mean agreement is negative."""
    f, r, mu = b.features, b.rewards, b.prompt_weights
    p = ref.success(theta, f, r)
    g = ref.per_prompt_grads(theta, f, r).reshape(p.shape[0], -1)
    g1 = jax.grad(ref.pass1)(theta, f, r, mu).ravel()
    gk = jnp.stack([jax.grad(ref.passk)(theta, f, r, mu, k).ravel() for k in _KS])
    a = g @ g1

    def log_weights(ks):  # log(mu_i k (1-p_i)^(k-1))
        ks = jnp.asarray(ks, p.dtype)[:, None]
        return jnp.log(mu) + jnp.log(ks) + (ks - 1) * jnp.log1p(-p)

    omega = jax.nn.softmax(log_weights(_KS), axis=-1)
    scan = jax.nn.softmax(log_weights(jnp.arange(1, _K_MAX + 1)), axis=-1) @ a
    negative = scan < 0
    return {
        "diag": b.diagnostics(theta, jnp.array(_KS), k_max=_K_MAX),
        "p": p,
        "a": a,
        "inner": gk @ g1,
        "cos": gk @ g1 / (jnp.linalg.norm(gk, axis=-1) * jnp.linalg.norm(g1)),
        "jk": jnp.stack([ref.passk(theta, f, r, mu, k) for k in _KS]),
        "weights": omega,
        "mean_agreement": omega @ a,
        "k_star": jnp.where(negative.any(), jnp.argmax(negative) + 1, _K_MAX + 1),
    }


@settings(deadline=None, max_examples=6)
@given(seed=st.integers(0, 10_000))
def test_diagnostics_match_autodiff_of_the_reference_policy(seed):
    with jax.enable_x64(True):
        b, theta = _instance(seed, n_prompts=8)
        r = _diag_reference(b, theta)
        d = r["diag"]
        np.testing.assert_allclose(d.p, r["p"], rtol=1e-14)
        np.testing.assert_allclose(d.agreement, r["a"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d.inner, r["inner"], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(d.mean_agreement, r["mean_agreement"], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(d.cos, r["cos"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(d.jk, r["jk"], rtol=1e-12)
        np.testing.assert_allclose(d.weights, r["weights"], rtol=1e-11, atol=1e-300)
        assert int(d.k_star) == int(r["k_star"])


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
