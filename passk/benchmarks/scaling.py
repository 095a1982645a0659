"""`scaling`: cost of :func:`sim.train_sweep` against prompts `P` and against configurations.

Measured: the `bandit-sweep` call (same bandits, rule, records, `k_max`) at `P = 4k..64k` prompts
(8 configurations) and at `8..256` configurations (`P = 4096`), median of a few calls after
compilation. Steps are cut to `steps` (20 in the full run) so the largest sizes fit the time budget;
per-step cost does not depend on the step count (a `lax.scan`).

Reported: the fitted log-log exponent of time against each size over all sizes (`exponent`), and
over the largest `FIT_POINTS` sizes (`exponent_upper`), which the target 0.85..1.15 (linear cost)
is checked on. At the small sizes a fixed per-step cost (dispatch of each operation of the step,
thread-pool hand-offs: a few tenths of a millisecond) is comparable to the work, which bends the
curve below linear there; the upper fit measures how the work itself grows. The row's `ours_s` is
the time at the largest size and `baseline_s` the linear extrapolation from the smallest
(`t_min * size_max / size_min`).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from passk.benchmarks._timing import interleaved, row
from passk.benchmarks.bandit_sweep import make_bandits, run_sweep

__all__ = ["bench", "fit_exponent"]

KS = (1, 2, 3, 4, 6, 8, 12, 16)
#: Sizes (the largest ones) that `exponent_upper`, and the target, are fitted on.
FIT_POINTS = 3


def fit_exponent(sizes, seconds) -> float:
    """Slope of `log(seconds)` against `log(sizes)` (least squares)."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)[0])


def _time_one(key, *, n_prompts, n_regimes, ks, steps, k_max, repeats):
    bandits, theta0s = make_bandits(key, n_regimes=n_regimes, n_prompts=n_prompts, n_actions=4, dim=8)
    fn = lambda: run_sweep(bandits, theta0s, ks=ks, steps=steps, k_max=k_max, learning_rate=1.0)  # noqa: E731
    fn()  # compile
    return interleaved({"t": fn}, repeats)["t"]


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """Two rows (`scaling[prompts]`, `scaling[configs]`) with sizes, times and exponents."""
    if quick:
        prompt_sizes, config_sizes, steps, ks = (1024, 2048, 4096), (8, 16, 32), 5, KS[:4]
    else:
        prompt_sizes, config_sizes, steps, ks = (4096, 8192, 16384, 32768, 65536), (8, 16, 32, 64, 128, 256), 20, KS
    repeats = repeats or 3
    k_max = max(ks)
    rows = []
    series = {
        "prompts": [
            (p, dict(n_prompts=p, n_regimes=1, ks=(1, 2, 4, 8, 1, 2, 4, 8) if quick else KS)) for p in prompt_sizes
        ],
        "configs": [
            (c, dict(n_prompts=prompt_sizes[0] if quick else 4096, n_regimes=c // len(ks), ks=ks)) for c in config_sizes
        ],
    }
    for axis, points in series.items():
        sizes, seconds = [], []
        start = time.perf_counter()
        for size, kw in points:
            seconds.append(_time_one(key, steps=steps, k_max=k_max, repeats=repeats, **kw))
            sizes.append(size)
        exponent = fit_exponent(sizes, seconds)
        upper = fit_exponent(sizes[-FIT_POINTS:], seconds[-FIT_POINTS:])
        linear = seconds[0] * sizes[-1] / sizes[0]
        rows.append(
            row(
                f"scaling[{axis}]",
                seconds[-1],
                linear,
                f"log-log exponent over the largest {FIT_POINTS} sizes in [0.85, 1.15]",
                met=bool(0.85 <= upper <= 1.15),
                exponent=exponent,
                exponent_upper=upper,
                fit_points=FIT_POINTS,
                sizes=sizes,
                seconds=seconds,
                steps=steps,
                wall_s=time.perf_counter() - start,
                device=str(jax.devices()[0].platform),
            )
        )
    return rows
