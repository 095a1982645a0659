"""`multi-device`: the bandit sweep sharded over 4 host devices against 1 device.

Run in a child process with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (the flag must be
set before JAX starts). In the child, the same `sim.train_sweep` call runs with
`devices=jax.devices()[:1]` (baseline) and with all 4 devices (ours: the configuration axis is
sharded by :mod:`sim.sweep`), interleaved, and the two results are compared (they must agree to
float rounding). Host "devices" share the machine's cores, so the speedup is bounded by the cores
XLA's single-device code does not already use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

__all__ = ["bench", "child"]

N_DEVICES = 4


def child(quick: bool) -> dict:
    """Runs inside the 4-device process; returns the row fields."""
    import jax
    import numpy as np

    from passk.benchmarks._timing import interleaved
    from passk.benchmarks.bandit_sweep import make_bandits, run_sweep

    devices = jax.devices()
    n_prompts, n_regimes, ks, steps = (
        (1024, 2, (1, 2, 4, 8), 20) if quick else (4096, 8, (1, 2, 3, 4, 6, 8, 12, 16), 50)
    )
    bandits, theta0s = make_bandits(jax.random.key(0), n_regimes=n_regimes, n_prompts=n_prompts, n_actions=4, dim=8)
    kw = dict(ks=ks, steps=steps, k_max=max(ks), learning_rate=1.0)
    one = lambda: run_sweep(bandits, theta0s, devices=devices[:1], **kw)  # noqa: E731
    many = lambda: run_sweep(bandits, theta0s, devices=devices, **kw)  # noqa: E731
    out_one, out_many = one(), many()  # compile both
    diff = max(
        float(np.max(np.abs(np.asarray(out_one[n]) - np.asarray(out_many[n]))))
        for n in ("j1", "jk", "mean_agreement", "theta")
    )
    med = interleaved({"one": one, "many": many}, 3)
    return {
        "ours_s": med["many"],
        "baseline_s": med["one"],
        "n_devices": len(devices),
        "max_abs_diff_1_vs_n": diff,
        "size": f"P={n_prompts}, {n_regimes * len(ks)} configs, {steps} steps",
        "cpu_count": os.cpu_count(),
    }


def bench(*, quick: bool, key=None, repeats: int | None = None) -> list[dict]:
    """Start the 4-device child, read its JSON line, return one row (ratio = 1-device / 4-device)."""
    from passk.benchmarks._timing import row

    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "passk.benchmarks.multi_device", "--quick" if quick else "--full"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {N_DEVICES}-device child failed:\n{proc.stderr[-2000:]}")
    fields = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, base = fields.pop("ours_s"), fields.pop("baseline_s")
    return [
        row(
            "multi-device",
            ours,
            base,
            f"report the {N_DEVICES}-host-device speedup",
            met=None,
            device=f"cpu x{fields['n_devices']} (host devices)",
            **fields,
        )
    ]


def multihost(*, coordinator: str, num_processes: int, process_id: int, quick: bool) -> dict | None:
    """The sweep over the devices of every process (`jax.distributed`); the result on process 0.

    Every process runs this with the same arguments but its own `process_id`. `sim.train_sweep`
    shards the sweep axis over the global mesh; `sim.sweep.sweep_map` places the inputs shard by
    shard and gathers the outputs to every process. Returns timing and a checksum on process 0,
    None elsewhere.
    """
    import time

    import jax

    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    import numpy as np

    from passk.benchmarks.bandit_sweep import make_bandits, run_sweep

    n_prompts, n_regimes, ks, steps = (
        (1024, 2, (1, 2, 4, 8), 20) if quick else (4096, 8, (1, 2, 3, 4, 6, 8, 12, 16), 50)
    )
    bandits, theta0s = make_bandits(jax.random.key(0), n_regimes=n_regimes, n_prompts=n_prompts, n_actions=4, dim=8)
    kw = dict(ks=ks, steps=steps, k_max=max(ks), learning_rate=1.0)
    run_sweep(bandits, theta0s, **kw)  # compile
    start = time.perf_counter()
    out = run_sweep(bandits, theta0s, **kw)
    seconds = time.perf_counter() - start
    if jax.process_index() != 0:
        return None
    return {
        "seconds": seconds,
        "n_devices": jax.device_count(),
        "n_processes": jax.process_count(),
        "j1_final_mean": float(np.mean(out["j1"][..., -1])),
    }


def _main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="bandit sweep on several devices (see passk/benchmarks/README.md)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full", action="store_true", help="full sizes (the default)")
    parser.add_argument("--multihost", action="store_true", help="run across processes with jax.distributed")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (with --multihost)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    args = parser.parse_args(argv)
    if args.multihost:
        result = multihost(
            coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id, quick=args.quick
        )
        if result is not None:
            print(json.dumps(result))
    else:
        print(json.dumps(child(quick=args.quick)))


if __name__ == "__main__":
    _main()
