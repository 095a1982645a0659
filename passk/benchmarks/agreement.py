"""`agreement`: agreement scores of every prompt of the transformer, over all parameters.

Measured: :func:`sim.transformer.exact.agreement_jvp` -- `v = grad J_1 = J^T mu` by one reverse
pass, then `a = J v` by one forward pass (`jax.jvp`), never forming per-prompt gradients, over
chunks of `CHUNK` prompts. The same passes over all `P` prompts at once are timed
too (`one_pass_s`): on the CPU backend the chunked passes are faster, since each chunk's scratch
buffers stay in cache instead of being allocated and page-faulted afresh on every call.

Baselines, each jitted and timed after compilation in the same process:

- per-prompt gradients: :func:`sim.transformer.exact.agreement_pergrad` (`vmap(grad p_i)`, then
  `a = G (G^T mu)`), memory `O(P x params)`; target: ours at least 4x faster at `P = 512`, the gap
  widening at `P = 2048`;
- one batch gradient: `jax.grad` of `J_1` over all `P` prompts (the cost floor: agreements need
  `grad J_1` first); target: ours at most 2x its cost (ratio >= 0.5). The per-prompt rows report
  `ratio_ceiling["batch_grad"]`, the per-prompt time over this one: the ratio a route costing
  exactly one batch gradient would reach.

Memory: XLA's `memory_analysis()` of each compiled function (CPU backend: temporary buffer bytes;
device statistics do not exist there) at several `P`; the JVP route should grow like `P` times
activations, the per-prompt route like `P` times parameters.

The model: the default :class:`sim.transformer.model.ModelConfig` widths on the arithmetic task of
:mod:`sim.transformer.task` (modulus 32: `2 * 32^2 = 2048` prompts); smaller `P` take a random
subset of those prompts, so every `P` uses the same network.
"""

from __future__ import annotations

import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np

from passk.benchmarks._timing import interleaved, row
from sim.transformer import exact, model, task

__all__ = ["setup", "bench", "temp_bytes"]


def setup(key, *, modulus: int, d_model: int = 64, n_layers: int = 2):
    """`(params, prompts, answers, config)` for the task of `modulus` with a random network."""
    k_task, k_model = jax.random.split(key)
    t = task.make_task(task.TaskConfig(modulus=modulus), key=k_task)
    config = model.ModelConfig(
        vocab_size=t.vocab_size, max_len=t.seq_len, d_model=d_model, n_heads=4, n_layers=n_layers, d_mlp=2 * d_model
    )
    params = model.init(k_model, config)
    return params, jnp.asarray(t.prompts), jnp.asarray(t.answers), config


#: Prompts per chunk of the measured JVP route: `agreement_jvp`'s default (`--quick` uses 32 so
#: that it chunks too).
CHUNK = inspect.signature(exact.agreement_jvp).parameters["chunk_size"].default


def _functions(config, chunk_size: int = CHUNK):
    jvp = jax.jit(lambda prm, x, y: exact.agreement_jvp(prm, x, y, config, chunk_size=chunk_size)[0])
    one_pass = jax.jit(lambda prm, x, y: exact.agreement_jvp(prm, x, y, config, chunk_size=None)[0])
    pergrad = jax.jit(lambda prm, x, y: exact.agreement_pergrad(prm, x, y, config))
    batch = jax.jit(lambda prm, x, y: exact.grad_pass_at_1(prm, x, y, config))
    return {"jvp": jvp, "jvp_one_pass": one_pass, "pergrad": pergrad, "batch_grad": batch}


def temp_bytes(fn, *args) -> int:
    """Temporary (scratch) bytes XLA allocates for `fn(*args)` (`memory_analysis()`, no run)."""
    stats = fn.lower(*args).compile().memory_analysis()
    return int(stats.temp_size_in_bytes)


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """Rows for each (width, `P`): JVP vs per-prompt gradients, JVP vs one batch gradient.

    The full run also repeats `P = 512` at twice the default width (4x the parameters): the
    per-prompt route pays per parameter and per prompt, the JVP route per activation and prompt.
    """
    modulus = 8 if quick else 32
    runs = ((64, (64, 128)),) if quick else ((64, (512, 2048)), (128, (512,)))
    mem_sizes = (32, 64, 128) if quick else (128, 512, 2048)
    chunk = 32 if quick else CHUNK
    repeats = repeats or (3 if quick else 9)
    k_setup, k_sub = jax.random.split(key)
    rows = []
    for width, sizes in runs:
        params, prompts, answers, config = setup(k_setup, modulus=modulus, d_model=width)
        n_params = model.param_count(params)
        fns = _functions(config, chunk)
        perm = np.asarray(jax.random.permutation(k_sub, prompts.shape[0]))

        def subset(p):
            idx = np.sort(perm[:p])
            return prompts[idx], answers[idx]

        memory = {}
        for p in mem_sizes:
            x, y = subset(p)
            memory[str(p)] = {name: temp_bytes(fn, params, x, y) for name, fn in fns.items()}
        lo, hi = str(mem_sizes[0]), str(mem_sizes[-1])
        # Growth of scratch memory per extra prompt, in units of the parameter bytes.
        per_prompt = {
            name: (memory[hi][name] - memory[lo][name]) / (mem_sizes[-1] - mem_sizes[0]) / (4 * n_params)
            for name in fns
        }
        for p in sizes:
            x, y = subset(p)
            compile_s = {}
            for name, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(params, x, y))
                compile_s[name] = time.perf_counter() - start
            a_jvp = np.asarray(fns["jvp"](params, x, y))
            a_ref = np.asarray(fns["pergrad"](params, x, y))
            rel_err = float(np.max(np.abs(a_jvp - a_ref)) / max(np.max(np.abs(a_ref)), 1e-30))
            med = interleaved({name: (lambda fn=fn: fn(params, x, y)) for name, fn in fns.items()}, repeats)
            common = dict(
                P=p,
                d_model=width,
                params=n_params,
                compile_s=compile_s["jvp"],
                chunk_size=chunk,
                one_pass_s=med["jvp_one_pass"],
                max_rel_diff=rel_err,
                temp_bytes=memory,
                temp_bytes_per_prompt_in_param_bytes=per_prompt,
                device=str(jax.devices()[0].platform),
            )
            tag = f"P={p}" + ("" if width == 64 else f", d_model={width}")
            ratio_pg = med["pergrad"] / med["jvp"]
            # A route to agreements that first computes grad J_1 costs at least one batch gradient.
            rows.append(
                row(
                    f"agreement[{tag}] vs per-prompt grads",
                    med["jvp"],
                    med["pergrad"],
                    ">= 4x at P=512, widening with P",
                    met=bool(ratio_pg >= 4),
                    ratio_ceiling={"batch_grad": med["pergrad"] / med["batch_grad"]},
                    **common,
                )
            )
            ratio_b = med["batch_grad"] / med["jvp"]
            rows.append(
                row(
                    f"agreement[{tag}] vs one batch grad",
                    med["jvp"],
                    med["batch_grad"],
                    "<= 2x one batch gradient (ratio >= 0.5)",
                    met=bool(ratio_b >= 0.5),
                    **common,
                )
            )
    return rows
