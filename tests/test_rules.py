"""Every entry of `sim.rules.RULE_TABLE` through the same invariants (SPEC sections 5 and 8).

A rule added to the table is picked up here without a line of test code:

- its fields agree with its name and with one another;
- on random conflicting and aligned pairs: a rule that reads `g_1` never leaves `<g_1, v'> < 0`
  (the mixtures with the adaptive `lambda`), changes nothing without a conflict (projections),
  and the step-safe projections meet the descent-lemma bound `<g_1, v'> >= (L_1 eta / 2)||v'||^2`;
- a direction rule and its step twin (same formula) give the same update under SGD;
- the orders: `"1"` is 1, `"k"` is `k`, `"k'"` stays below `k*` (and within `1..k`);
- both trainers accept every entry: the bandit trainer (SGD twins agree step for step, and a
  conflict-safe rule never takes `<g_1, u> < 0`) and the transformer's `PGConfig`.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import theory  # noqa: E402
from sim import rules, toy_bandit, train  # noqa: E402
from sim.records import RECORD_NAMES as R  # noqa: E402
from sim.transformer import pg_step  # noqa: E402
from sim.transformer import train as transformer_train  # noqa: E402

NAMES = list(rules.RULE_TABLE)
DIM = 6
SMOOTHNESS = 0.5


def _twins():
    """(direction rule, step rule) pairs with the same formula."""
    pairs = []
    for name, rule in rules.RULE_TABLE.items():
        if rule.acts_on == "step":
            same = [
                d for d, r in rules.RULE_TABLE.items() if r.acts_on == "direction" and r.transform is rule.transform
            ]
            pairs += [(d, name) for d in same]
    return pairs


def _kwargs(rule, step_size, mixture_weight=None):
    return dict(
        step_size=step_size,
        smoothness=SMOOTHNESS if rule.uses_smoothness else None,
        mixture_weight=mixture_weight if rule.uses_mixture_weight else None,
    )


vectors = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=DIM, max_size=DIM).map(
    lambda x: jnp.asarray(x, jnp.float64)
)


def test_entries_name_themselves_and_their_fields_agree():
    assert rules.RULES == tuple(rules.RULE_TABLE)
    assert set(rules.GUARD_RULES) == {n for n, r in rules.RULE_TABLE.items() if r.reads_g1}
    for name, rule in rules.RULE_TABLE.items():
        assert rule.name == name and rules.update_rule(name) is rule
        assert rule.acts_on in rules.ACTS_ON and rule.order in rules.ORDERS
        assert rule.formula and rule.reads in ("1", "k", "k*->k'", "k, 1")
        assert rule.reads_k_star == (rule.order == "k'")
        # one meaning per name: a step rule says so in its name, a direction rule does not
        assert name.endswith("-step") == (rule.acts_on == "step"), name
    assert {d for d, _ in _twins()} == {
        n for n, r in rules.RULE_TABLE.items() if r.reads_g1 and r.acts_on == "direction"
    }
    with pytest.raises(ValueError, match=r"rule must be one of .*'pcgrad'"):
        rules.update_rule("pcgrad")
    with pytest.raises(ValueError, match="acts_on"):
        rules.UpdateRule("x", "v", lambda v, g1, **_: v, acts_on="params")


@settings(max_examples=40, deadline=None)
@given(v=vectors, g1=vectors, step=st.sampled_from([0.1, 1.0, 3.0]))
@pytest.mark.parametrize("name", NAMES)
def test_invariants_of_every_entry(name, v, g1, step):
    rule = rules.RULE_TABLE[name]
    out = rule.apply(v, g1, **_kwargs(rule, step))
    assert out.shape == v.shape and bool(jnp.all(jnp.isfinite(out)))
    inner = float(jnp.vdot(g1, out))
    scale = 1e-9 * (1.0 + float(jnp.vdot(v, v)) + float(jnp.vdot(g1, g1)))
    if not rule.reads_g1:
        np.testing.assert_array_equal(out, v)
        return
    if rule.guards:  # what a conflict-safe entry promises: never <g_1, v'> < 0
        assert inner >= -scale, inner
        if rule.uses_smoothness:  # the descent lemma: eta <g_1, v'> >= (L_1 eta^2 / 2) ||v'||^2
            assert inner >= SMOOTHNESS * step / 2 * float(jnp.vdot(out, out)) - scale
    if rule.keeps_unconflicted and float(jnp.vdot(g1, v)) >= 0:  # no conflict: v is kept
        np.testing.assert_allclose(out, v, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(g=vectors, g1=vectors, lr=st.sampled_from([0.05, 0.5, 1.0, 2.0]))
@pytest.mark.parametrize("pair", _twins(), ids=lambda p: f"{p[0]}|{p[1]}")
def test_direction_rule_and_its_step_twin_agree_under_sgd(pair, g, g1, lr):
    """SGD turns a direction `g'` into the step `lr g'`; the step twin acts on `u = lr g` with step
    size 1. A fixed mixture weight is in units of the step: `lambda_step = lr lambda`."""
    direction, step = rules.RULE_TABLE[pair[0]], rules.RULE_TABLE[pair[1]]
    via_direction = lr * direction.apply(g, g1, **_kwargs(direction, lr))
    via_step = step.apply(lr * g, g1, **_kwargs(step, 1.0))
    np.testing.assert_allclose(via_step, via_direction, rtol=1e-9, atol=1e-12)
    if direction.uses_mixture_weight:
        fixed = lr * direction.apply(g, g1, **_kwargs(direction, lr, mixture_weight=0.3))
        np.testing.assert_allclose(
            step.apply(lr * g, g1, **_kwargs(step, 1.0, mixture_weight=lr * 0.3)), fixed, rtol=1e-9, atol=1e-12
        )


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 64), k_star=st.integers(1, 65))
@pytest.mark.parametrize("name", NAMES)
def test_orders(name, k, k_star):
    rule = rules.RULE_TABLE[name]
    got = int(rule.order_of(jnp.int32(k), jnp.int32(k_star)))
    if rule.order == "1":
        assert got == 1
    elif rule.order == "k":
        assert got == k
    else:  # safe k: below k* where there is room, never above k, at least 1
        assert 1 <= got <= k
        assert got < k_star or k_star == 1
        assert got == min(k, k_star - 1) or k_star == 1


@pytest.fixture(scope="module")
def toy():
    b, theta0 = toy_bandit(jax.random.PRNGKey(0), n_prompts=32)
    k_star = int(b.diagnostics(theta0, 1).k_star)
    return b, theta0, k_star


def test_bandit_trainer_accepts_every_entry_and_sgd_twins_agree(toy):
    b, theta0, k_star = toy
    k, lr = 2 * k_star, 0.5
    smooth = float(theory.softmax_smoothness_bound(b.feature_norm))
    kw = dict(k=k, steps=4, key=jax.random.PRNGKey(1), learning_rate=lr)
    out = {name: train(b, theta0, rule=name, **kw) for name in NAMES}
    for name, rule in rules.RULE_TABLE.items():
        assert set(R) <= set(out[name])
        if rule.guards:  # exact g_1: a conflict-safe rule never takes <g_1, u> < 0
            assert out[name][R.update_inner].min() >= -1e-12, name
        if rule.uses_smoothness:  # and the step-safe ones keep J_1 from falling under SGD
            assert np.all(np.diff(out[name][R.j1]) >= -1e-12), name
            assert smooth > 0
    assert out["passk"][R.update_inner].min() < 0  # the control: plain pass@k past k* lowers J_1
    for d, s in _twins():
        for name in (R.j1, R.jk, R.update_inner, R.update_norm):
            np.testing.assert_allclose(out[s][name], out[d][name], rtol=1e-9, atol=1e-12, err_msg=f"{d}|{s} {name}")
    # a fixed mixture weight, step units: lambda_step = lr lambda
    fixed_d = train(b, theta0, rule="mixture", mixture_weight=0.4, **kw)
    fixed_s = train(b, theta0, rule="mixture-step", mixture_weight=0.4 * lr, **kw)
    np.testing.assert_allclose(fixed_s[R.j1], fixed_d[R.j1], rtol=1e-9)


def test_transformer_config_accepts_every_entry():
    for name, rule in rules.RULE_TABLE.items():
        pg = transformer_train.PGConfig(
            estimator="pkpo-loo-1", k=4, rule=name, smoothness=1.0 if rule.uses_smoothness else None
        )
        assert pg.rule == name
        args = pg_step.rule_args(pg)
        assert (int(args.guard) > 0) == rule.reads_g1 and bool(args.moves_k) == rule.reads_k_star
        if not rule.uses_smoothness:
            with pytest.raises(ValueError, match="smoothness"):
                transformer_train.PGConfig(estimator="exact", k=4, rule=name, smoothness=1.0)
        if not rule.uses_mixture_weight:
            with pytest.raises(ValueError, match="mixture_weight"):
                transformer_train.PGConfig(estimator="exact", k=4, rule=name, mixture_weight=1.0)
