"""Training: rules, estimators, records, sweep axes and validation."""

from __future__ import annotations

import importlib
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import ESTIMATORS, toy_bandit, train, train_sweep
from sim.train import sampled_updates


@pytest.fixture(scope="module")
def toy():
    b, theta0 = toy_bandit(jax.random.PRNGKey(0), n_prompts=64)
    k_star = int(b.diagnostics(theta0, 1).k_star)
    return b, theta0, k_star


def test_rules_in_one_compiled_sweep(toy):
    """Exact plain steps: pass@1 ascent raises J_1; pass@k above k* lowers J_1 and raises J_k;
    the projection never loses pass@1 to first order; the step-safe projection never loses it."""
    b, theta0, k_star = toy
    lr = 1.0
    rules = ("passk", "project", "project-safe", "safe-k")
    ks = [1, 4 * k_star]
    out = train_sweep(
        jax.tree_util.tree_map(lambda x: x[None], b), theta0[None], ks=ks,
        keys=jax.random.split(jax.random.PRNGKey(1), 1), steps=15, rule=rules, learning_rate=lr,
    )
    assert out["j1"].shape == (4, 1, 2, 1, 16) and out["update_inner"].shape == (4, 1, 2, 1, 15)
    assert out["theta"].shape == (4, 1, 2, 1) + theta0.shape
    j1, jk = out["j1"][:, 0, :, 0], out["jk"][:, 0, :, 0]
    passk, project, safe, safe_k = range(4)
    assert np.all(np.diff(j1[passk, 0]) > 0)  # k = 1 is pass@1 ascent
    assert np.all(np.diff(j1[passk, 1]) < 0) and np.all(np.diff(jk[passk, 1]) > 0)  # k > k*
    # sgd: the update is lr * g_k, so <g_1, u> = lr * I_k
    np.testing.assert_allclose(out["update_inner"][passk, 0, 1, 0], lr * out["inner"][passk, 0, 1, 0, :-1], rtol=1e-4)
    assert np.all(out["update_inner"][project, 0, 1, 0] >= -1e-7)
    assert np.all(np.diff(j1[safe, 1]) >= 0) and jk[safe, 1, -1] > jk[safe, 1, 0]
    k_used = out["k_used"][safe_k, 0, 1, 0]
    k_star_path = out["k_star"][safe_k, 0, 1, 0, :-1]
    assert np.all(k_used == np.clip(k_star_path - 1, 1, ks[1]))
    assert np.all(np.diff(j1[safe_k, 1]) > 0)


def test_train_matches_sweep_entry(toy):
    b, theta0, k_star = toy
    single = train(b, theta0, k=8, steps=5, key=jax.random.PRNGKey(3), optimizer="adam", learning_rate=0.05)
    sweep = train_sweep(
        jax.tree_util.tree_map(lambda x: x[None], b), theta0[None], ks=[2, 8],
        keys=jax.random.PRNGKey(3)[None], steps=5, optimizer="adam", learning_rate=0.05,
    )
    for name in ("j1", "jk", "k_star", "update_inner"):
        np.testing.assert_allclose(single[name], sweep[name][0, 1, 0], rtol=1e-5, atol=1e-8)
    assert single["j1"].shape == (6,) and single["update_inner"].shape == (5,)


def test_sampled_estimators_train(toy):
    """Every sampled estimator runs inside the scan; PKPO at k > k* follows the exact descent."""
    b, theta0, k_star = toy
    bb = jax.tree_util.tree_map(lambda x: x[None], b)
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    k = 4 * k_star
    res = train_sweep(
        bb, theta0[None], ks=[k], keys=keys, steps=12, rule=("passk", "project"), estimator="pkpo-loo-1", n_samples=k + 8
    )
    j1 = res["j1"][0, 0, 0].mean(axis=0)
    assert j1[-1] < j1[0] and res["jk"][0, 0, 0, :, -1].mean() > res["jk"][0, 0, 0, :, 0].mean()
    assert np.all(np.isfinite(res["j1"][1]))  # sampled projection (g_1 from RLOO on the same answers)
    updates = jax.jit(
        lambda key: sampled_updates(b, theta0, estimators=ESTIMATORS[1:], k=4, n_samples=8, key=key)
    )(jax.random.PRNGKey(5))
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
    with pytest.raises(ValueError, match="theta0s"):
        train(b, jnp.zeros((3, 2)), k=2, steps=2, key=jax.random.PRNGKey(0))


def test_record_every_keeps_the_trajectory(toy):
    """Diagnostics every N steps: the same trajectory, the same records at the recorded steps,
    NaN (k_star -1) in between, J_1 / J_k / update records at every step; one compile each."""
    from benchmarks._timing import CompileCounter

    b, theta0, k_star = toy
    bb = jax.tree_util.tree_map(lambda x: x[None], b)
    kw = dict(ks=[1, 4 * k_star], keys=jax.random.split(jax.random.PRNGKey(6), 2), steps=11,
              rule=("passk", "safe-k"), learning_rate=1.0)
    every = train_sweep(bb, theta0[None], **kw)
    with CompileCounter() as c:
        sparse = train_sweep(bb, theta0[None], **kw, record_every=4)
    assert len([n for n in c.names if "entry" in n]) == 1
    recorded = np.zeros(12, bool)
    recorded[[0, 4, 8, 11]] = True  # multiples of 4 and the final state
    for name in ("j1", "jk", "update_inner", "update_norm", "k_used", "theta"):
        np.testing.assert_allclose(sparse[name], every[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for name in ("inner", "mean_agreement", "cos"):
        np.testing.assert_allclose(sparse[name][..., recorded], every[name][..., recorded], rtol=1e-5, atol=1e-7)
        assert np.all(np.isnan(sparse[name][..., ~recorded])), name
    np.testing.assert_array_equal(sparse["k_star"][..., recorded], every["k_star"][..., recorded])
    assert np.all(sparse["k_star"][..., ~recorded] == -1)
    with pytest.raises(ValueError, match="record_every"):
        train(b, theta0, k=2, steps=2, key=jax.random.PRNGKey(0), record_every=0)


@pytest.mark.parametrize("n_regimes, n_configs, n_devices, want", [
    (8, 64, 1, (1, 64)), (1, 18, 4, (8, 3)), (2, 18, 4, (4, 5)), (3, 5, 4, (4, 2)), (4, 1, 4, (1, 1)),
    (1, 8, 1, (2, 4)), (1, 1, 1, (1, 1)),
])
def test_sweep_blocks(n_regimes, n_configs, n_devices, want):
    from sim.train import sweep_blocks

    chunks, per_chunk = sweep_blocks(n_regimes, n_configs, n_devices)
    assert (chunks, per_chunk) == want
    assert (n_regimes * chunks) % n_devices == 0 and chunks * per_chunk >= n_configs
    assert n_regimes * chunks >= 2 * n_devices or chunks >= n_configs  # two blocks a device when possible


def test_sweep_batch_size():
    T = importlib.import_module("sim.train")  # the module (`sim.train` is also a function)

    # 8 configurations at P = 4096, A = 4, float32: 512 KiB a block, 8 blocks per batch
    assert T.sweep_batch_size(32, 8, 4, 4096, 4) == T.sweep_batch_size(9, 8, 4, 4096, 4) == 8
    # everything fits one batch: None (a single vmap)
    assert T.sweep_batch_size(8, 8, 4, 4096, 4) is None
    # huge blocks: still at least _BATCH_MIN_CONFIGS configurations per batch
    assert T.sweep_batch_size(64, 4, 4, 2**20, 4) * 4 >= T._BATCH_MIN_CONFIGS


def test_batched_sweep_equals_one_vmap(monkeypatch):
    """Blocks looped over one at a time give the numbers of the single vmap."""
    T = importlib.import_module("sim.train")  # the module (`sim.train` is also a function)

    bandits = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[0])(jax.random.split(jax.random.PRNGKey(3), 3))
    theta0s = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[1])(jax.random.split(jax.random.PRNGKey(3), 3))
    kw = dict(ks=[1, 4, 16], keys=jax.random.split(jax.random.PRNGKey(5), 2), steps=4, record_every=2)
    assert T.sweep_batch_size(3, 6, 8, 32, 4) is None
    want = train_sweep(bandits, theta0s, **kw)
    monkeypatch.setattr(T, "_BATCH_BYTES", 1)
    monkeypatch.setattr(T, "_BATCH_MIN_CONFIGS", 1)
    assert T.sweep_batch_size(3, 6, 8, 32, 4) == 1
    from benchmarks._timing import CompileCounter

    with CompileCounter() as first:
        got = train_sweep(bandits, theta0s, **kw)
    with CompileCounter() as again:
        train_sweep(bandits, theta0s, **kw)
    assert [n for n in first.names if "entry" in n] == ["jit(entry)"]  # one program, named as unbatched
    assert not [n for n in again.names if "entry" in n]
    for name in want:
        if name in ("k_star", "k_used"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(want[name])),
                                       err_msg=name)


def test_regimes_and_configs_keep_their_places():
    """Two different bandits, several k and seeds: every entry equals its own single run."""
    bandits = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[0])(jax.random.split(jax.random.PRNGKey(7), 2))
    theta0s = jax.vmap(lambda key: toy_bandit(key, n_prompts=32)[1])(jax.random.split(jax.random.PRNGKey(7), 2))
    keys = jax.random.split(jax.random.PRNGKey(8), 2)
    ks = [1, 3, 9]
    out = train_sweep(bandits, theta0s, ks=ks, keys=keys, steps=3, rule=("passk", "pass1"))
    assert out["j1"].shape == (2, 2, 3, 2, 4)
    for u, rule in enumerate(("passk", "pass1")):
        for r in range(2):
            b = jax.tree_util.tree_map(lambda x: x[r], bandits)
            for i, k in enumerate(ks):
                one = train(b, theta0s[r], k=k, steps=3, key=keys[1], rule=rule)
                for name in ("j1", "jk", "k_star", "theta"):
                    np.testing.assert_allclose(out[name][u, r, i, 1], one[name], rtol=1e-5, atol=1e-7, err_msg=name)
