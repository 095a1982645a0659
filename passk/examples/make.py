"""Write the example run of :mod:`passk.examples`: `python -m passk.examples.make [--out DIR]`.

The toy bandit (`sim.toy_bandit(jax.random.key(SEED), n_prompts=64)`) at its start, `n = 16`
answers per prompt drawn with `jax.random.key(SEED + 1)`, and the exact score vectors
`s_ij = grad_theta log pi(y_ij | x_i) = (e_{y_ij} - pi(x_i)) psi(x_i)^T`, flattened to `D = 16`.
Prints the exact `k*` of this bandit (`theory.critical_k` from exact `p` and agreements).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from passk.examples import RUN_GROUP_SIZE, RUN_TRAINED_K

SEED = 7
N_PROMPTS = 64
N_ANSWERS = 16

#: The example run directories (`passk diagnose --example verl|trl|nemo-rl`): the toy bandit
#: trained on the exact pass@k gradient at `RUN_K`, its answers logged every `RUN_EVERY` updates.
RUN_SEED = 11
RUN_PROMPTS = 64
RUN_ANSWERS = RUN_GROUP_SIZE
RUN_FOLDS = 4
RUN_STEPS = 12
RUN_EVERY = 3
RUN_K = RUN_TRAINED_K
RUN_LEARNING_RATE = 1.0


def example_run(seed: int = SEED, n_prompts: int = N_PROMPTS, n: int = N_ANSWERS) -> dict:
    """The arrays of the example run, and the exact `k*` (float64)."""
    import sim
    import theory

    with jax.enable_x64(True):
        bandit, theta = sim.toy_bandit(jax.random.key(seed), n_prompts=n_prompts, dtype=jnp.float64)
        answers, rewards = sim.draw_answers(bandit, theta, n, key=jax.random.key(seed + 1))
        pi = bandit.policy(theta)
        onehot = jax.nn.one_hot(answers, bandit.n_actions, dtype=pi.dtype)
        scores = ((onehot - pi[:, None, :])[..., None] * bandit.features[:, None, None, :]).reshape(n_prompts, n, -1)
        k_star = theory.critical_k(bandit.success(theta), bandit.agreement_scores(theta), bandit.prompt_weights)
        return {
            "rewards": np.asarray(rewards, np.int8),
            "scores": np.asarray(scores, np.float64),
            "prompt_ids": np.array([f"toy-{i:03d}" for i in range(n_prompts)]),
            "k_star": k_star,
        }


def example_steps(*, key) -> list[dict]:
    """The logged steps of the example run: per step its number, `rewards` `(P, n)` (0/1) and
    `alignments` `(P, n, F)` (NaN at each prompt's own fold), and `folds` `(P,)` (`i mod F`).

    The toy bandit (`sim.toy_bandit`, `RUN_PROMPTS` prompts, its documented start) is trained by
    `sim.train` on the exact pass@k gradient at `k = RUN_K`; at every `RUN_EVERY`-th update,
    `RUN_ANSWERS` answers per prompt are drawn and logged as a probe would log them (SPEC section
    11): exact score vectors `s_ij`, the fold gradients `v_f = mean_{l in f} (1/n) sum_j r_lj s_lj`
    of the drawn answers, and `t_ijf = <s_ij, v_f>` for `f != f(i)`.
    """
    import sim

    bandit_key, answers_key = jax.random.split(key)
    with jax.enable_x64(True):
        bandit, theta0 = sim.toy_bandit(bandit_key, n_prompts=RUN_PROMPTS, dtype=jnp.float64)
        folds = np.arange(RUN_PROMPTS) % RUN_FOLDS
        own = jax.nn.one_hot(folds, RUN_FOLDS, dtype=jnp.float64)
        steps = []
        theta = theta0
        for index in range(RUN_STEPS):
            t = index * RUN_EVERY
            if index:  # SGD has no state: `RUN_EVERY` updates at a time make one run
                theta = sim.train(
                    bandit,
                    theta,
                    k=RUN_K,
                    steps=RUN_EVERY,
                    key=jax.random.key(0),  # unused by the exact estimator
                    learning_rate=RUN_LEARNING_RATE,
                )["theta"]
            answers, rewards = sim.draw_answers(bandit, theta, RUN_ANSWERS, key=jax.random.fold_in(answers_key, index))
            pi = bandit.policy(theta)
            onehot = jax.nn.one_hot(answers, bandit.n_actions, dtype=pi.dtype)
            scores = ((onehot - pi[:, None, :])[..., None] * bandit.features[:, None, None, :]).reshape(
                RUN_PROMPTS, RUN_ANSWERS, -1
            )
            g = jnp.einsum("pn,pnd->pd", rewards.astype(jnp.float64), scores) / RUN_ANSWERS
            v = (own.T @ g) / jnp.sum(own, axis=0)[:, None]  # (F, D)
            align = np.array(jnp.einsum("pnd,fd->pnf", scores, v))
            align[np.arange(RUN_PROMPTS), :, folds] = np.nan
            steps.append({"step": t + 1, "rewards": np.asarray(rewards, np.int64), "alignments": align, "folds": folds})
    return steps


def _fold_fields(step: dict, i: int, j: int) -> dict:
    fold = int(step["folds"][i])
    row = step["alignments"][i, j]
    # 6 significant digits, as a probe would log them (the files stay small)
    return {"fold": fold, "alignment": [None if f == fold else float(f"{row[f]:.6g}") for f in range(row.size)]}


def verl_text(step: dict) -> str:
    """One step as verl writes it: `RayPPOTrainer._dump_generations` in `verl/trainer/ppo/ray_trainer.py`
    (`{trainer.rollout_data_dir}/{global_steps}.jsonl`): `json.dumps` of `input`, `output`, `gts`,
    `score`, `step` and each reward extra of one entry per answer (here `acc`, and the probe's
    `fold` and `alignment`), `ensure_ascii=False`, lines joined by newlines. No `uid` (older
    trainers): groups are the answers that share `input`."""
    lines = []
    for i, row in enumerate(step["rewards"]):
        for j, r in enumerate(row):
            entry = {
                "input": f"toy prompt {i}",
                "output": f"answer {j}",
                "gts": "0",
                "score": float(r),
                "step": step["step"],
                "acc": bool(r),
                **_fold_fields(step, i, j),
            }
            lines.append(json.dumps(entry, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def nemo_text(step: dict) -> str:
    """One step as NeMo-RL writes it: `grpo_train` in `nemo_rl/algorithms/grpo.py` calls
    `logger.log_batched_dict_as_jsonl(log_data, f"train_data_step{step}.jsonl")`, one line per
    answer with `content`, `rewards`, `generation_logprobs`, `prev_logprobs`, `input_lengths`
    (each prompt's answers consecutive), here with the probe's `fold` and `alignment`."""
    lines = []
    for i, row in enumerate(step["rewards"]):
        for j, r in enumerate(row):
            entry = {
                "content": [f"toy prompt {i}", f"answer {j}"],
                "rewards": float(r),
                "generation_logprobs": [0.0],
                "prev_logprobs": [0.0],
                "input_lengths": 3,
                **_fold_fields(step, i, j),
            }
            lines.append(json.dumps(entry))
    return "".join(line + "\n" for line in lines)


def trl_table(step: dict) -> dict:
    """One step's columns as TRL's `GRPOTrainer.log` (`trl/trainer/grpo_trainer.py`,
    `log_completions=True`) puts them in `completions/completions_{step:05d}.parquet`: `step`,
    `prompt`, `completion`, one column per reward function (`accuracy_reward`), `advantage`
    (each prompt's `num_generations` answers consecutive), here with the probe's `fold` and
    `alignment`."""
    table = {name: [] for name in ("step", "prompt", "completion", "accuracy_reward", "advantage", "fold", "alignment")}
    for i, row in enumerate(step["rewards"]):
        mean = float(np.mean(row))
        for j, r in enumerate(row):
            fields = _fold_fields(step, i, j)
            table["step"].append(str(step["step"]))
            table["prompt"].append(f"toy prompt {i}")
            table["completion"].append(f"answer {j}")
            table["accuracy_reward"].append(float(r))
            table["advantage"].append(float(r) - mean)
            table["fold"].append(fields["fold"])
            table["alignment"].append(fields["alignment"])
    return table


def write_runs(out: Path, *, key) -> list:
    """Write `runs/verl`, `runs/nemo-rl` and, with pyarrow, `runs/trl` under `out`; return the paths."""
    from sim.files import atomic_write, atomic_write_text

    steps = example_steps(key=key)
    written = []
    for step in steps:
        written.append(out / "runs" / "verl" / f"{step['step']}.jsonl")
        atomic_write_text(written[-1], verl_text(step))
        written.append(out / "runs" / "nemo-rl" / f"train_data_step{step['step']}.jsonl")
        atomic_write_text(written[-1], nemo_text(step))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    for step in steps:
        path = out / "runs" / "trl" / f"completions_{step['step']:05d}.parquet"
        table = pa.table(trl_table(step))
        atomic_write(path, lambda f, table=table: pq.write_table(table, f, compression="zstd"))
        written.append(path)
    return written


def jsonl_text(rewards, prompt_ids, scores=None) -> str:
    """One answer per line, prompts in order, answers `j = 0 .. n-1` within each."""
    out = io.StringIO()
    for i, pid in enumerate(prompt_ids):
        for j in range(rewards.shape[1]):
            row = {"prompt_id": str(pid), "reward": int(rewards[i, j])}
            if scores is not None:
                row["score"] = [float(x) for x in scores[i, j]]
            out.write(json.dumps(row) + "\n")
    return out.getvalue()


def counts_csv_text(rewards, prompt_ids) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prompt_id", "n", "c"])
    for pid, row in zip(prompt_ids, rewards):
        writer.writerow([str(pid), row.size, int(row.sum())])
    return out.getvalue()


def write_example(out: Path) -> dict:
    from sim.files import atomic_write, atomic_write_text

    run = example_run()
    out = Path(out)
    arrays = {name: run[name] for name in ("rewards", "scores", "prompt_ids")}
    atomic_write(out / "toy.npz", lambda f: np.savez_compressed(f, **arrays))
    atomic_write_text(out / "toy.jsonl", jsonl_text(run["rewards"], run["prompt_ids"], run["scores"]))
    atomic_write_text(out / "toy_counts.csv", counts_csv_text(run["rewards"], run["prompt_ids"]))
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    run = write_example(args.out)
    print(f"wrote {args.out}/toy.npz, toy.jsonl, toy_counts.csv; exact k* = {run['k_star']}")
    runs = write_runs(args.out, key=jax.random.key(RUN_SEED))
    formats = sorted({p.parent.name for p in runs})
    print(f"wrote {len(runs)} step files under {args.out}/runs ({', '.join(formats)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
