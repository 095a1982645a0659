"""Run one function over a sweep axis, sharded over every available device (SPEC section 7).

`sweep_map(fn, args)` applies `fn` to each entry of the leading axis of the pytree `args` (seeds,
`k` values, regimes, flattened into one axis) as a single `jax.jit` of `jax.vmap(fn)`. The sweep
axis is sharded over a 1-D mesh of `jax.devices()` with a `NamedSharding`: it is padded to a
multiple of the device count (by repeating the last entry; the padded results are dropped), laid
out with `jax.device_put`, and every device computes its slice. Entries never talk to each other,
so the results equal the one-device run up to float rounding (bitwise where XLA vectorises the
per-device batch the same way). After `jax.distributed.initialize`, the mesh spans every process's
devices; inputs are then placed shard by shard and outputs gathered to every process. The same code runs on CPU (use
`XLA_FLAGS=--xla_force_host_platform_device_count=N` for `N` host devices) and GPU.

Compilation: one compile per `(fn, padded sweep length, argument shapes/dtypes, device set)`.
Changing values (other seeds, other `k`, other regimes of the same sizes) reuses it; changing the
number of entries (to another multiple of the device count), a shape (prompts, answers, steps) or
`fn` itself recompiles. `fn` is cached by identity: pass a module-level function or a cached
closure, not a fresh `lambda`, to reuse compilations.

`sweep_grid(fn, shared, configs)` applies `fn(shared_r, config_c)` to every pair of a regime
(`shared`, leading axis `R`: e.g. a batch of bandits and their starts) and a configuration
(`configs`, leading axis `C`: e.g. `k`, seed, rule) and returns results with leading axes
`(R, C)`. It decides the layout that :func:`sweep_map` runs:

- blocks (:func:`sweep_blocks`): each regime's configurations are cut into chunks; the sweep axis
  is the `(regime, chunk)` blocks, a multiple of the device count, and inside a block the chunk's
  configurations are vmapped with the regime shared (`in_axes=None`), so each matrix product
  covers the chunk; the last chunk is padded by repeating the last configuration;
- batches (:func:`sweep_batch_size`): each device vectorises its blocks in batches of about
  `_BATCH_BYTES` of per-configuration working set (at least `_BATCH_MIN_CONFIGS`
  configurations) and loops over the batches, so a large sweep's step stays in cache
  (measurements: `passk/benchmarks/README.md`).

Compilation of a grid: one per `(fn, block count, chunk size, shapes, batch size, device set)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["sweep_map", "sweep_grid", "sweep_blocks", "sweep_batch_size", "sweep_mesh", "padded_length", "SWEEP_AXIS"]

SWEEP_AXIS = "sweep"

#: Working-set target of one vectorised batch of blocks: the bytes of the per-configuration
#: arrays of a step (`config_bytes` each), sized to stay in cache (`passk/benchmarks/README.md`).
_BATCH_BYTES = 4 * 2**20
#: Fewest configurations per batch: smaller batches pay the per-operation cost of a step loop.
_BATCH_MIN_CONFIGS = 16


def sweep_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `"sweep"` over `devices` (default: all of `jax.devices()`)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device; got an empty list")
    return Mesh(np.asarray(devices, dtype=object), (SWEEP_AXIS,))


def padded_length(n: int, n_devices: int) -> int:
    """The smallest multiple of `n_devices` that is `>= n` (at least `n_devices`)."""
    if n < 1:
        raise ValueError(f"the sweep axis must have at least one entry; got {n}")
    return max(1, -(-n // n_devices)) * n_devices


def _leading_size(args) -> int:
    leaves = jax.tree_util.tree_leaves(args)
    if not leaves:
        raise ValueError("args must contain at least one array with a leading sweep axis")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else None for x in leaves}
    if None in sizes:
        raise ValueError("every array in args needs a leading sweep axis; got a scalar")
    if len(sizes) != 1:
        raise ValueError(f"every array in args must share the leading sweep axis; got sizes {sorted(sizes)}")
    return sizes.pop()


def _pad(x, n_pad: int):
    if n_pad == 0:
        return x
    x = jnp.asarray(x)
    tail = jnp.repeat(x[-1:], n_pad, axis=0)
    return jnp.concatenate([x, tail], axis=0)


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, mesh: Mesh, batch_size: int | None):
    spec = PartitionSpec(SWEEP_AXIS)
    sharding = NamedSharding(mesh, spec)
    if batch_size is None:
        body = jax.vmap(fn)
    else:
        # Each device loops over its own slice in vectorised batches (shard_map keeps the loop
        # local: a scan over the sharded axis itself would gather it). Entries never communicate,
        # so the varying-axis type check has nothing to guard (and would reject constants that
        # only one branch of a `lax.cond` in `fn` creates).
        def batched(a):
            return jax.lax.map(fn, a, batch_size=batch_size)

        # Named after `fn`, like the vmapped program, for compile logs and profiles.
        body = functools.wraps(fn)(jax.shard_map(batched, mesh=mesh, in_specs=(spec,), out_specs=spec, check_vma=False))
    return jax.jit(body, in_shardings=(sharding,), out_shardings=sharding)


def _place_global(x, sharding):
    """A global array for `sharding` built by every process from its own (identical) host copy.

    `jax.device_put` cannot place a process-local array on other processes' devices; each process
    supplies the shards of its own devices with `jax.make_array_from_callback`. Typed PRNG keys
    travel as their raw bits and are re-wrapped on the devices.
    """
    if jax.dtypes.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key):
        bits = _place_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(bits, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def sweep_map(
    fn: Callable,
    args,
    *,
    devices: Sequence[jax.Device] | None = None,
    multiprocess: bool | None = None,
    batch_size: int | None = None,
):
    """`jax.vmap(fn)(args)`, jitted and sharded over `devices` along the leading axis of `args`.

    Args:
      fn: a function of one pytree (one sweep entry) returning a pytree of arrays.
      args: a pytree whose leaves all share the leading sweep axis of length `n`.
      devices: devices of the 1-D mesh (default: all of `jax.devices()`, which after
        `jax.distributed.initialize` spans every process).
      multiprocess: place inputs shard by shard and gather the outputs to every process
        (`process_allgather`), as a mesh spanning several processes needs. Default: when
        `jax.process_count() > 1`. Every process must call with the same `args`.
      batch_size: entries vectorised together on a device; each device then loops over its slice
        in batches of this size (`jax.lax.map(fn, slice, batch_size=...)`), which bounds the
        working set (useful when the vmapped arrays of a whole slice no longer fit in cache).
        None: the whole slice in one `vmap`. Same results either way, up to float rounding.

    Returns:
      The pytree of results with leading axis `n` (padding removed), on every process.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    n = _leading_size(args)
    mesh = sweep_mesh(devices)
    n_total = padded_length(n, mesh.size)
    padded = jax.tree_util.tree_map(lambda x: _pad(x, n_total - n), args)
    sharding = NamedSharding(mesh, PartitionSpec(SWEEP_AXIS))
    if multiprocess is None:
        multiprocess = jax.process_count() > 1
    if not multiprocess:
        out = _compiled(fn, mesh, batch_size)(jax.device_put(padded, sharding))
    else:
        from jax.experimental import multihost_utils

        placed = jax.tree_util.tree_map(lambda x: _place_global(x, sharding), padded)
        out = multihost_utils.process_allgather(_compiled(fn, mesh, batch_size)(placed), tiled=True)
    return jax.tree_util.tree_map(lambda x: x[:n], out)


# --------------------------------------------------------------------------- regimes x configurations


def sweep_blocks(n_regimes: int, n_configs: int, n_devices: int) -> tuple[int, int]:
    """`(chunks per regime, configurations per chunk)` of :func:`sweep_grid`'s blocks.

    The sweep axis of :func:`sweep_map` holds `n_regimes * chunks` blocks; `chunks` is the
    smallest count that makes it a multiple of `n_devices`, so no device idles on padding blocks,
    doubled until every device holds at least two blocks (while configurations last): XLA's CPU
    backend spreads a step's loops over threads along the leading (block) axis, and a single block
    runs on one thread (`passk/benchmarks/README.md`). Each chunk holds `ceil(n_configs / chunks)`
    configurations (the last ones padded by repeating the last configuration).
    """
    chunks = n_devices // math.gcd(n_regimes, n_devices)
    while n_regimes * chunks < 2 * n_devices and chunks < n_configs:
        chunks *= 2
    return chunks, -(-n_configs // chunks)


def sweep_batch_size(blocks_per_device: int, per_chunk: int, config_bytes: int) -> int | None:
    """Blocks vectorised together per device (for :func:`sweep_map`), or None for all.

    `max(_BATCH_BYTES // (per_chunk * config_bytes), ceil(_BATCH_MIN_CONFIGS / per_chunk), 1)`
    blocks: about `_BATCH_BYTES` of per-configuration arrays per batch and at least
    `_BATCH_MIN_CONFIGS` configurations; None when that covers every block of a device.
    """
    per_block = per_chunk * config_bytes
    blocks = max(_BATCH_BYTES // per_block, -(-_BATCH_MIN_CONFIGS // per_chunk), 1)
    return None if blocks >= blocks_per_device else int(blocks)


@functools.lru_cache(maxsize=128)
def _grid_entry(fn: Callable) -> Callable:
    """The per-block function of :func:`sweep_grid` (cached, so `sweep_map` reuses its compile)."""

    def entry(args):
        shared, configs = args
        return jax.vmap(fn, in_axes=(None, 0))(shared, configs)

    return entry


def sweep_grid(
    fn: Callable, shared, configs, *, devices: Sequence[jax.Device] | None = None, config_bytes: int | None = None
):
    """`fn(shared_r, config_c)` for every regime `r` and configuration `c`, one compiled call.

    Args:
      fn: a function of one regime's pytree and one configuration's pytree (unbatched), returning
        a pytree of arrays. Cached by identity, like :func:`sweep_map`'s `fn`.
      shared: a pytree whose leaves share a leading regime axis `R` (read by every configuration).
      configs: a pytree whose leaves share a leading configuration axis `C`.
      devices: devices of the mesh (default: all).
      config_bytes: bytes of one configuration's working set in a step (sets the batch size,
        :func:`sweep_batch_size`); None: every device vectorises all its blocks at once.

    Returns:
      The pytree of results as numpy arrays with leading axes `(R, C)`.
    """
    n_regimes, n_configs = _leading_size(shared), _leading_size(configs)
    n_devices = len(jax.devices() if devices is None else devices)
    chunks, per_chunk = sweep_blocks(n_regimes, n_configs, n_devices)
    pick = np.minimum(np.arange(chunks * per_chunk), n_configs - 1).reshape(chunks, per_chunk)
    r_block = np.repeat(np.arange(n_regimes), chunks)  # block b = (regime b // chunks, chunk b % chunks)
    c_block = np.tile(pick, (n_regimes, 1))  # (blocks, per_chunk) configuration indices
    args = (
        jax.tree_util.tree_map(lambda x: jnp.asarray(x)[r_block], shared),
        jax.tree_util.tree_map(lambda x: jnp.asarray(x)[c_block], configs),
    )
    batch = None
    if config_bytes is not None:
        batch = sweep_batch_size(-(-n_regimes * chunks // n_devices), per_chunk, config_bytes)
    out = sweep_map(_grid_entry(fn), args, devices=devices, batch_size=batch)

    def unblock(v):
        v = np.asarray(v)
        return v.reshape((n_regimes, chunks * per_chunk) + v.shape[2:])[:, :n_configs]

    return jax.tree_util.tree_map(unblock, out)
