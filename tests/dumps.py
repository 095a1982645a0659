"""Step dumps in the RL frameworks' schemas, written as each framework's source writes them.

- verl: `RayPPOTrainer._dump_generations` in `verl/trainer/ppo/ray_trainer.py`: `{dir}/{global_steps}.jsonl`,
  one answer a line, `json.dumps({"input", "output", "gts", "score", "step", **reward_extra_infos})`
  (keys of the reward extras whose length matches, e.g. `acc`; `uid` in newer trainers).
- TRL: `GRPOTrainer.log` in `trl/trainer/grpo_trainer.py` with `log_completions=True`:
  `completions/completions_{global_step:05d}.parquet` from a DataFrame with columns `step`,
  `prompt`, `completion`, one column per reward function, `advantage`; each prompt's
  `num_generations` answers are consecutive rows.
- NeMo-RL: `grpo_train` in `nemo_rl/algorithms/grpo.py`: `logger.log_batched_dict_as_jsonl(log_data,
  f"train_data_step{step}.jsonl")` with `content`, `rewards`, `generation_logprobs`, `prev_logprobs`,
  `input_lengths`, one line per answer, each prompt's answers consecutive (`repeated_batch`).

Every writer takes a :class:`Step`: per prompt its answers' rewards and, optionally, the
answers' alignments `t_ijf` (own fold `None`) and fold ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Step:
    step: int
    rewards: list  # per prompt, a list of rewards
    folds: list | None = None  # per prompt
    alignments: list | None = None  # per prompt, per answer, a list of F (own fold None)


def bandit_step(
    step: int,
    *,
    key_seed: int,
    n_prompts: int = 12,
    n: int = 8,
    n_folds: int = 3,
    n_actions: int = 4,
    dim: int = 3,
    theta=None,
):
    """A step of a linear softmax bandit with exact alignments `t_ijf = <s_ij, v_f>` (SPEC section 11).

    Returns `(Step, arrays)` with `arrays = (rewards (P, n), alignments (P, n, F), folds (P,))`.
    """
    rng = np.random.default_rng(key_seed)
    x = rng.normal(size=(n_prompts, dim))
    theta = rng.normal(size=(n_actions, dim)) if theta is None else theta
    logits = x @ theta.T
    pi = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    answers = np.array([rng.choice(n_actions, size=n, p=p) for p in pi])
    rewards = (answers == 0).astype(np.int64)  # action 0 is correct
    onehot = np.eye(n_actions)[answers]  # (P, n, A)
    scores = ((onehot - pi[:, None, :])[..., None] * x[:, None, None, :]).reshape(n_prompts, n, -1)
    folds = np.arange(n_prompts) % n_folds
    g = (rewards[..., None] * scores).sum(axis=1) / n  # (P, D)
    v = np.stack([g[folds == f].mean(axis=0) for f in range(n_folds)])  # (F, D)
    t = scores @ v.T  # (P, n, F)
    t_logged = t.copy()
    t_logged[np.arange(n_prompts), :, folds] = np.nan
    align = [
        [[None if f == folds[i] else float(t[i, j, f]) for f in range(n_folds)] for j in range(n)]
        for i in range(n_prompts)
    ]
    return Step(step, rewards.tolist(), folds.tolist(), align), (rewards, t_logged, folds)


def _extras(step: Step, i: int, j: int) -> dict:
    out = {}
    if step.folds is not None:
        out["fold"] = int(step.folds[i])
        out["alignment"] = step.alignments[i][j]
    return out


def write_verl(directory, step: Step, *, uid: bool = True, shuffle_seed: int | None = 0, reward_key: str = "score"):
    """`{directory}/{step}.jsonl` as verl's `_dump_generations` writes it (rows shuffled, as older trainers reorder)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, group in enumerate(step.rewards):
        for j, r in enumerate(group):
            entry = {
                "input": f"prompt {i}: what is {i} + {i}?",
                "output": f"answer {j}",
                "gts": str(2 * i),
                "score": float(r),
                "step": step.step,
                "acc": bool(r == 1) if reward_key == "score" else r,
            }
            if reward_key != "score":
                entry[reward_key] = r
            if uid:
                entry["uid"] = f"uid-{step.step}-{i}"
            entry.update(_extras(step, i, j))
            lines.append(json.dumps(entry, ensure_ascii=False))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(lines))
        lines = [lines[k] for k in order]
    path = directory / f"{step.step}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_nemo(directory, step: Step):
    """`{directory}/train_data_step{step}.jsonl` as NeMo-RL's `log_batched_dict_as_jsonl` writes it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, group in enumerate(step.rewards):
        for j, r in enumerate(group):
            entry = {
                "content": [f"prompt {i}", f"answer {j}"],
                "rewards": float(r),
                "generation_logprobs": [0.0, -0.5],
                "prev_logprobs": [0.0, -0.5],
                "input_lengths": 12,
            }
            entry.update(_extras(step, i, j))
            lines.append(json.dumps(entry))
    path = directory / f"train_data_step{step.step}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def trl_table(step: Step, *, reward_columns=("accuracy_reward",)) -> dict:
    """The columns TRL's `GRPOTrainer.log` puts in its completions DataFrame."""
    table = {"step": [], "prompt": [], "completion": [], "advantage": []}
    for name in reward_columns:
        table[name] = []
    if step.folds is not None:
        table["fold"], table["alignment"] = [], []
    for i, group in enumerate(step.rewards):
        mean = float(np.mean(group))
        for j, r in enumerate(group):
            table["step"].append(step.step)
            table["prompt"].append(f"prompt {i}")
            table["completion"].append(f"answer {j}")
            table["advantage"].append(float(r) - mean)
            for name in reward_columns:
                table[name].append(float(r))
            if step.folds is not None:
                table["fold"].append(int(step.folds[i]))
                table["alignment"].append(step.alignments[i][j])
    return table


def write_trl(directory, step: Step, **kwargs):
    """`{directory}/completions_{step:05d}.parquet` (needs pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"completions_{step.step:05d}.parquet"
    pq.write_table(pa.table(trl_table(step, **kwargs)), path)
    return path
