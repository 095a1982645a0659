"""A training run on disk: steps, verl-schema rollout dumps, checkpoints and resume.

Each step `t` writes `{out}/{t}.jsonl` (verl's `trainer.rollout_data_dir` schema): one answer a
line with `input` (the prompt text), `output` (the answer text), `gts` (the target digit),
`score` (the verifier's reward, 0 or 1), `acc` (the same), `step`, `uid` (the prompt's group in
this step), and the section 11 fields `fold` and `alignment` (`F` numbers, null at the answer's own
fold). `passk diagnose OUT` reads them as they are. With a sketch of dimension `D` (`sketch_dim`),
`score` holds the answer's sketched score vector `S s_ij` (SPEC section 10) and the reward is in
`acc` only (verl's reward extra): `passk diagnose OUT --reward-field acc` reads both.

Every `checkpoint_every` steps the parameters, the optimiser state and the records so far are
written atomically to `{out}/checkpoint.pkl`, named by a fingerprint of the task, the settings and
the key; a run started again with the same settings resumes there and gives the numbers of an
uninterrupted run (step `t` draws from `fold_in(key, t)` only).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from sim.files import atomic_write_text
from sim.lm.task import LMTask, decode_answer, decode_prompt, eval_prompts, targets
from sim.lm.train import (
    RunConfig,
    init_params,
    make_probe,
    make_sketch,
    make_step,
    step_records,
)
from sim.transformer.checkpoint import (
    fingerprint,
    key_list,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["CHECKPOINT", "dump_lines", "run_fingerprint", "train_run"]

CHECKPOINT = "checkpoint.pkl"


def run_fingerprint(task: LMTask, config: RunConfig, key, sketch_dim: int = 0) -> str:
    """The name of a run: its task, settings, key and sketch (not its length: a run may be extended)."""
    return fingerprint("sim.lm", task, config, key_list(key), *((sketch_dim,) if sketch_dim else ()))


def dump_lines(task: LMTask, step: int, batch, alignments, folds, scores=None) -> str:
    """The verl-schema JSON lines of one step's batch (section 11 fields; sketched scores in `score` if given)."""
    prompts, answers, rewards = (np.asarray(x) for x in jax.device_get((batch.prompts, batch.answers, batch.rewards)))
    gts = np.asarray(targets(task, prompts))
    align = np.asarray(alignments, np.float64)
    sketch = None if scores is None else np.asarray(scores, np.float64)
    lines = []
    for i in range(prompts.shape[0]):
        text = decode_prompt(task, prompts[i])
        for j in range(answers.shape[1]):
            row = [None if f == folds[i] else float(align[i, j, f]) for f in range(align.shape[2])]
            reward = int(rewards[i, j])
            score = reward if sketch is None else sketch[i, j].tolist()
            lines.append(
                json.dumps(
                    {
                        "input": text,
                        "output": decode_answer(answers[i, j]),
                        "gts": str(int(gts[i])),
                        "score": score,
                        "acc": reward,
                        "step": step,
                        "uid": f"{step}-{i}",
                        "fold": int(folds[i]),
                        "alignment": row,
                    }
                )
            )
    return "\n".join(lines) + "\n"


def train_run(
    task: LMTask,
    config: RunConfig,
    *,
    key,
    steps: int,
    out,
    checkpoint_every: int = 25,
    progress=None,
    dumps: bool = True,
    sketch_dim: int = 0,
) -> dict:
    """Train for `steps` steps, writing dumps and checkpoints under `out`; resume from a checkpoint.

    Args:
      task, config: the task and the trainer's settings.
      key: a jax.random key (the model's initial parameters and every step's draws).
      steps: total steps, `>= 1`.
      out: the run folder (created); holds `{step}.jsonl`, `checkpoint.pkl`.
      checkpoint_every: steps between checkpoints, `>= 1`.
      progress: optional `callable(step, records)` after each step (it may raise to stop the run).
      dumps: write the per-step rollout files.
      sketch_dim: `D > 0` writes sketched score vectors of dimension `D` into the dumps (0: none).

    Returns:
      `{"fingerprint", "records": [per-step dicts], "params"}`.
    """
    for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = run_fingerprint(task, config, key, sketch_dim)
    k_init, k_steps = jax.random.split(key)
    ref_params = init_params(task, config, key=k_init)
    step_fn, optimizer = make_step(task, config, eval_prompts(task))
    probe, folds = make_probe(task, config)
    if isinstance(sketch_dim, bool) or not isinstance(sketch_dim, int) or sketch_dim < 0:
        raise ValueError(f"sketch_dim must be an integer >= 0; got {sketch_dim!r}")
    sketch = (
        make_sketch(task, config, ref_params, sketch_dim, key=jax.random.fold_in(k_init, 1)) if sketch_dim else None
    )
    params, opt_state, done, records = ref_params, optimizer.init(ref_params), 0, []
    saved = load_checkpoint(out / CHECKPOINT, name)
    if saved is not None:
        params, opt_state = jax.tree_util.tree_map(jax.numpy.asarray, (saved["params"], saved["opt_state"]))
        done, records = int(saved["step"]), list(saved["records"])
        if done > steps:
            raise ValueError(f"steps must be >= {done}, the step of the checkpoint in {out}; got {steps}")
    for t in range(done, steps):
        new_params, new_state, batch, rec = step_fn(params, opt_state, ref_params, jax.random.fold_in(k_steps, t))
        row = step_records(rec, task, config, t)
        if dumps:
            alignments = probe(params, batch)
            scores = None if sketch is None else sketch(params, batch)
            atomic_write_text(out / f"{t}.jsonl", dump_lines(task, t, batch, alignments, folds, scores))
        params, opt_state = new_params, new_state
        records.append(row)
        if (t + 1) % checkpoint_every == 0 or t + 1 == steps:
            save_checkpoint(
                out / CHECKPOINT,
                {
                    "fingerprint": name,
                    "params": params,
                    "opt_state": opt_state,
                    "step": t + 1,
                    "records": records,
                    "key": key_list(key),
                },
            )
        if progress is not None:
            progress(t, row)
    return {"fingerprint": name, "records": records, "params": params}
