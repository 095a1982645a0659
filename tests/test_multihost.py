"""Scale-out: two processes joined by `jax.distributed` (localhost coordinator, CPU collectives, two
host devices each) run a sweep through `sim.train_sweep` and return the numbers of the
one-process run (SPEC section 7)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_processes_give_the_one_process_numbers(tmp_path):
    port = free_port()
    multi = tmp_path / "multi.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.multihost_worker", f"127.0.0.1:{port}", "2", str(pid), str(multi)],
            env=worker_env(2),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    single = tmp_path / "single.npz"
    reference = subprocess.run(
        [sys.executable, "-m", "tests.multihost_worker", "--single", str(single)],
        env=worker_env(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung collective
            for p in procs:
                p.kill()
            pytest.fail("a process of the two-process sweep did not finish in 300 s")
        assert proc.returncode == 0, err[-3000:]
    got, want = np.load(multi), np.load(single)
    assert int(got["n_processes"]) == 2 and int(got["n_devices"]) == 4 and int(want["n_devices"]) == 1
    names = [name for name in want.files if name not in ("n_devices", "n_processes")]
    assert {"j1", "jk", "k_star", "theta"} <= set(names)
    for name in names:
        assert got[name].shape == want[name].shape, name
        if np.issubdtype(want[name].dtype, np.integer):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
