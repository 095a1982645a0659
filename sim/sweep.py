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
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["sweep_map", "sweep_mesh", "padded_length", "SWEEP_AXIS"]

SWEEP_AXIS = "sweep"


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
        body = functools.wraps(fn)(jax.shard_map(batched, mesh=mesh, in_specs=(spec,), out_specs=spec,
                                                 check_vma=False))
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


def sweep_map(fn: Callable, args, *, devices: Sequence[jax.Device] | None = None, multiprocess: bool | None = None,
              batch_size: int | None = None):
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
