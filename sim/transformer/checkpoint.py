"""Checkpoint and resume for the transformer's training loops (:mod:`sim.transformer.train`).

A loop runs as compiled chunks of `checkpoint_every` steps (:func:`run_chunks`); after each chunk
the carry, the step and the metrics so far are written atomically to one file, named by a
fingerprint of everything the run starts from (settings, data, initial parameters, key), so that
only the same run resumes from it. Step `t` draws `fold_in(key, t)` (:func:`step_keys`), so a
resumed run gives the numbers of an uninterrupted one.

A fine-tuning run's fingerprint names its `PGConfig` (:func:`pg_identity`) and its checkpoint
keeps a carry layout per kind of rule (:func:`carry_layout`): checkpoints of the runs these
spellings and layouts were fixed for resume; any other checkpoint file at the path is refused by
:func:`load_checkpoint`, which says that it belongs to a different run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sim.files import atomic_write
from sim.records import RECORD_NAMES
from sim.rules import RULE_TABLE

__all__ = [
    "carry_layout",
    "check_chunking",
    "check_positive_int",
    "data_digests",
    "pg_identity",
    "fingerprint",
    "is_typed_key",
    "key_list",
    "load_checkpoint",
    "run_chunks",
    "save_checkpoint",
    "step_keys",
]


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
                {"fingerprint": fingerprint, "carry": carry, "step": done, "history": history, "key": key_list(key)},
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


def check_positive_int(owner, name, value):
    """ValueError naming `owner.name` unless `value` is an integer `>= 1`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer; got {value!r}")


def carry_layout(pg, fresh_guard_state):
    """Converters between the fine-tuning chunk's carry `(params, optimiser state, guard state,
    k')` and the carry a checkpoint of the `PGConfig` `pg` holds.

    Checkpoints keep one layout per kind of rule (`"passk"`: `(params, optimiser state)`;
    `"pass1"`, `"safe-k"`: `(params, optimiser state, k')`; rules that read `g_1`:
    `(params, (optimiser state, guard state), k')`), the layouts of the programs compiled for one
    rule each, whose checkpoints resume here; `"passk"` records carry no `k_used` (it is `pg.k`)."""
    guarded = RULE_TABLE[pg.rule].reads_g1
    k0 = jnp.asarray(pg.k, jnp.int32)

    def to_shared(saved):
        if pg.rule == "passk":
            return saved[0], saved[1], fresh_guard_state, k0
        if guarded:
            return saved[0], saved[1][0], saved[1][1], saved[2]
        return saved[0], saved[1], fresh_guard_state, saved[2]

    def to_saved(carry, metrics):
        theta, base_state, guard_state, k = carry
        if pg.rule == "passk":
            return (theta, base_state), {name: v for name, v in metrics.items() if name != RECORD_NAMES.k_used}
        if guarded:
            return (theta, (base_state, guard_state), k), metrics
        return (theta, base_state, k), metrics

    return to_shared, to_saved


class _Text:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


_RULE_FIELDS = ("rule", "mixture_weight", "smoothness", "safe_k_every")
#: How the step rules are spelled in fingerprints: the names under which the trainer that had only
#: guards after the optimiser wrote its checkpoints, so that those checkpoints resume.
_FINGERPRINT_NAMES = {"project-step": "project", "project-safe-step": "project-safe", "mixture-step": "mixture"}


def pg_identity(pg):
    """What names a fine-tuning run (`PGConfig` `pg`) in its fingerprint: the repr of the config.

    A plain `"passk"` run with the rule fields at their defaults leaves them out, so that
    checkpoints of the trainer without rules resume; a step rule is spelled as in
    `_FINGERPRINT_NAMES`; a direction rule that reads `g_1` ("project", "project-safe", "mixture")
    adds `acts_on='direction'`, so that no checkpoint of a step rule spelled alike resumes it (it
    is refused: the fingerprints differ)."""
    defaults = {f.name: f.default for f in dataclasses.fields(pg) if f.name in _RULE_FIELDS}
    plain = all(getattr(pg, name) == value for name, value in defaults.items())
    fields = [f.name for f in dataclasses.fields(pg) if not (plain and f.name in _RULE_FIELDS)]
    spelled = {name: getattr(pg, name) for name in fields}
    if not plain:
        spelled["rule"] = _FINGERPRINT_NAMES.get(pg.rule, pg.rule)
    text = f"PGConfig({', '.join(f'{name}={value!r}' for name, value in spelled.items())})"
    rule = RULE_TABLE[pg.rule]
    if rule.reads_g1 and rule.acts_on == "direction":
        text += " acts_on='direction'"
    return _Text(text)
