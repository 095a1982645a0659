"""The tiny task and briefly warm-started tiny model the transformer tests share (float32)."""

from __future__ import annotations

import jax

from sim.transformer import model, task, train

TINY_TASK = task.TaskConfig(modulus=4, hard_fraction=0.25, sft_hard_fraction=0.5)


def tiny_model_config(t):
    return model.ModelConfig(vocab_size=t.vocab_size, max_len=t.seq_len, d_model=16, n_heads=2, n_layers=1, d_mlp=32)


def make_tiny():
    """`(task, model config, params)` after a 30-step supervised warm start."""
    t = task.make_task(TINY_TASK, key=jax.random.key(0))
    cfg = tiny_model_config(t)
    params = model.init(jax.random.key(1), cfg)
    params, _ = train.supervised_warm_start(
        params,
        t.prompts[t.sft_index],
        t.answers[t.sft_index],
        cfg,
        train.SFTConfig(steps=30, batch_size=16, learning_rate=1e-2, checkpoint_every=30),
        key=jax.random.key(2),
    )
    return t, cfg, params
