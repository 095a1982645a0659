"""`lm`: the miniature LLM run (:mod:`sim.lm`) at the default sizes of `passk lm`.

Four rows, each timed after compilation and interleaved with its baseline:

- `lm trainer`: one step of the compiled trainer (exact evaluation, sampling, `mu` epochs of
  Adam on the clipped surrogate) against the budget of the issue, 200 steps in 2 minutes
  (0.6 s a step): `ratio = 0.6 s / step`, met at `ratio >= 1`; `steps_per_s` beside it.
- `lm sampler`: the compiled sampler (:func:`sim.lm.policy.sample_answers`, one program for all
  `L` tokens) against a plain Python loop over the tokens, each token one call of the compiled
  forward pass on the growing sequences and one categorical draw with the same key
  (`fold_in(key, t)`); `agree` says the two drew the same tokens.
- `lm probe`, `lm sketch`: the section 11 probe (`F = 4`) and the `D = 256` sketch of SPEC
  section 10 on a sampled batch, each as a multiple of one training update of the same batch
  (sampling and `mu` epochs of Adam, without the exact evaluation a real trainer does not have):
  `steps = ours_s / baseline_s`; target for the probe at most 1.5 such steps.

`quick` uses a small task and model (the code paths are the same, the numbers are not the
default sizes').
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from passk.benchmarks._timing import interleaved, row

__all__ = ["bench", "PROBE_TARGET_STEPS", "STEP_BUDGET_S", "python_loop_sampler"]

#: The issue's budget for one step: 200 steps in 2 minutes.
STEP_BUDGET_S = 120.0 / 200
#: The probe's cost target, in training updates of the same batch.
PROBE_TARGET_STEPS = 1.5
SKETCH_DIM = 256


def python_loop_sampler(params, prompts, n: int, config, task, *, key):
    """The sampler as a plain Python loop over tokens: same draws as :func:`sim.lm.policy.sample_answers`.

    Token `t` of every answer: one call of the compiled forward pass on the sequences so far, the
    digit log-softmax at the last position, and `jax.random.categorical(fold_in(key, t), .)`.
    """
    b = prompts.shape[0]
    seqs = jnp.broadcast_to(prompts[:, None, :], (b, n, prompts.shape[1]))
    logps = []
    for t in range(task.answer_len):
        logp = _forward(params, seqs, config, task)  # (B, n, V): compiled once per length
        token = jax.random.categorical(jax.random.fold_in(key, t), logp, axis=-1).astype(jnp.int32)
        logps.append(jnp.take_along_axis(logp, token[..., None], axis=-1)[..., 0])
        seqs = jnp.concatenate([seqs, token[..., None]], axis=-1)
    return seqs[..., prompts.shape[1] :], jnp.stack(logps, axis=-1)


def _forward_impl(params, seqs, config, task):
    from sim.lm import policy

    return jax.vmap(jax.vmap(lambda s: policy._digit_log_softmax(params, s, config, task)[-1]))(seqs)


_forward = jax.jit(_forward_impl, static_argnames=("config", "task"))


def _setup(quick: bool, key):
    from passk.lm import DEFAULTS, build_run
    from sim.lm import train

    s = dict(DEFAULTS)
    if quick:
        s.update(n_digits=3, prompt_digits=3, n_eval=8, d_model=8, n_layers=1, d_mlp=16, batch_prompts=8, n_answers=4)
    task, config = build_run("few-hard", "grouped-passk", 4 if not quick else 2, **s)
    k_init, k_batch = jax.random.split(key)
    return task, config, train.init_params(task, config, key=k_init), k_batch


def _update_fn(task, config):
    """One training update of a given batch: `mu` epochs of Adam on the clipped surrogate."""
    from sim.lm import train

    est = theory.gradient_estimator(config.estimator)
    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def update(params, opt_state, batch, old_logp):
        coef = est.coefficients(batch.rewards, config.k).astype(old_logp.dtype)

        def epoch(carry, _):
            theta, state = carry
            grads, _ = jax.grad(train._surrogate, has_aux=True)(theta, old_logp, params, batch, coef, task, config)
            updates, state = optimizer.update(grads, state, theta)
            return (optax.apply_updates(theta, updates), state), None

        (theta, state), _ = jax.lax.scan(epoch, (params, opt_state), None, length=config.epochs)
        return theta, state

    return update, optimizer


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """The four rows of the module docstring."""
    from sim.lm import policy, train
    from sim.lm import task as lm_task

    repeats = repeats or (3 if quick else 7)
    task, config, params, key = _setup(quick, key)
    sizes = {"B": config.batch_prompts, "n": config.n_answers, "L": task.answer_len, "mu": config.epochs}
    device = str(jax.devices()[0].platform)
    k_prompts, k_sample, k_step, k_sketch = jax.random.split(key, 4)
    prompts = lm_task.draw_prompts(task, config.batch_prompts, key=k_prompts)

    # the sampler, compiled and as a Python loop over tokens; the same key gives the same draws
    def compiled():
        return policy.sample_answers(params, prompts, config.n_answers, config.model, task, key=k_sample)

    def loop():
        return python_loop_sampler(params, prompts, config.n_answers, config.model, task, key=k_sample)

    compile_s = {}
    for name, fn in (("sampler", compiled), ("loop", loop)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - start
    (a_tokens, a_logp), (b_tokens, b_logp) = compiled(), loop()
    agree = bool(np.array_equal(np.asarray(a_tokens), np.asarray(b_tokens))) and bool(
        np.allclose(np.asarray(a_logp), np.asarray(b_logp), rtol=1e-5, atol=1e-6)
    )
    med = interleaved({"sampler": compiled, "loop": loop}, repeats)
    rows = [
        row(
            f"lm sampler[B={sizes['B']}, n={sizes['n']}, L={sizes['L']}] vs a Python loop over tokens",
            med["sampler"],
            med["loop"],
            "> 1 (one compiled program for all tokens)",
            met=bool(med["loop"] > med["sampler"]),
            agree=agree,
            compile_s=compile_s,
            **sizes,
            device=device,
        )
    ]

    # the trainer's step, as a run does it (exact evaluation included)
    step_fn, optimizer = train.make_step(task, config, lm_task.eval_prompts(task))
    opt_state = optimizer.init(params)

    def step():
        return step_fn(params, opt_state, params, k_step)

    start = time.perf_counter()
    jax.block_until_ready(step())
    step_compile = time.perf_counter() - start
    step_s = interleaved({"step": step}, repeats)["step"]
    rows.append(
        row(
            f"lm trainer step[B={sizes['B']}, n={sizes['n']}, mu={sizes['mu']}] vs the budget of 200 steps in 2 min",
            step_s,
            STEP_BUDGET_S,
            ">= 1 (a step within 0.6 s)",
            met=bool(step_s <= STEP_BUDGET_S),
            steps_per_s=1.0 / step_s,
            compile_s={"step": step_compile},
            **sizes,
            device=device,
        )
    )

    # the probe and the sketch against one training update of the same batch
    answers, old_logp = compiled()
    batch = train.Batch(prompts, answers, lm_task.verify(task, prompts[:, None, :], answers))
    update, opt = _update_fn(task, config)
    state0 = opt.init(params)
    probe, _ = train.make_probe(task, config)
    sketch = train.make_sketch(task, config, params, SKETCH_DIM, key=k_sketch)
    fns = {
        "update": lambda: update(params, state0, batch, old_logp),
        "probe": lambda: probe(params, batch),
        "sketch": lambda: sketch(params, batch),
    }
    compile_s = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - start
    med = interleaved(fns, repeats)
    for name, target, limit in (
        ("probe", f"<= {PROBE_TARGET_STEPS} training updates of the same batch", PROBE_TARGET_STEPS),
        ("sketch", "reported (no target)", None),
    ):
        steps = med[name] / med["update"]
        label = f"F={config.n_folds}" if name == "probe" else f"D={SKETCH_DIM}"
        rows.append(
            row(
                f"lm {name}[{label}, B={sizes['B']}, n={sizes['n']}] vs one training update (mu={sizes['mu']})",
                med[name],
                med["update"],
                target,
                steps=steps,
                met=None if limit is None else bool(steps <= limit),
                compile_s={name: compile_s[name], "update": compile_s["update"]},
                **sizes,
                device=device,
            )
        )
    return rows
