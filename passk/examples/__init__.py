"""Example run shipped with the package, for `passk diagnose --example`.

`toy.npz`, `toy.jsonl` (the same answers, one per line) and `toy_counts.csv` (the counts alone):
the easy/hard toy bandit (`sim.toy_bandit`, 64 prompts, its documented start) with 16 sampled
answers per prompt and their exact score vectors `grad log pi(y|x) = (e_y - pi(x)) psi(x)^T`
(`D = A d = 16`).

`runs/verl`, `runs/trl`, `runs/nemo-rl`: one run in each framework's schema, 12 steps of the toy
bandit (64 prompts) trained on the exact pass@k gradient at `k = 8`, 16 answers per prompt and
step with the probe's `fold` and `alignment` at `F = 4` (SPEC section 11); pass@1 falls while
pass@8 rises. `passk diagnose --example verl|trl|nemo-rl` (`trl` needs the extra `runs`).

Made by `python -m passk.examples.make` (deterministic: explicit keys).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
NPZ = HERE / "toy.npz"
JSONL = HERE / "toy.jsonl"
CSV = HERE / "toy_counts.csv"
#: The example run directories by format.
RUNS = {fmt: HERE / "runs" / fmt for fmt in ("verl", "trl", "nemo-rl")}
#: Their answers per prompt (`--group-size` of TRL and NeMo-RL) and the `k` they train at.
RUN_GROUP_SIZE = 16
RUN_TRAINED_K = 8
