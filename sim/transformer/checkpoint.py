"""Checkpoint and resume for the transformer's training loops (:mod:`sim.transformer.train`).

A loop runs as compiled chunks of `checkpoint_every` steps (:func:`run_chunks`); after each chunk
the carry, the step and the metrics so far are written atomically to one file, named by a
fingerprint of everything the run starts from (settings, data, initial parameters, key), so that
only the same run resumes from it. Step `t` draws `fold_in(key, t)` (:func:`step_keys`), so a
resumed run gives the numbers of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sim.files import atomic_write

__all__ = ["check_chunking", "data_digests", "fingerprint", "is_typed_key", "key_list", "load_checkpoint",
           "run_chunks", "save_checkpoint", "step_keys"]


def fingerprint(*parts) -> str:
    """A short hash naming a run: a checkpoint is only resumed by the run that wrote it."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def data_digests(*trees):
    """Digests of the arrays a run starts from (data, initial parameters)."""
    return [
        hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree))).hexdigest()
        for tree in trees
    ]


def save_checkpoint(path: Path, state: dict) -> None:
    host = jax.device_get(state)
    atomic_write(path, lambda f: pickle.dump(host, f, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(path: Path, fingerprint: str):
    if path is None or not path.exists():
        return None
    with open(path, "rb") as handle:
        state = pickle.load(handle)
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {path} belongs to a different run (fingerprint {state.get('fingerprint')!r}, "
            f"expected {fingerprint!r}); remove it or use another checkpoint_dir"
        )
    return state


def run_chunks(run_chunk, init_state, *, steps, chunk, checkpoint_path, fingerprint, key, progress, label):
    """Drive `run_chunk(carry, start) -> (carry, metrics over chunk steps)` until `steps`.

    Returns `(final_carry, metrics)` with metrics stacked over steps (numpy). Resumes from
    `checkpoint_path` when it holds a checkpoint of the same run (same fingerprint).
    """
    carry, done, history = init_state, 0, []
    saved = load_checkpoint(checkpoint_path, fingerprint)
    if saved is not None:
        carry = jax.tree_util.tree_map(jnp.asarray, saved["carry"])
        done, history = int(saved["step"]), list(saved["history"])
        if progress:
            progress(f"{label}: resumed at step {done}/{steps}")
    while done < steps:
        # Callers check that `steps` is a multiple of `chunk`, so chunks never overshoot.
        carry, metrics = run_chunk(carry, jnp.asarray(done, jnp.int32))
        history.append(jax.device_get(metrics))
        done += chunk
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                {"fingerprint": fingerprint, "carry": carry, "step": done, "history": history,
                 "key": key_list(key)},
            )
        if progress:
            progress(f"{label}: step {done}/{steps}" + (" (checkpoint written)" if checkpoint_path else ""))
    stacked = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *history) if history else {}
    return carry, stacked


def step_keys(key, start, chunk):
    """The keys of steps `start .. start+chunk-1`: `fold_in(key, t)`, independent of chunking."""
    idx = start + jnp.arange(chunk)
    return idx, jax.vmap(lambda t: jax.random.fold_in(key, t))(idx)


def check_chunking(steps, chunk, owner):
    if steps % chunk:
        raise ValueError(f"{owner}: steps ({steps}) must be a multiple of checkpoint_every ({chunk})")


def is_typed_key(key) -> bool:
    return jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)


def key_list(key):
    return (jax.random.key_data(key) if is_typed_key(key) else jnp.asarray(key)).tolist()
