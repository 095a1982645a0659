"""One process of the two-process sweep test (`tests/test_multihost.py`).

Run as `python -m tests.multihost_worker COORDINATOR NUM_PROCESSES PROCESS_ID OUT` with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`: joins the `jax.distributed` job, runs a
small `sim.train_sweep` over the global mesh (every process's devices), and process 0 writes the
records to `OUT` (`.npz`). Without the distributed arguments (`--single OUT`) it runs the same
sweep in this process alone, the reference.
"""

from __future__ import annotations

import sys


def sweep():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sim import toy_bandit, train_sweep

    keys = jax.random.split(jax.random.key(0), 3)
    make = jax.vmap(lambda key, p_hard: toy_bandit(key, n_prompts=32, n_actions=4, p_hard=p_hard))
    bandits, theta0s = make(keys, jnp.array([0.1, 0.2, 0.3]))
    out = train_sweep(
        bandits,
        theta0s,
        ks=[1, 4, 16],
        keys=jax.random.split(jax.random.key(1), 2),
        steps=6,
        learning_rate=0.5,
        k_max=64,
    )
    return {name: np.asarray(value) for name, value in out.items()}


def main(argv) -> None:
    import numpy as np

    if argv[0] == "--single":
        out_path = argv[1]
    else:
        coordinator, num_processes, process_id, out_path = argv
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=int(num_processes), process_id=int(process_id)
        )
        assert jax.process_count() == int(num_processes) and jax.device_count() == 2 * int(num_processes)
    import jax

    records = sweep()
    if jax.process_index() == 0:
        np.savez(out_path, n_devices=jax.device_count(), n_processes=jax.process_count(), **records)
    if argv[0] != "--single":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
