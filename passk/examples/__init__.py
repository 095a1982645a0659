"""Example run shipped with the package, for `passk diagnose --example`.

`toy.npz`, `toy.jsonl` (the same answers, one per line) and `toy_counts.csv` (the counts alone):
the easy/hard toy bandit (`sim.toy_bandit`, 64 prompts, its documented start) with 16 sampled
answers per prompt and their exact score vectors `grad log pi(y|x) = (e_y - pi(x)) psi(x)^T`
(`D = A d = 16`). Made by `python -m passk.examples.make` (deterministic).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
NPZ = HERE / "toy.npz"
JSONL = HERE / "toy.jsonl"
CSV = HERE / "toy_counts.csv"
