"""`probe`: the section 11 probe against one training step of the same batch.

Measured: :func:`sim.probe.fold_probe` on the project's transformer, `P` prompts with `n` answers
each split into `F = 4` folds: the fold gradients (one vmapped backward pass over per-fold
sub-batches) and the alignments `t_ijf` (`F - 1` forward-mode passes), compiled.

Baseline (the unit): one training step's gradient of the same batch, `jax.grad` of the surrogate
`sum_ij w_ij log pi(y_ij | x_i)`: one forward and one backward pass over every answer. Target:
the probe costs at most 1.5 such steps (`ours_s / baseline_s <= 1.5`, i.e. `ratio >= 2/3`).

The answers are random strings of the task's answer length and the rewards random bits: the cost
does not depend on them.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from passk.benchmarks._timing import interleaved, row
from passk.benchmarks.agreement import setup
from sim.probe import fold_probe
from sim.transformer import exact

__all__ = ["bench", "TARGET_STEPS"]

#: The probe's cost target, in training steps of the same batch.
TARGET_STEPS = 1.5
N_FOLDS = 4


def _log_prob(config):
    def log_prob(params, batch):
        prompts, answers = batch  # (P', Lp), (P', n, La)
        per_answer = jax.vmap(lambda x, y: exact.log_success(params, x, y, config), in_axes=(None, 0))
        return jax.vmap(per_answer)(prompts, answers)  # (P', n)

    return log_prob


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """One row: the probe's seconds against one training step's gradient, on the same batch."""
    n_prompts, n = (32, 4) if quick else (128, 8)
    repeats = repeats or (3 if quick else 9)
    k_setup, k_ans, k_rew = jax.random.split(key, 3)
    params, prompts, answers, config = setup(k_setup, modulus=8 if quick else 16)
    prompts = prompts[:n_prompts]
    sampled = jax.random.randint(k_ans, (n_prompts, n, answers.shape[1]), 0, config.vocab_size).astype(answers.dtype)
    rewards = jax.random.bernoulli(k_rew, 0.5, (n_prompts, n)).astype(jnp.float32)
    folds = np.arange(n_prompts) % N_FOLDS
    log_prob = _log_prob(config)
    batch = (prompts, sampled)

    step = jax.jit(jax.grad(lambda prm, b, w: jnp.sum(w * log_prob(prm, b))))
    probe = jax.jit(lambda prm, b, r: fold_probe(log_prob, prm, b, r, folds))
    compile_s = {}
    for name, fn in (
        ("step", lambda: step(params, batch, rewards / n)),
        ("probe", lambda: probe(params, batch, rewards)),
    ):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - start
    med = interleaved(
        {"step": lambda: step(params, batch, rewards / n), "probe": lambda: probe(params, batch, rewards)}, repeats
    )
    steps = med["probe"] / med["step"]
    return [
        row(
            f"probe[P={n_prompts}, n={n}, F={N_FOLDS}] vs one training step",
            med["probe"],
            med["step"],
            f"<= {TARGET_STEPS} training steps of the same batch",
            steps=steps,
            met=bool(steps <= TARGET_STEPS),
            compile_s=compile_s,
            P=n_prompts,
            n=n,
            F=N_FOLDS,
            device=str(jax.devices()[0].platform),
        )
    ]
