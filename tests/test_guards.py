"""`sim.guards`: conflict-safe optax transformations (SPEC sections 5 and 8).

Closed-form properties on random instances (the guarded step against the constraint it promises),
state under `jit`, traced constants (one compilation serves every value), the two chain positions,
and a training loop on the toy bandit where plain pass@k ascent with Adam lowers pass@1 and the
guarded one does not.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import theory  # noqa: E402
from sim.guards import conflict_guard, sampled_surrogate  # noqa: E402
from sim.toy import toy_bandit  # noqa: E402

SHAPES = {"w": (3, 2), "b": (4,)}  # one fixed pytree shape: 10 parameters


def tree(rng, scale=1.0):
    return {name: jnp.asarray(scale * rng.normal(size=shape)) for name, shape in SHAPES.items()}


def flat(t):
    return np.concatenate([np.asarray(t[name]).ravel() for name in sorted(t)])


def conflicting_pair(rng):
    """`(v, g1)` with `<g1, v> < 0`: v is drawn, then g1 = -v + noise scaled to keep the sign."""
    v = tree(rng)
    noise = tree(rng, 0.3)
    g1 = {name: -v[name] + noise[name] for name in v}
    if flat(g1) @ flat(v) >= 0:  # pragma: no cover - the noise is too small to flip the sign
        g1 = {name: -v[name] for name in v}
    return v, g1


def apply(guard, updates, g1):
    state = guard.init(updates)
    return guard.update(updates, state, pass1_grad=g1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), conflict=st.booleans())
def test_project_meets_its_constraint_and_is_the_closest_such_step(seed, conflict):
    rng = np.random.default_rng(seed)
    v, g1 = conflicting_pair(rng) if conflict else (tree(rng), tree(rng))
    out, state = apply(conflict_guard("project-step"), v, g1)
    o, a, b = flat(out), flat(v), flat(g1)
    assert o @ b >= -1e-12 * np.linalg.norm(a) * np.linalg.norm(b)
    if a @ b >= 0:
        np.testing.assert_array_equal(o, a)  # nothing to guard: unchanged
        assert int(state.guarded) == 0
    else:
        # KKT of the projection onto the half-space <g1, x> >= 0: the change is along g1, the
        # constraint is active, and the guarded step still agrees with the original.
        change = o - a
        np.testing.assert_allclose(change - (change @ b) / (b @ b) * b, 0.0, atol=1e-12)
        assert abs(o @ b) <= 1e-12 * np.linalg.norm(a) * np.linalg.norm(b)
        assert o @ a >= 0 and int(state.guarded) == 1
    assert float(state.inner_before) == pytest.approx(a @ b, rel=1e-12, abs=1e-14)
    assert float(state.inner_after) == pytest.approx(o @ b, rel=1e-12, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), smoothness=st.floats(0.01, 10.0), step=st.floats(0.01, 2.0))
def test_project_safe_meets_the_descent_lemma_constraint(seed, smoothness, step):
    rng = np.random.default_rng(seed)
    v, g1 = conflicting_pair(rng)
    # as a step: <g1, v'> >= (L/2) ||v'||^2
    out, _ = apply(conflict_guard("project-safe-step", smoothness=smoothness), v, g1)
    o, b = flat(out), flat(g1)
    assert o @ b >= smoothness / 2 * (o @ o) - 1e-10 * (1 + o @ o)
    # as a loss gradient u = -g_k with an SGD step eta: the step -eta u' meets it at eta
    loss_grad = {name: -x for name, x in v.items()}
    out, _ = apply(conflict_guard("project-safe", smoothness=smoothness, step_size=step), loss_grad, g1)
    s = -step * flat(out)
    assert s @ b >= smoothness / 2 * (s @ s) - 1e-10 * (1 + s @ s)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lam=st.floats(0.0, 5.0))
def test_mixture_is_v_plus_lambda_g1_and_its_adaptive_lambda_is_the_projection(seed, lam):
    rng = np.random.default_rng(seed)
    v, g1 = conflicting_pair(rng)
    out, _ = apply(conflict_guard("mixture-step", mixture_weight=lam), v, g1)
    np.testing.assert_allclose(flat(out), flat(v) + lam * flat(g1), rtol=1e-13, atol=1e-13)
    adaptive, _ = apply(conflict_guard("mixture-step"), v, g1)
    projected, _ = apply(conflict_guard("project-step"), v, g1)
    np.testing.assert_allclose(flat(adaptive), flat(projected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["project", "mixture"])
def test_direction_rule_is_its_step_twin_with_the_sign_flipped(rule):
    rng = np.random.default_rng(3)
    v, g1 = conflicting_pair(rng)
    as_step, _ = apply(conflict_guard(f"{rule}-step"), v, g1)
    as_grad, _ = apply(conflict_guard(rule), {n: -x for n, x in v.items()}, g1)
    np.testing.assert_allclose(flat(as_grad), -flat(as_step), rtol=1e-14)


def test_state_counts_under_jit_and_inside_a_chain():
    rng = np.random.default_rng(0)
    opt = optax.chain(optax.sgd(0.1), conflict_guard("project-step"))
    params = tree(rng)
    state = opt.init(params)
    update = jax.jit(opt.update)
    conflicts = 0
    for _ in range(6):
        grads, g1 = tree(rng), tree(rng)
        conflicts += int(flat(grads) @ flat(g1) > 0)  # the SGD step -0.1 grads conflicts with g1
        updates, state = update(grads, state, params, pass1_grad=g1)
        assert flat(updates) @ flat(g1) >= -1e-12
    guard_state = state[1]
    assert int(guard_state.count) == 6 and int(guard_state.guarded) == conflicts


def test_traced_constants_compile_once_and_give_the_static_guards_numbers():
    # A guard built inside jit from traced L_1 and lambda: one compiled program serves every value
    # (the Python body runs once per compilation) and gives the numbers of the guard built from
    # Python floats.
    rng = np.random.default_rng(5)
    v, g1 = conflicting_pair(rng)
    traces = []

    @jax.jit
    def guarded(v, g1, smoothness, weight):
        traces.append(smoothness)  # a trace-time side effect: one entry per compilation
        safe, state = apply(conflict_guard("project-safe-step", smoothness=smoothness), v, g1)
        mixed, _ = apply(conflict_guard("mixture-step", mixture_weight=weight), v, g1)
        return safe, mixed, state

    outputs = []
    for smoothness, weight in ((0.5, 0.2), (4.0, 1.5)):
        safe, mixed, state = guarded(v, g1, jnp.asarray(smoothness), jnp.asarray(weight))
        want_safe, want_state = apply(conflict_guard("project-safe-step", smoothness=smoothness), v, g1)
        want_mixed, _ = apply(conflict_guard("mixture-step", mixture_weight=weight), v, g1)
        np.testing.assert_allclose(flat(safe), flat(want_safe), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(flat(mixed), flat(want_mixed), rtol=1e-12, atol=1e-14)
        assert int(state.guarded) == int(want_state.guarded) == 1
        assert float(state.inner_after) == pytest.approx(float(want_state.inner_after), rel=1e-12)
        outputs.append(flat(safe))
    assert len(traces) == 1
    assert not np.allclose(outputs[0], outputs[1])  # the value reached the compiled program


def toy_losses(bandit, k):
    """Loss (-J_k) and its pass@1 gradient, both written from the policy (independent of theory)."""

    def j(theta, order):
        p = bandit.success(theta)
        return jnp.sum(bandit.prompt_weights * (1.0 - (1.0 - p) ** order))

    return (lambda th: -j(th, k)), jax.grad(lambda th: j(th, 1))


@pytest.mark.parametrize("rule", ["project-step", "project-safe-step"])
def test_guard_after_adam_keeps_pass1_on_the_toy_while_plain_adam_lowers_it(rule):
    # The toy at its start, past k* (k = 16): plain Adam on -J_k lowers J_1 within 20 steps. The
    # guard after Adam sees the applied step: "project-safe-step" (with the softmax smoothness bound)
    # keeps J_1 from falling at every step while J_k still rises; "project-step" only removes the
    # first-order loss (SPEC section 8: second-order terms can still lower J_1), so it is held
    # to <g_1, u> >= 0 at every step and to a smaller loss of J_1 than plain Adam.
    bandit, theta0 = toy_bandit(jax.random.key(0), n_prompts=64, dtype=jnp.float64)
    k, lr, steps = 16, 0.05, 20
    loss, grad1 = toy_losses(bandit, k)
    kwargs = (
        dict(smoothness=float(theory.softmax_smoothness_bound(bandit.feature_norm)))
        if rule == "project-safe-step"
        else {}
    )

    def run(opt):
        theta, state = theta0, opt.init(theta0)
        j1, first_order = [float(bandit.objective(theta, 1))], []
        for _ in range(steps):
            g1 = grad1(theta)
            updates, state = opt.update(jax.grad(loss)(theta), state, theta, pass1_grad=g1)
            first_order.append(float(jnp.vdot(g1, updates)))
            theta = optax.apply_updates(theta, updates)
            j1.append(float(bandit.objective(theta, 1)))
        return np.array(j1), np.array(first_order), float(-loss(theta))

    plain, plain_first, _ = run(optax.adam(lr))
    guarded, guarded_first, jk_guarded = run(optax.chain(optax.adam(lr), conflict_guard(rule, **kwargs)))
    assert plain[-1] < plain[0] - 1e-3 and plain_first.min() < 0  # the control: Adam lowers pass@1 here
    assert guarded_first.min() >= -1e-15
    if rule == "project-safe-step":
        assert np.all(np.diff(guarded) >= -1e-12), np.diff(guarded).min()
    else:
        assert guarded[-1] > plain[-1]
    assert jk_guarded > float(-loss(theta0))


def test_sampled_surrogate_gradient_is_the_estimators_update():
    # grad of sum_i mu_i sum_j s_ij log pi_ij in log pi is mu_i s_ij, with s from the table.
    rng = np.random.default_rng(1)
    logp = jnp.asarray(np.log(rng.uniform(0.1, 1.0, size=(3, 5))))
    rewards = (rng.uniform(size=(3, 5)) < 0.5).astype(np.float64)
    mu = np.array([0.2, 0.3, 0.5])
    for est, k in (("rloo", None), ("pkpo-loo-1", 3)):
        got = jax.grad(lambda lp: sampled_surrogate(lp, rewards, estimator=est, k=k, mu=mu))(logp)
        want = mu[:, None] * np.asarray(theory.gradient_estimator(est).coefficients(rewards, k))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-14)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: conflict_guard("pcgrad"), ValueError, r"rule must be one of .*'pcgrad'"),
        (lambda: conflict_guard("passk"), ValueError, r"rule must be one of .*'passk'"),
        (lambda: conflict_guard(sees="params"), ValueError, r"sees must be one of .*'params'"),
        (
            lambda: conflict_guard("project", sees="step"),
            ValueError,
            r"'project' acts on the direction.*'project-step'",
        ),
        (lambda: conflict_guard("project-safe-step"), ValueError, r"smoothness .* required"),
        (lambda: conflict_guard("project-safe-step", smoothness=-1.0), ValueError, r"smoothness must be .*-1.0"),
        (lambda: conflict_guard("project-safe", smoothness=1.0), ValueError, r"step_size .* required"),
        (
            lambda: conflict_guard("project-safe-step", smoothness=1.0, step_size=0.1),
            ValueError,
            r"step_size applies to direction rules",
        ),
        (lambda: conflict_guard("project-step", smoothness=1.0), ValueError, r"smoothness applies to the step-safe"),
        (
            lambda: conflict_guard("project-step", mixture_weight=0.5),
            ValueError,
            r"mixture_weight applies to the mixture",
        ),
        (
            lambda: conflict_guard("mixture-step", mixture_weight=float("nan")),
            ValueError,
            r"mixture_weight must be .*nan",
        ),
        # concrete arrays are checked like numbers; traced ones by shape only
        (
            lambda: conflict_guard("project-safe-step", smoothness=jnp.asarray(-1.0)),
            ValueError,
            r"smoothness must be .*-1.0",
        ),
        (
            lambda: conflict_guard("mixture-step", mixture_weight=np.array([0.5])),
            ValueError,
            r"mixture_weight must be .*0.5",
        ),
        (
            lambda: jax.jit(lambda w: conflict_guard("mixture-step", mixture_weight=w).init(w))(jnp.ones(2)),
            ValueError,
            r"mixture_weight must be a real scalar; got a traced array of shape \(2,\)",
        ),
        (
            lambda: sampled_surrogate(jnp.zeros((2, 3)), np.zeros((2, 3)), estimator="pkpo"),
            ValueError,
            r"k is required",
        ),
        (lambda: sampled_surrogate(jnp.zeros((2, 3)), np.zeros((2, 4))), ValueError, r"shape \(P, n\)"),
    ],
)
def test_bad_arguments_raise_naming_them(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_update_without_pass1_grad_or_with_another_structure_raises():
    guard = conflict_guard()
    params = {"w": jnp.ones(3)}
    state = guard.init(params)
    with pytest.raises(TypeError, match=r"pass1_grad"):
        guard.update(params, state)
    with pytest.raises(ValueError, match=r"pass1_grad must have the structure"):
        guard.update(params, state, pass1_grad={"v": jnp.ones(3)})
