"""Sampling answers from the transformer policy and scoring them (:mod:`sim.transformer.train`).

Answers have a fixed length; each token is drawn autoregressively from `pi(.|prompt, tokens so
far)` inside one `lax.scan`. One key per (prompt, sample), so answers are independent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.transformer import exact as _exact
from sim.transformer import model as _model

__all__ = ["answer_log_probs", "sample_answer", "sample_answers"]


def sample_answer(params, prompt, key, config: _model.ModelConfig, answer_len: int):
    """Sample one answer `(answer_len,)` autoregressively from `pi(.|prompt)` with `lax.scan`."""
    lp = prompt.shape[0]
    buf = jnp.concatenate([prompt, jnp.zeros((answer_len,), prompt.dtype)])  # (Lp + La,)

    def body(carry, t):
        seq, key = carry
        key, sub = jax.random.split(key)
        # Causal attention: the zeros after position Lp-1+t do not affect its logits.
        logits = _model.apply(params, seq[:-1], config)  # (Lp + La - 1, V)
        token = jax.random.categorical(sub, logits[lp - 1 + t]).astype(seq.dtype)
        seq = seq.at[lp + t].set(token)
        return (seq, key), token

    _, tokens = jax.lax.scan(body, (buf, key), jnp.arange(answer_len))
    return tokens  # (La,)


def sample_answers(params, prompts, key, config, answer_len: int, n: int):
    """`n` answers for each prompt: `(P, n, answer_len)`; one key per (prompt, sample)."""
    keys = jax.random.split(key, prompts.shape[0] * n)
    keys = keys.reshape((prompts.shape[0], n) + keys.shape[1:])  # typed or raw uint32 keys
    one = lambda prompt, ks: jax.vmap(lambda kk: sample_answer(params, prompt, kk, config, answer_len))(ks)
    return jax.vmap(one)(prompts, keys)


def answer_log_probs(params, prompts, answers, config):
    """`log pi(y_ij | x_i)` for answers `(P, n, La)`: `(P, n)`."""
    per_prompt = lambda prompt, ys: jax.vmap(lambda y: _exact.log_success(params, prompt, y, config))(ys)
    return jax.vmap(per_prompt)(prompts, answers)
