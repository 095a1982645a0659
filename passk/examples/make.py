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

SEED = 7
N_PROMPTS = 64
N_ANSWERS = 16


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
