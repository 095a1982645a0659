"""`diagnose[verl run, S steps]`: `passk diagnose DIR` on a run directory of verl step dumps.

The run: `S` steps (`{step}.jsonl`, as verl's `RayPPOTrainer._dump_generations` in
`verl/trainer/ppo/ray_trainer.py` writes them) x `P = 256` prompts x `n = 16` answers, one answer a
line with verl's keys (`input`, `output`, `gts`, `score`, `step`, the reward extra `acc`, `uid`)
and the section 11 fields `fold` and `alignment` at `F = 4` folds. Full size `S = 500`
(2,048,000 lines, about 340 MB); `--quick` `S = 20`. Written once to a temporary directory and
deleted after.

- ours: :func:`passk.runs.diagnose_run` on the directory (every step's row: pass@k, trainers,
  the population `I_k` and its `k*` band), timed in a fresh process after its imports;
- baseline: the floor, reading every file once: its bytes decoded as UTF-8 and `json.loads` of
  each line, nothing kept (the least any reader of this format built on the standard library
  can take). The target is on `ours_s` (under 60 s at full size on 2 cores); `ours_over_floor`
  is the ratio of the two.

Memory: the peak resident set of the process that diagnoses (`ru_maxrss`) at `S` and at `S / 10`
steps: the reader holds one step's text, its parsed block and arrays at a time, so the peak must
not grow with `S` beyond the per-step table (`report_bytes`, the JSON report's size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["bench", "write_run_dir", "PROMPTS", "ANSWERS", "FOLDS"]

PROMPTS = 256
ANSWERS = 16
FOLDS = 4

_LINE = (
    '{"input": "Question %d of step %d: what is %d + %d?", "output": "The answer is %d.", "gts": "%d", '
    '"score": %.1f, "step": %d, "acc": %s, "uid": "%d-%d", "fold": %d, "alignment": [%s]}\n'
)


def write_run_dir(directory, steps: int, *, n_prompts: int = PROMPTS, n_answers: int = ANSWERS, seed: int = 0) -> int:
    """Write `steps` verl step files with alignments at `F = 4` into `directory`; returns the bytes written.

    Each prompt's success rate is drawn from Beta(1, 2) and its answers' alignments are
    standard normals (null at the prompt's own fold, `i mod F`).
    """
    from sim.files import atomic_write_text

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    folds = np.arange(n_prompts) % FOLDS
    total = 0
    for step in range(1, steps + 1):
        p = rng.beta(1.0, 2.0, size=n_prompts)
        rewards = rng.uniform(size=(n_prompts, n_answers)) < p[:, None]
        t = rng.normal(size=(n_prompts, n_answers, FOLDS))
        lines = []
        for i in range(n_prompts):
            own = folds[i]
            for j in range(n_answers):
                align = ", ".join("null" if f == own else f"{t[i, j, f]:.6g}" for f in range(FOLDS))
                r = bool(rewards[i, j])
                lines.append(
                    _LINE
                    % (i, step, i, i, 2 * i if r else j, 2 * i, r, step, "true" if r else "false", step, i, own, align)
                )
        text = "".join(lines)
        atomic_write_text(directory / f"{step}.jsonl", text)
        total += len(text.encode())
    return total


_SCRIPT = """
import json, resource, sys, time
from passk.frameworks import Options
from passk.runs import diagnose_run
start = time.perf_counter()
report = diagnose_run(sys.argv[1], options=Options(), trained_k=8)
seconds = time.perf_counter() - start
text = json.dumps(report)
print(json.dumps({"seconds": seconds, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "report_bytes": len(text), "steps": len(report["steps"]), "k_star_steps":
                  sum(r["k_star"] is not None and r["k_star"]["kind"] == "population" for r in report["steps"])}))
"""


def _diagnose(directory: Path) -> dict:
    """Seconds of :func:`passk.runs.diagnose_run` and the peak resident bytes, in a fresh process."""
    env = dict(os.environ, PASSK_NO_COMPILE_CACHE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(directory)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"diagnose_run failed on {directory}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_floor(directory) -> float:
    """Seconds to read every step file once: decode its text and `json.loads` each line."""
    start = time.perf_counter()
    for path in sorted(Path(directory).glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                json.loads(line)
    return time.perf_counter() - start


def bench(*, quick: bool, key=None, steps: int | None = None) -> list[dict]:
    from passk.benchmarks._timing import row

    steps = steps or (20 if quick else 500)
    small_steps = max(2, steps // 10)
    tmp = Path(tempfile.mkdtemp(prefix="passk-scale-"))
    try:
        big, small = tmp / "run", tmp / "small"
        size = write_run_dir(big, steps)
        write_run_dir(small, small_steps)
        at_small = _diagnose(small)
        floor = read_floor(big)
        ours = _diagnose(big)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = steps * PROMPTS * ANSWERS
    growth = ours["peak"] - at_small["peak"]
    met = None if quick else bool(ours["seconds"] < 60.0 and growth < 2 * ours["report_bytes"] + (16 << 20))
    return [
        row(
            f"diagnose[verl run, {steps} steps]",
            ours["seconds"],
            floor,
            "under 60 s at 500 steps (2,048,000 lines); peak memory not growing with steps beyond the table",
            met=met,
            steps=steps,
            lines=lines,
            file_bytes=size,
            floor_s=floor,
            ours_over_floor=ours["seconds"] / floor,
            lines_per_s=lines / ours["seconds"],
            floor_lines_per_s=lines / floor,
            steps_with_k_star=ours["k_star_steps"],
            peak_bytes=ours["peak"],
            small_steps=small_steps,
            small_peak_bytes=at_small["peak"],
            small_seconds=at_small["seconds"],
            peak_growth_bytes=growth,
            report_bytes=ours["report_bytes"],
            step_array_bytes=PROMPTS * ANSWERS * (FOLDS + 2) * 8,
            step_text_bytes=size // steps,
            cpu_count=os.cpu_count(),
            load_average=os.getloadavg()[0],  # other processes on the cores inflate both times
            device="cpu",
        )
    ]


if __name__ == "__main__":  # pragma: no cover - manual runs
    print(json.dumps(bench(quick="--quick" in sys.argv), indent=1))
