"""Sharding the sweep axis over several devices gives the one-device numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.sweep import padded_length, sweep_map

_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from sim.studies.phase import phase_diagram
    from sim.sweep import sweep_map
    from sim import toy_bandit, train_sweep

    assert len(jax.devices()) == 4, jax.devices()
    key = jax.random.PRNGKey(0)
    b, t0 = toy_bandit(key, n_prompts=32)
    bb = jax.tree_util.tree_map(lambda x: x[None], b)
    out = {}
    for name, devs in (("one", jax.devices()[:1]), ("four", jax.devices())):
        # 3 x 5 = 15 regimes: padded to 16 on four devices
        ph = phase_diagram(key=key, n_p_hard=3, n_separation=5, n_seeds=1, n_prompts=32, devices=devs)
        # 2 rules x 3 k x 3 seeds = 18 runs: padded to 20 on four devices
        tr = train_sweep(bb, t0[None], ks=[2, 16, 40], keys=jax.random.split(key, 3), steps=6,
                         rule=("passk", "project-safe"), devices=devs)
        batched = sweep_map(lambda a: a * 2.0 + 1.0, jnp.arange(10.0), devices=devs, batch_size=2)
        out[name] = {
            "batched": np.asarray(batched).tolist(),
            "phase_k_star": ph.k_star.tolist(),
            "phase_share": ph.share_negative_agreement.tolist(),
            "train": {n: np.asarray(v, np.float64).tolist() for n, v in tr.items()},
        }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow  # a fresh process compiling the sweeps twice (about 25 s on 2 cores)
def test_four_devices_match_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    one, four = out["one"], out["four"]
    assert one["batched"] == four["batched"] == [2.0 * i + 1.0 for i in range(10)]
    assert one["phase_k_star"] == four["phase_k_star"]
    np.testing.assert_allclose(four["phase_share"], one["phase_share"], rtol=1e-6)
    for group in ("train",):
        for name in one[group]:
            a, b = np.asarray(one[group][name]), np.asarray(four[group][name])
            assert a.shape == b.shape, name
            if name in ("k_star", "k_used"):
                np.testing.assert_array_equal(a, b, err_msg=name)
            else:
                # float32: equal to 1e-6 of the array's scale (XLA may vectorise a batch of 20
                # and a batch of 5 differently, so the last bits can differ)
                np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max(), err_msg=name)


def test_padding_and_validation():
    assert padded_length(15, 4) == 16 and padded_length(16, 4) == 16 and padded_length(1, 4) == 4
    with pytest.raises(ValueError, match="at least one entry"):
        padded_length(0, 4)
    out = sweep_map(_square, (jnp.arange(5.0), jnp.ones(5)))
    np.testing.assert_allclose(out, np.arange(5.0) ** 2 + 1)
    with pytest.raises(ValueError, match="leading sweep axis"):
        sweep_map(_square, (jnp.arange(5.0), jnp.ones(4)))
    with pytest.raises(ValueError, match="scalar"):
        sweep_map(_square, (jnp.arange(5.0), jnp.ones(())))


@pytest.mark.parametrize("n_devices", [1, 4])
def test_grid_pairs_every_regime_with_every_configuration(monkeypatch, n_devices):
    """`sweep_grid` puts `fn(regime r, configuration c)` at `[r, c]`, whatever the blocks, the
    padding of the last chunk and the batches."""
    from sim import sweep as S

    regimes = (jnp.arange(3.0), jnp.arange(3.0) * 10)
    configs = jnp.arange(7.0) / 8
    want = np.asarray(regimes[0])[:, None] * 100 + np.asarray(regimes[1])[:, None] + np.asarray(configs)[None]
    assert S.sweep_blocks(3, 7, n_devices) == ((1, 7) if n_devices == 1 else (4, 2))
    if n_devices > 1:  # the layout of four devices, computed on this one
        devices = [jax.devices()[0]] * n_devices
        monkeypatch.setattr(S.jax, "devices", lambda: devices)
        monkeypatch.setattr(S, "sweep_map", lambda fn, args, devices=None, batch_size=None: jax.vmap(fn)(args))
    for config_bytes in (None, 1, 2**30):
        got = S.sweep_grid(_affine, regimes, configs, config_bytes=config_bytes)
        np.testing.assert_array_equal(got, want)


def _affine(regime, configuration):
    a, b = regime
    return a * 100 + b + configuration


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8])
def test_batches_equal_one_vmap(batch_size):
    """Looping over vectorised batches (with a remainder batch) gives the one-vmap numbers."""
    args = (jnp.linspace(-1.0, 2.0, 5), jnp.arange(5.0))
    want = sweep_map(_square, args)
    got = sweep_map(_square, args, batch_size=batch_size)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"batch_size.*{bad!r}"):
            sweep_map(_square, args, batch_size=bad)


def _square(args):
    x, y = args
    return x * x + y


def test_uses_all_local_devices():
    from sim.sweep import sweep_mesh

    assert sweep_mesh().size == len(jax.devices())


def test_multiprocess_placement_equals_local_placement_on_one_process():
    """The shard-by-shard placement and gather that a multi-process mesh needs gives the same
    numbers as `device_put` (keys included)."""

    def fn(args):
        x, key = args
        return {"y": x * 2.0 + jax.random.uniform(key)}

    args = (jnp.arange(5.0), jax.random.split(jax.random.key(0), 5))
    want = sweep_map(fn, args)
    got = sweep_map(fn, args, multiprocess=True)
    np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(want["y"]))
