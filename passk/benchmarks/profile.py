"""Where a compiled call spends its time: XLA's kernels, timed by the JAX profiler, each traced back
to the line of this project that emitted it.

:func:`kernel_profile` runs a call once under `jax.profiler.trace`, sums each kernel's time over the
trace (a kernel inside a `lax.scan` runs once per step), and names, for each kernel, the innermost
frame under `sim/` or `theory/` of the operation it computes, read from the optimised HLO text that
XLA dumps (`--xla_dump_to`; the flag must be set before JAX starts, so :func:`bandit_sweep_profile`
runs the sweep in a child process, as `passk/benchmarks/multi_device.py` does).

On a CPU with several cores XLA runs independent kernels side by side, so the summed kernel time
can exceed the wall time; shares are of the summed time.

    python -m passk.benchmarks.profile [--quick] [--record-every N]
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["kernel_profile", "kernel_sources", "bandit_sweep_profile"]

_PROJECT_DIRS = ("sim/", "theory/")
# Runtime bookkeeping in the trace, not kernels.
_NOT_KERNELS = re.compile(r"^(\$|end: |ThunkExecutor|SlinkyThreadPool|PjitFunction|CommonPjRt|while)")


def _tables(text: str) -> dict[str, dict[int, str]]:
    """The `FileNames`, `FunctionNames`, `FileLocations` and `StackFrames` tables of an HLO dump."""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
            continue
        if current is None:
            continue
        match = re.match(r"^(\d+) (.*)$", line)
        if match is None:
            current = None
            continue
        current[int(match.group(1))] = match.group(2)
    return tables


def kernel_sources(text: str) -> dict[str, str]:
    """`{kernel name: "file:function:line"}` for every instruction of an optimised HLO dump whose
    stack frames reach this project (the innermost such frame)."""
    tables = _tables(text)
    files, functions = tables.get("FileNames", {}), tables.get("FunctionNames", {})
    locations, frames = tables.get("FileLocations", {}), tables.get("StackFrames", {})

    def field(entry: str, name: str) -> int:
        return int(re.search(rf"{name}=(\d+)", entry).group(1))

    def source(frame_id: int) -> str | None:
        seen = set()
        while frame_id in frames and frame_id not in seen:
            seen.add(frame_id)
            loc = locations[field(frames[frame_id], "file_location_id")]
            path = files[field(loc, "file_name_id")].strip('"')
            for root in _PROJECT_DIRS:
                at = path.rfind("/" + root)
                if at >= 0 and ".venv" not in path:
                    function = functions[field(loc, "function_name_id")].strip('"')
                    return f"{path[at + 1 :]}:{function}:{field(loc, 'line')}"
            frame_id = field(frames[frame_id], "parent_frame_id")
        return None

    out = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?stack_frame_id=(\d+)", text, re.M):
        where = source(int(match.group(2)))
        if where is not None:
            out.setdefault(match.group(1), where)
    return out


def _trace_kernels(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """Summed microseconds and counts per kernel name in the newest trace under `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not _NOT_KERNELS.match(event["name"]):
            total[event["name"]] += event.get("dur", 0.0)
            count[event["name"]] += 1
    return total, count


def kernel_profile(call: Callable[[], object], *, dump_dir: str | None = None, per: int = 1, top: int = 12) -> dict:
    """Profile one call of `call` (already compiled) and group its kernels by source line.

    Args:
      call: runs the computation; its results are waited for.
      dump_dir: the `--xla_dump_to` folder of this process (None: kernels are not traced to source).
      per: divide times by this (steps per call: milliseconds per step).
      top: how many kernels and source lines to list.

    Returns:
      `{"kernels": [{name, ms, calls, share, source}], "sources": [{source, ms, share}], "total_ms"}`,
      times summed over the trace and divided by `per`, largest first.
    """
    import jax

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        try:
            jax.block_until_ready(call())
        finally:
            jax.profiler.stop_trace()
        total, count = _trace_kernels(trace_dir)
    sources: dict[str, str] = {}
    if dump_dir is not None:
        for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt")):
            sources.update(kernel_sources(Path(path).read_text()))
    summed = sum(total.values()) or 1.0
    by_source = collections.Counter()
    for name, us in total.items():
        by_source[sources.get(name, "(not traced to a line)")] += us
    return {
        "kernels": [
            {
                "name": name,
                "ms": us / 1e3 / per,
                "calls": count[name],
                "share": us / summed,
                "source": sources.get(name),
            }
            for name, us in total.most_common(top)
        ],
        "sources": [{"source": s, "ms": us / 1e3 / per, "share": us / summed} for s, us in by_source.most_common(top)],
        "total_ms": summed / 1e3 / per,
    }


def _child(quick: bool, record_every: int, dump_dir: str) -> dict:
    """Runs in the child process started with the dump flags: the bandit sweep, profiled."""
    import jax

    from passk.benchmarks.bandit_sweep import FULL, QUICK, make_bandits, run_sweep

    cfg = QUICK if quick else FULL
    bandits, theta0s = make_bandits(
        jax.random.key(0),
        n_regimes=cfg["n_regimes"],
        n_prompts=cfg["n_prompts"],
        n_actions=cfg["n_actions"],
        dim=cfg["dim"],
    )
    call = lambda: run_sweep(
        bandits,
        theta0s,
        ks=cfg["ks"],
        steps=cfg["steps"],
        k_max=cfg["k_max"],  # noqa: E731
        learning_rate=cfg["learning_rate"],
        record_every=record_every,
    )
    jax.block_until_ready(call())  # compile (and dump)
    out = kernel_profile(call, dump_dir=dump_dir, per=cfg["steps"])
    out["record_every"] = record_every
    return out


def bandit_sweep_profile(*, quick: bool, record_every: int) -> dict:
    """:func:`kernel_profile` of the `bandit-sweep` call (milliseconds per step), in a child process."""
    with tempfile.TemporaryDirectory() as dump_dir:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
            " --xla_dump_hlo_pass_re=NONE --xla_dump_hlo_module_re=entry"
        ).strip()
        args = [
            sys.executable,
            "-m",
            "passk.benchmarks.profile",
            "--child",
            dump_dir,
            "--record-every",
            str(record_every),
        ]
        proc = subprocess.run(
            args + (["--quick"] if quick else []),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        )
    if proc.returncode != 0:
        raise RuntimeError(f"profile child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_profile(profile: dict) -> str:
    """The source lines of a profile as text, largest first."""
    lines = [f"record_every={profile.get('record_every')}: {profile['total_ms']:.2f} ms of kernels per step"]
    lines += [f"  {row['ms']:7.3f} ms  {row['share']:5.1%}  {row['source']}" for row in profile["sources"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Profile the bandit-sweep benchmark by source line.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--record-every", type=int, default=1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.quick, args.record_every, args.child)))
        return
    print(format_profile(bandit_sweep_profile(quick=args.quick, record_every=args.record_every)))


if __name__ == "__main__":
    main()
