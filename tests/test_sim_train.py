"""Training: rules, estimators, records, the config, the unbatched core, sweep axes and validation."""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import ESTIMATORS, toy_bandit, train, train_sweep
from sim import sweep as S
from sim.answers import sampled_updates
from sim.train import RECORD_NAMES as R
from sim.train import RULE_TABLE, RULES, Records, TrainConfig, UpdateRule


@pytest.fixture(scope="module")
def toy():
    b, theta0 = toy_bandit(jax.random.PRNGKey(0), n_prompts=64)
    k_star = int(b.diagnostics(theta0, 1).k_star)
    return b, theta0, k_star


@pytest.mark.slow
def test_rules_in_one_compiled_sweep(toy):
    """Exact plain steps: pass@1 ascent raises J_1; pass@k above k* lowers J_1 and raises J_k;
    the projection never loses pass@1 to first order; the step-safe projection never loses it."""
    b, theta0, k_star = toy
    lr = 1.0
    rules = ("passk", "project", "project-safe", "safe-k")
    ks = [1, 4 * k_star]
    out = train_sweep(
        jax.tree_util.tree_map(lambda x: x[None], b),
        theta0[None],
        ks=ks,
        keys=jax.random.split(jax.random.PRNGKey(1), 1),
        steps=15,
        rule=rules,
        learning_rate=lr,
    )
    assert out[R.j1].shape == (4, 1, 2, 1, 16) and out[R.update_inner].shape == (4, 1, 2, 1, 15)
    assert out["theta"].shape == (4, 1, 2, 1) + theta0.shape
    j1, jk = out[R.j1][:, 0, :, 0], out[R.jk][:, 0, :, 0]
    passk, project, safe, safe_k = range(4)
    assert np.all(np.diff(j1[passk, 0]) > 0)  # k = 1 is pass@1 ascent
    assert np.all(np.diff(j1[passk, 1]) < 0) and np.all(np.diff(jk[passk, 1]) > 0)  # k > k*
    # sgd: the update is lr * g_k, so <g_1, u> = lr * I_k
    np.testing.assert_allclose(out[R.update_inner][passk, 0, 1, 0], lr * out[R.inner][passk, 0, 1, 0, :-1], rtol=1e-4)
    assert np.all(out[R.update_inner][project, 0, 1, 0] >= -1e-7)
    assert np.all(np.diff(j1[safe, 1]) >= 0) and jk[safe, 1, -1] > jk[safe, 1, 0]
    k_used = out[R.k_used][safe_k, 0, 1, 0]
    k_star_path = out[R.k_star][safe_k, 0, 1, 0, :-1]
    assert np.all(k_used == np.clip(k_star_path - 1, 1, ks[1]))
    assert np.all(np.diff(j1[safe_k, 1]) > 0)


@pytest.mark.slow
def test_train_matches_sweep_entry(toy):
    """`train` equals the corresponding entry of `train_sweep` (same records, same order)."""
    b, theta0, k_star = toy
    single = train(b, theta0, k=8, steps=5, key=jax.random.PRNGKey(3), optimizer="adam", learning_rate=0.05)
    sweep = train_sweep(
        jax.tree_util.tree_map(lambda x: x[None], b),
        theta0[None],
        ks=[2, 8],
        keys=jax.random.PRNGKey(3)[None],
        steps=5,
        optimizer="adam",
        learning_rate=0.05,
    )
    assert list(single) == list(sweep) == list(R) + ["theta"]
    for name in single:  # `train` is the unbatched core; the sweep vmaps it: equal to float rounding
        want = sweep[name][0, 1, 0]
        np.testing.assert_allclose(single[name], want, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(want)), err_msg=name)
    np.testing.assert_array_equal(single[R.k_star], sweep[R.k_star][0, 1, 0])
    assert single[R.j1].shape == (6,) and single[R.update_inner].shape == (5,)


@pytest.mark.slow
def test_sampled_estimators_train(toy):
    """Every sampled estimator runs inside the scan; PKPO at k > k* follows the exact descent."""
    b, theta0, k_star = toy
    bb = jax.tree_util.tree_map(lambda x: x[None], b)
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    k = 4 * k_star
    res = train_sweep(
        bb,
        theta0[None],
        ks=[k],
        keys=keys,
        steps=12,
        rule=("passk", "project"),
        estimator="pkpo-loo-1",
        n_samples=k + 8,
    )
    j1 = res[R.j1][0, 0, 0].mean(axis=0)
    assert j1[-1] < j1[0] and res[R.jk][0, 0, 0, :, -1].mean() > res[R.jk][0, 0, 0, :, 0].mean()
    assert np.all(np.isfinite(res[R.j1][1]))  # sampled projection (g_1 from RLOO on the same answers)
    updates = jax.jit(lambda key: sampled_updates(b, theta0, estimators=ESTIMATORS[1:], k=4, n_samples=8, key=key))(
        jax.random.PRNGKey(5)
    )
    for est, u in updates.items():
        assert u.shape == theta0.shape and np.all(np.isfinite(u)), est


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(rule="nope"), ValueError, "rule"),
        (dict(estimator="ppo"), ValueError, "estimator"),
        (dict(estimator="pkpo", n_samples=4), ValueError, "n_samples >= 8"),
        (dict(estimator="pkpo-loo", n_samples=8), ValueError, "n_samples >= 9"),
        (dict(estimator="rloo"), ValueError, "n_samples"),
        (dict(n_samples=4), ValueError, "n_samples"),
        (dict(steps=0), ValueError, "steps"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(optimizer="lbfgs"), ValueError, "optimizer"),
        (dict(mixture_weight=1.0), ValueError, "mixture_weight"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=2.0), TypeError, "k"),
    ],
)
def test_validation(toy, kwargs, err, match):
    b, theta0, _ = toy
    args = dict(k=8, steps=2, key=jax.random.PRNGKey(0))
    args.update(kwargs)
    with pytest.raises(err, match=match):
        train(b, theta0, **args)


def test_key_is_keyword_only(toy):
    b, theta0, _ = toy
    with pytest.raises(TypeError):
        train(b, theta0, 8, 2, jax.random.PRNGKey(0))  # type: ignore[misc]
    with pytest.raises(ValueError, match="theta0"):
        train(b, jnp.zeros((3, 2)), k=2, steps=2, key=jax.random.PRNGKey(0))


sim_train = importlib.import_module("sim.train")  # the module (`sim.train` is also a function)


@pytest.mark.slow
def test_record_every_keeps_the_trajectory(toy):
    """Diagnostics every N steps: the same trajectory, the same records at the recorded steps,
    NaN (k_star -1) in between, J_1 / J_k / update records at every step; one compile each."""
    from passk.benchmarks._timing import CompileCounter

    b, theta0, k_star = toy
    bb = jax.tree_util.tree_map(lambda x: x[None], b)
    kw = dict(
        ks=[1, 4 * k_star],
        keys=jax.random.split(jax.random.PRNGKey(6), 2),
        steps=11,
        rule=("passk", "safe-k"),
        learning_rate=1.0,
    )
    every = train_sweep(bb, theta0[None], **kw)
    with CompileCounter() as c:
        sparse = train_sweep(bb, theta0[None], **kw, record_every=4)
    assert len([n for n in c.names if "entry" in n]) == 1
    recorded = np.zeros(12, bool)
    recorded[[0, 4, 8, 11]] = True  # multiples of 4 and the final state
    for name in (R.j1, R.jk, *sim_train.UPDATE_RECORDS, "theta"):
        np.testing.assert_allclose(sparse[name], every[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for name in (R.inner, R.mean_agreement, R.cos):
        np.testing.assert_allclose(sparse[name][..., recorded], every[name][..., recorded], rtol=1e-5, atol=1e-7)
        assert np.all(np.isnan(sparse[name][..., ~recorded])), name
    np.testing.assert_array_equal(sparse[R.k_star][..., recorded], every[R.k_star][..., recorded])
    assert np.all(sparse[R.k_star][..., ~recorded] == -1)
    with pytest.raises(ValueError, match="record_every"):
        train(b, theta0, k=2, steps=2, key=jax.random.PRNGKey(0), record_every=0)


@pytest.mark.parametrize(
    "n_regimes, n_configs, n_devices, want",
    [
        (8, 64, 1, (1, 64)),
        (1, 18, 4, (8, 3)),
        (2, 18, 4, (4, 5)),
        (3, 5, 4, (4, 2)),
        (4, 1, 4, (1, 1)),
        (1, 8, 1, (2, 4)),
        (1, 1, 1, (1, 1)),
    ],
)
def test_sweep_blocks(n_regimes, n_configs, n_devices, want):
    chunks, per_chunk = S.sweep_blocks(n_regimes, n_configs, n_devices)
    assert (chunks, per_chunk) == want
    assert (n_regimes * chunks) % n_devices == 0 and chunks * per_chunk >= n_configs
    assert n_regimes * chunks >= 2 * n_devices or chunks >= n_configs  # two blocks a device when possible


def test_sweep_batch_size():
    # 8 configurations with (A, P) = (4, 4096) float32 arrays: 512 KiB a block, 8 blocks per batch
    config_bytes = 4 * 4096 * 4
    assert S.sweep_batch_size(32, 8, config_bytes) == S.sweep_batch_size(9, 8, config_bytes) == 8
    # everything fits one batch: None (a single vmap)
    assert S.sweep_batch_size(8, 8, config_bytes) is None
    # huge blocks: still at least _BATCH_MIN_CONFIGS configurations per batch
    assert S.sweep_batch_size(64, 4, 4 * 2**20 * 4) * 4 >= S._BATCH_MIN_CONFIGS


@pytest.mark.slow
def test_batched_sweep_equals_one_vmap(monkeypatch):
    """Blocks looped over one at a time give the numbers of the single vmap."""
    bandits = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[0])(jax.random.split(jax.random.PRNGKey(3), 3))
    theta0s = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[1])(jax.random.split(jax.random.PRNGKey(3), 3))
    kw = dict(ks=[1, 4, 16], keys=jax.random.split(jax.random.PRNGKey(5), 2), steps=4, record_every=2)
    config_bytes = 8 * 32 * 4  # (A, P) = (8, 32), float32
    assert S.sweep_batch_size(3, 6, config_bytes) is None
    want = train_sweep(bandits, theta0s, **kw)
    monkeypatch.setattr(S, "_BATCH_BYTES", 1)
    monkeypatch.setattr(S, "_BATCH_MIN_CONFIGS", 1)
    assert S.sweep_batch_size(3, 6, config_bytes) == 1
    from passk.benchmarks._timing import CompileCounter

    with CompileCounter() as first:
        got = train_sweep(bandits, theta0s, **kw)
    with CompileCounter() as again:
        train_sweep(bandits, theta0s, **kw)
    assert [n for n in first.names if "entry" in n] == ["jit(entry)"]  # one program, named as unbatched
    assert not [n for n in again.names if "entry" in n]
    for name in want:
        if name in (R.k_star, R.k_used):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(
                got[name], want[name], rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(want[name])), err_msg=name
            )


@pytest.mark.slow
def test_regimes_and_configs_keep_their_places():
    """Two different bandits, several k and seeds: every entry equals its own single run."""
    bandits = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[0])(jax.random.split(jax.random.PRNGKey(7), 2))
    theta0s = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[1])(jax.random.split(jax.random.PRNGKey(7), 2))
    keys = jax.random.split(jax.random.PRNGKey(8), 2)
    ks = [1, 3, 9]
    out = train_sweep(bandits, theta0s, ks=ks, keys=keys, steps=3, rule=("passk", "pass1"))
    assert out[R.j1].shape == (2, 2, 3, 2, 4)
    for u, rule in enumerate(("passk", "pass1")):
        for r in range(2):
            b = jax.tree_util.tree_map(lambda x: x[r], bandits)
            for i, k in enumerate(ks):
                one = train(b, theta0s[r], k=k, steps=3, key=keys[1], rule=rule)
                for name in (R.j1, R.jk, R.k_star, "theta"):
                    np.testing.assert_allclose(out[name][u, r, i, 1], one[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_config_is_the_compile_cache_key(toy):
    """Equal configs are equal and hash alike (one compile for both); a changed setting recompiles;
    the settings are validated when the config is built."""
    from passk.benchmarks._timing import CompileCounter

    b, theta0, _ = toy
    a = TrainConfig(steps=3, rules="passk", learning_rate=np.float32(0.5), k_max=np.int64(64))
    same = TrainConfig(steps=3, rules=("passk",), learning_rate=0.5, k_max=64)
    assert a == same and hash(a) == hash(same) and a.rules == ("passk",) and type(a.learning_rate) is float
    assert a != TrainConfig(steps=4, rules="passk", learning_rate=0.5, k_max=64)
    kw = dict(k=3, steps=3, key=jax.random.PRNGKey(0), learning_rate=0.25, k_max=64)
    with CompileCounter() as first:
        train(b, theta0, **kw)
    with CompileCounter() as again:
        train(b, theta0, **dict(kw, k=5, key=jax.random.PRNGKey(1)))  # new values, same config
    with CompileCounter() as changed:
        train(b, theta0, **dict(kw, learning_rate=0.5))
    runs = lambda c: [n for n in c.names if n == "jit(run)"]  # noqa: E731
    assert len(runs(first)) == 1 and not runs(again) and len(runs(changed)) == 1
    with pytest.raises(ValueError, match="rule must be one of"):
        TrainConfig(steps=1, rules=("passk", "nope"))
    with pytest.raises(ValueError, match="must not repeat"):
        TrainConfig(steps=1, rules=("passk", "passk"))
    with pytest.raises(ValueError, match="at least one rule"):
        TrainConfig(steps=1, rules=())
    with pytest.raises(ValueError, match="n_samples >= 9"):
        TrainConfig(steps=1, estimator="pkpo-loo", n_samples=8).check_orders([2, 8])


def test_records_are_the_vocabulary(toy):
    """Every record a run returns is a Records field (and nothing else but theta); the state and
    update records split the fields; an unknown name is rejected."""
    b, theta0, _ = toy
    out = train(b, theta0, k=4, steps=2, key=jax.random.PRNGKey(0))
    assert list(out) == list(Records._fields) + ["theta"]
    assert tuple(R) == Records._fields and R.update_inner == "update_inner"
    assert set(sim_train.STATE_RECORDS) | set(sim_train.UPDATE_RECORDS) == set(R)
    assert set(sim_train.DIAGNOSTIC_RECORDS) <= set(sim_train.STATE_RECORDS)
    assert all(out[n].shape == (3,) for n in sim_train.STATE_RECORDS)
    assert all(out[n].shape == (2,) for n in sim_train.UPDATE_RECORDS)
    with pytest.raises(AttributeError):
        R.pass1  # noqa: B018
    with pytest.raises(TypeError):
        Records(pass1=1.0)


def test_a_new_rule_is_one_entry(toy, monkeypatch):
    """A rule added to the table trains through the same core: half the pass@k direction with
    plain steps of size 1 is pass@k ascent with steps of size 1/2, and so is half the step."""
    b, theta0, _ = toy
    assert RULES == tuple(RULE_TABLE)
    half = lambda v, g1, **_: 0.5 * v
    monkeypatch.setitem(RULE_TABLE, "half-passk", UpdateRule("half-passk", "g_k / 2", half))
    monkeypatch.setitem(RULE_TABLE, "half-step", UpdateRule("half-step", "u / 2", half, acts_on="step"))
    kw = dict(k=8, steps=4, key=jax.random.PRNGKey(0))
    plain = train(b, theta0, rule="passk", learning_rate=0.5, **kw)
    for rule in ("half-passk", "half-step"):
        halved = train(b, theta0, rule=rule, learning_rate=1.0, **kw)
        for name in halved:
            np.testing.assert_allclose(halved[name], plain[name], rtol=1e-6, atol=1e-9, err_msg=f"{rule} {name}")


def test_rule_directions_on_aligned_and_conflicting_gradients():
    """The core's direction of each table entry on two flat estimates: without conflict the
    projections keep g_k; with a conflict the projection is orthogonal to g_1; the mixture adds
    lambda g_1; a step rule's direction is g_k (it acts after the optimizer)."""
    config = TrainConfig(steps=1, rules=RULES, learning_rate=0.1)
    mixed = TrainConfig(steps=1, rules=RULES, learning_rate=0.1, mixture_weight=2.0)
    g1 = jnp.array([1.0, 0.0])
    aligned, conflicting = jnp.array([1.0, 1.0]), jnp.array([-1.0, 1.0])
    d = {name: functools.partial(sim_train._direction, rule, config, 1.0) for name, rule in RULE_TABLE.items()}
    np.testing.assert_array_equal(d["pass1"](g1, aligned), g1)
    np.testing.assert_array_equal(d["passk"](g1, aligned), aligned)
    np.testing.assert_array_equal(d["safe-k"](g1, conflicting), conflicting)  # its order moves, not g
    np.testing.assert_allclose(d["project"](g1, aligned), aligned)
    np.testing.assert_allclose(jnp.vdot(d["project"](g1, conflicting), g1), 0.0, atol=1e-7)
    assert float(jnp.vdot(d["project-safe"](g1, conflicting), g1)) >= 0
    for name in ("project-step", "project-safe-step", "mixture-step"):
        np.testing.assert_array_equal(d[name](g1, conflicting), conflicting)
    np.testing.assert_allclose(
        sim_train._direction(RULE_TABLE["mixture"], mixed, 1.0, g1, conflicting), conflicting + 2.0 * g1
    )
    np.testing.assert_allclose(
        sim_train._step(RULE_TABLE["mixture-step"], mixed, 1.0, conflicting, g1), conflicting + 2.0 * g1
    )
    k, k_star = jnp.int32(8), jnp.int32(5)
    expected = {"1": 1, "k": 8, "k'": 4}  # k' = min(k, k* - 1)
    assert [int(RULE_TABLE[r].order_of(k, k_star)) for r in RULES] == [expected[RULE_TABLE[r].order] for r in RULES]
