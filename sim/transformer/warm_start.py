"""Supervised warm start of the transformer policy: Adam on the answer-token cross-entropy, in
checkpointed chunks (:mod:`sim.transformer.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sim.transformer import checkpoint as _checkpoint
from sim.transformer import exact as _exact

__all__ = ["SFTConfig", "supervised_warm_start"]


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised warm start: Adam on the answer-token cross-entropy of the warm-start prompts."""

    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    checkpoint_every: int = 100

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every"):
            _checkpoint.check_positive_int("SFTConfig", name, getattr(self, name))
        if not self.learning_rate > 0:
            raise ValueError(f"SFTConfig.learning_rate must be > 0; got {self.learning_rate!r}")


@functools.partial(jax.jit, static_argnames=("config", "sft"))
def _sft_chunk(carry, start, key, prompts, answers, *, config, sft):
    opt = optax.adam(sft.learning_rate)

    def loss_fn(theta, idx):
        logp = jax.vmap(lambda x, y: _exact.log_success(theta, x, y, config))(prompts[idx], answers[idx])
        return -jnp.mean(logp)

    def step(carry, inputs):
        theta, opt_state = carry
        _, step_key = inputs
        idx = jax.random.randint(step_key, (sft.batch_size,), 0, prompts.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(theta, idx)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state), {"loss": loss}

    return jax.lax.scan(step, carry, _checkpoint.step_keys(key, start, sft.checkpoint_every))


def supervised_warm_start(
    params, prompts, answers, config, sft: SFTConfig, *, key, checkpoint_path=None, progress=None
):
    """Adam on the mean answer cross-entropy `-log pi(y*|x)` over random mini-batches of the
    warm-start prompts `(N, Lp)` / answers `(N, La)`. Returns `(params, losses (steps,))`."""
    _checkpoint.check_chunking(sft.steps, sft.checkpoint_every, "SFTConfig")
    prompts, answers = jnp.asarray(prompts), jnp.asarray(answers)
    digests = _checkpoint.data_digests(prompts, answers, params)
    fingerprint = _checkpoint.fingerprint("sft", sft, config, *digests, _checkpoint.key_list(key))
    (params, _), metrics = _checkpoint.run_chunks(
        lambda carry, start: _sft_chunk(carry, start, key, prompts, answers, config=config, sft=sft),
        (params, optax.adam(sft.learning_rate).init(params)),
        steps=sft.steps,
        chunk=sft.checkpoint_every,
        checkpoint_path=None if checkpoint_path is None else Path(checkpoint_path),
        fingerprint=fingerprint,
        key=key,
        progress=progress,
        label="warm start",
    )
    return params, np.asarray(metrics["loss"])
