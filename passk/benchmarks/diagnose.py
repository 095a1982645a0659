"""`diagnose[jsonl, 10^6 lines]`: `passk diagnose` end to end on a run of a million answers.

The file: `P = 15625` prompts x `n = 64` answers (`10^6` lines; `10^5` with `--quick`), binary
rewards and `D = 16` score coordinates per line (about 210 MB). Each measurement runs the command
in a fresh process (`python -m passk.cli diagnose FILE --json OUT`), as a user would.

- ours: the command as shipped (blocks of lines parsed as one JSON array, checked with numpy);
- baseline: the same command reading line by line (the reader's fallback path, which it takes on
  a block it cannot vouch for), so the ratio is what the block reader buys;
- floor: `json.loads` of every line and nothing else (stdlib JSON decoding, in this process), the
  least any reader of this format built on the standard library can take.

Memory: the command's peak resident set minus that of the same command on a 64-line file of the
same shape (128 lines: interpreter, JAX and the compiled estimators), against the bytes of the per-prompt
arrays the reader builds (`P x D` score sums and three `P` vectors). Target: under 30 s, and the
growth below 4 times those arrays plus one block of parsed lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.files import atomic_write

__all__ = ["bench", "write_run"]

DIM = 16
ANSWERS = 64


def write_run(path: Path, n_prompts: int, *, n_answers: int = ANSWERS, dim: int = DIM, seed: int = 0) -> None:
    """A `.jsonl` run of `n_prompts * n_answers` lines (binary rewards, `dim` score coordinates)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 2.0, size=n_prompts)
    fmt = '{"prompt_id": "q%06d", "reward": %d, "score": [' + ", ".join(["%.6f"] * dim) + "]}\n"

    def write(f):
        for start in range(0, n_prompts, 512):
            stop = min(n_prompts, start + 512)
            rewards = (rng.uniform(size=(stop - start, n_answers)) < p[start:stop, None]).astype(int)
            scores = rng.normal(size=(stop - start, n_answers, dim))
            f.write(
                "".join(
                    fmt % ((start + i, rewards[i, j]) + tuple(scores[i, j]))
                    for i in range(stop - start)
                    for j in range(n_answers)
                )
            )

    atomic_write(path, write, mode="w")


_SCRIPT = """
import resource, sys, time
start = time.perf_counter()
from passk import diagnose as dg
if sys.argv[3] == "lines":
    dg._JsonlReader._fast = lambda self, lines, first: False
from passk.cli import main
code = main(["diagnose", sys.argv[1], "--json", sys.argv[2]])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, dg._JSONL_BLOCK)
sys.exit(code)
"""


def _command(path: Path, out: Path, mode: str) -> tuple[float, int, int]:
    """Wall seconds (including start-up), peak resident bytes and the reader's block length of one
    `passk diagnose` (run as a script: `benchmarks` imports nothing of `passk`)."""
    env = dict(os.environ, PASSK_NO_COMPILE_CACHE="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), str(out), mode], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"passk diagnose failed on {path}:\n{proc.stderr[-2000:]}")
    _, peak, block = proc.stdout.split()[-3:]
    return wall, int(peak), int(block)


def _decode_floor(path: Path) -> float:
    start = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - start


def bench(*, quick: bool, key=None, repeats: int | None = None) -> list[dict]:
    from passk.benchmarks._timing import row

    n_prompts = 1563 if quick else 15625
    repeats = repeats or (1 if quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big, small = tmp / "run.jsonl", tmp / "small.jsonl"
        write_run(big, n_prompts)
        write_run(small, 2)
        _, peak_small, block_lines = _command(small, tmp / "small.json", "blocks")
        ours, base, peaks = [], [], []
        for _ in range(repeats):  # interleaved
            wall, peak, _ = _command(big, tmp / "ours.json", "blocks")
            ours.append(wall)
            peaks.append(peak)
            base.append(_command(big, tmp / "lines.json", "lines")[0])
        same = json.loads((tmp / "ours.json").read_text()) == json.loads((tmp / "lines.json").read_text())
        floor = _decode_floor(big)
        size = big.stat().st_size
    ours_s, base_s = float(np.median(ours)), float(np.median(base))
    arrays = n_prompts * (DIM + 3) * 8
    block = block_lines * size / (n_prompts * ANSWERS)  # text of one block
    grown = max(peaks) - peak_small
    met = bool(ours_s < 30.0 and grown < 4 * (arrays + block)) if not quick else None
    return [
        row(
            "diagnose[jsonl, 10^6 lines]" if not quick else "diagnose[jsonl, 10^5 lines]",
            ours_s,
            base_s,
            "under 30 s end to end; memory growth < 4x (arrays + one block)",
            met=met,
            lines=n_prompts * ANSWERS,
            file_bytes=size,
            decode_floor_s=floor,
            ratio_to_floor=ours_s / floor,
            peak_growth_bytes=grown,
            array_bytes=arrays,
            block_text_bytes=int(block),
            same_report=same,
            repeats=repeats,
            cpu_count=os.cpu_count(),
            device="cpu",
        )
    ]


if __name__ == "__main__":  # pragma: no cover - manual runs
    print(json.dumps(bench(quick="--quick" in sys.argv), indent=1))
