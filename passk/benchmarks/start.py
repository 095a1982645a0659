"""`start`: how long `passk toy` and `passk diagnose --example` take to start, with and without
the persistent compilation cache, and how fast the toy notebook's sliders redraw.

Each command runs in a fresh Python process (`python -m passk.cli ...`), timed wall-clock from
the parent: *cold* with `PASSK_CACHE_DIR` an empty temporary folder (every program traced,
lowered and compiled; the compiled programs written to the folder), then *warm*, the same command
again with the same folder (programs traced and lowered again, XLA's compiled code read back).
Row: `ours_s` = warm, `baseline_s` = cold, `ratio` = cold / warm; target: warm under 2 s.
Beside them: `import_s`, a fresh process that only imports `jax`, `sim` and `passk.cli` (the
floor no cache can cut), the child processes' CPU seconds, and whether warm printed exactly what
cold printed.

`start[toy sliders]`: the notebook's `update(p_hard, separation, n_actions, k)` (read from the
cell tagged `sliders` of `notebooks/toy_regimes.ipynb`, run in a child process): `baseline_s` is the
first call (the compile), `ours_s` the median over several other settings; target: under 0.5 s,
with no compilation after the first call. Skipped where the notebook is not beside the package.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from passk.benchmarks._timing import CompileCounter, row

__all__ = ["COMMANDS", "run_command", "bench", "slider_namespace", "slider_child"]

#: The measured commands (arguments of `passk`).
COMMANDS = {
    "toy": ["toy", "--p-hard", "0.3", "--separation", "1.0", "--k", "1", "2", "4", "8"],
    "diagnose": ["diagnose", "--example"],
}
TARGET_S = 2.0
SLIDER_TARGET_S = 0.5
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "toy_regimes.ipynb"


def _child_env(cache_dir: str | None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PASSK_NO_COMPILE_CACHE", "PASSK_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")
    }
    if cache_dir is None:
        env["PASSK_NO_COMPILE_CACHE"] = "1"
    else:
        env["PASSK_CACHE_DIR"] = cache_dir
    return env


def run_command(args: list[str], cache_dir: str | None) -> tuple[float, float, str]:
    """`(wall_s, cpu_s, stdout)` of `python -m passk.cli ARGS` in a fresh process (no cache when
    `cache_dir` is None)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "passk.cli", *args],
        env=_child_env(cache_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"passk {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _import_floor() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jax, sim, passk.cli"], env=_child_env(None), check=True)
    return time.perf_counter() - start


def _entries(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _start_rows(repeats: int) -> list[dict]:
    times = {name: {"cold": [], "warm": [], "cold_cpu": [], "warm_cpu": []} for name in COMMANDS}
    same, entries = {name: True for name in COMMANDS}, {}
    floors = []
    for _ in range(repeats):  # interleaved: each repeat runs every command cold then warm
        floors.append(_import_floor())
        for name, args in COMMANDS.items():
            with tempfile.TemporaryDirectory(prefix="passk-start-") as folder:
                cold, cold_cpu, out_cold = run_command(args, folder)
                entries[name] = _entries(folder)
                warm, warm_cpu, out_warm = run_command(args, folder)
            same[name] &= out_cold == out_warm
            for key, value in (("cold", cold), ("warm", warm), ("cold_cpu", cold_cpu), ("warm_cpu", warm_cpu)):
                times[name][key].append(value)
    import_s = statistics.median(floors)
    rows = []
    for name, t in times.items():
        warm, cold = statistics.median(t["warm"]), statistics.median(t["cold"])
        rows.append(
            row(
                f"start[{name}]",
                warm,
                cold,
                f"warm < {TARGET_S:g} s",
                command="passk " + " ".join(COMMANDS[name]),
                cold_s=cold,
                warm_s=warm,
                warm_over_cold=warm / cold,
                cold_runs_s=t["cold"],
                warm_runs_s=t["warm"],
                cold_cpu_s=statistics.median(t["cold_cpu"]),
                warm_cpu_s=statistics.median(t["warm_cpu"]),
                import_s=import_s,
                warm_minus_import_s=warm - import_s,
                cache_entries=entries[name],
                same_output=same[name],
                repeats=repeats,
                met=bool(warm < TARGET_S),
            )
        )
    return rows


def slider_namespace(notebook: Path = NOTEBOOK) -> dict:
    """Run the toy notebook's parameter cell and its `sliders` cell here; return their names
    (`update`, `slider_diagnostics`, ...). The first `update` (the compile) runs in the cell."""
    import json

    cells = json.loads(notebook.read_text())["cells"]
    ns: dict = {}
    for tag in ("parameters", "sliders"):
        cell = next(c for c in cells if tag in c.get("metadata", {}).get("tags", []))
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        exec(compile(source, f"{notebook.name}[{tag}]", "exec"), ns)  # noqa: S102 (our own notebook)
    return ns


#: Slider settings visited after the first draw: every slider moves, and `n_actions` spans 2..16.
SLIDER_SETTINGS = [
    (0.3, 1.0, 8, 8),
    (0.2, 1.5, 4, 3),
    (0.5, 2.0, 16, 64),
    (0.1, 0.5, 2, 1),
    (0.4, 0.0, 12, 20),
    (0.26, 3.0, 6, 5),
    (0.6, 1.2, 9, 32),
]


def slider_child() -> None:
    """In a fresh process: run the slider cells, time `update`, print the timings as JSON."""
    import contextlib
    import io
    import json

    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        ns = slider_namespace()
        first = time.perf_counter() - start
    redraws = []
    with CompileCounter() as counter:
        for setting in SLIDER_SETTINGS:
            t0 = time.perf_counter()
            ns["update"](*setting)
            redraws.append(time.perf_counter() - t0)
    print(json.dumps({"first_s": first, "redraw_s": redraws, "compiles": counter.count}))


def _slider_row() -> list[dict]:
    if not NOTEBOOK.exists():
        return []
    import json

    # A child process: the notebook's drawing code (matplotlib) stays out of the benchmarks.
    proc = subprocess.run(
        [sys.executable, "-c", "from passk.benchmarks.start import slider_child; slider_child()"],
        env=_child_env(None),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"slider child failed: {proc.stderr[-2000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    med = statistics.median(got["redraw_s"])
    return [
        row(
            "start[toy sliders]",
            med,
            got["first_s"],
            f"redraw < {SLIDER_TARGET_S:g} s, no recompile",
            first_s=got["first_s"],
            redraw_s=got["redraw_s"],
            compiles_later_calls=got["compiles"],
            met=bool(med < SLIDER_TARGET_S and got["compiles"] == 0),
        )
    ]


def bench(*, quick: bool, key=None, repeats: int | None = None) -> list[dict]:
    """The `start[...]` rows: each command cold and warm (`repeats`: 1 quick, else 3; medians)."""
    del key  # nothing random here
    return _start_rows(repeats or (1 if quick else 3)) + _slider_row()
