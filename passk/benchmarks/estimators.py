"""`estimators`: PKPO per-sample weights for many groups at once.

Measured: :func:`theory.pkpo_weights` (jitted inside `theory`) on `G` groups of `n` rewards, one
call per baseline (`None`, `"loo"`, `"loo-1"`).

Baseline: :func:`numpy_pkpo_weights`, the same `O(n log n)` algorithm (sort, binomial coefficients
by a cumulative product, prefix/suffix sums, ties read at one position) written for one group in
plain numpy, applied group after group in a Python loop.

Rewards, one row per baseline and kind:

- binary (`estimators[none]`, ...): each group draws its own success rate, so that groups have
  many ties (the case the tie handling exists for) and every count of correct answers occurs.
  Binary rewards are what trainers with verifiers produce; on them `theory.pkpo_weights` takes its
  sort-free path (weights from each group's count of correct answers, the same numbers as its
  sorting path), while the baseline runs the general sorting algorithm on every group.
- continuous (`estimators[none, continuous]`, ...): uniform rewards in [0, 1) with a tenth of
  each group rounded onto a few levels (ties among real-valued rewards): both sides sort.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import theory
from passk.benchmarks._timing import interleaved, row

__all__ = ["numpy_pkpo_weights", "numpy_pkpo_loop", "make_rewards", "bench", "BASELINES"]

BASELINES = (None, "loo", "loo-1")


def _coefficients(n: int, k: int, dtype):
    """`A[t] = C(t, k-1)/C(n, k)`, `B[t] = C(t-1, k-2)/C(n, k)` for `t = 0..n-1` (`B[0] = 0`)."""
    t = np.arange(n, dtype=dtype)
    m = t + 1
    factors = np.where(t < n - 1, np.maximum(m - (k - 1), 0) / m, 1).astype(dtype)
    a = (dtype.type(k) / n) * np.cumprod(factors[::-1])[::-1]
    b = np.where(t >= 1, a * dtype.type(k - 1) / np.maximum(t, 1), 0).astype(dtype)
    return a.astype(dtype), b


def numpy_pkpo_weights(r, k: int, baseline=None) -> np.ndarray:
    """PKPO weights of ONE group `r` of shape `(n,)`: the algorithm of `theory.pkpo_weights`.

    Plain numpy, `O(n log n)`: sort ascending, `s_(t) = A[t] r_(t) + sum_{u>t} B[u] r_(u)`, the
    `"loo"` correction `(k/(n-1))` times the max@k estimate of the other `n-1` rewards, the
    `"loo-1"` form `A[L] r_(t) - sum_{u<L} B[u+1] r_(u)` (`L` = rewards strictly below), and tied
    rewards read at one position of their run.
    """
    r_in = np.asarray(r)
    dtype = r_in.dtype
    n = r_in.shape[0]
    order = np.argsort(r_in, kind="stable")
    rs = r_in[order]
    idx = np.arange(n)
    new_run = np.concatenate([[True], rs[1:] != rs[:-1]])
    ends_run = np.concatenate([rs[:-1] != rs[1:], [True]])
    run_start = np.maximum.accumulate(np.where(new_run, idx, 0))
    run_end = np.minimum.accumulate(np.where(ends_run, idx, n - 1)[::-1])[::-1]
    a, b = _coefficients(n, k, dtype)
    if baseline == "loo-1":
        shifted_b = np.concatenate([b[1:], [0]]).astype(dtype)
        below = np.concatenate([[0], np.cumsum(shifted_b * rs)[:-1]]).astype(dtype)
        w = a[run_start] * rs - below[run_start]
    else:
        w = a * rs + np.concatenate([np.cumsum((b * rs)[::-1])[::-1][1:], [0]]).astype(dtype)
        if baseline == "loo":
            alpha, _ = _coefficients(n - 1, k, dtype)
            below = np.concatenate([[0], np.cumsum(alpha * rs[:-1])]).astype(dtype)
            above = np.concatenate([np.cumsum((alpha * rs[1:])[::-1])[::-1], [0]]).astype(dtype)
            w = w - dtype.type(k) / (n - 1) * (below + above)
        w = w[run_end]
    out = np.empty_like(w)
    out[order] = w
    return out.astype(dtype)


def numpy_pkpo_loop(rewards, k: int, baseline=None) -> np.ndarray:
    """:func:`numpy_pkpo_weights` for every group (rows of `rewards`), one after another."""
    rewards = np.asarray(rewards)
    return np.stack([numpy_pkpo_weights(g, k, baseline) for g in rewards])


def make_rewards(key, n_groups: int, n: int, dtype=jnp.float32, *, kind: str = "binary") -> np.ndarray:
    """Rewards `(n_groups, n)`.

    `kind="binary"`: group `g` succeeds with its own rate drawn uniformly. `kind="continuous"`:
    uniform in [0, 1), with the first tenth of each group rounded to multiples of 1/4 (ties).
    """
    k_rate, k_draw = jax.random.split(key)
    draws = jax.random.uniform(k_draw, (n_groups, n), dtype)
    if kind == "binary":
        rate = jax.random.uniform(k_rate, (n_groups, 1), dtype)
        return np.asarray((draws < rate).astype(dtype))
    if kind == "continuous":
        tied = jnp.arange(n) < max(n // 10, 2)
        return np.asarray(jnp.where(tied, jnp.round(draws * 4) / 4, draws).astype(dtype))
    raise ValueError(f"kind must be 'binary' or 'continuous'; got {kind!r}")


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """One row per reward kind and baseline: `theory.pkpo_weights` vs the numpy per-group loop
    (target >= 30x)."""
    n_groups, n, k = (512, 64, 8) if quick else (4096, 64, 8)
    repeats = repeats or (3 if quick else 5)
    rows = []
    for kind, baseline in [(kind, b) for kind in ("binary", "continuous") for b in BASELINES]:
        rewards_np = make_rewards(key, n_groups, n, kind=kind)
        rewards = jnp.asarray(rewards_np)
        ours = lambda: theory.pkpo_weights(rewards, k, baseline=baseline)  # noqa: E731
        base = lambda: numpy_pkpo_loop(rewards_np, k, baseline)  # noqa: E731
        t0 = time.perf_counter()
        got = np.asarray(jax.block_until_ready(ours()))  # compiles
        compile_s = time.perf_counter() - t0
        ref = base()
        max_err = float(np.max(np.abs(got - ref)))
        med = interleaved({"ours": ours, "baseline": base}, repeats)
        rows.append(
            row(
                f"estimators[{baseline or 'none'}{'' if kind == 'binary' else ', ' + kind}]",
                med["ours"],
                med["baseline"],
                ">= 30x",
                compile_s=compile_s,
                max_abs_diff=max_err,
                size=f"{n_groups} groups x n={n}, k={k}, {kind} rewards, float32",
                rewards=kind,
                met=bool(med["baseline"] / med["ours"] >= 30),
                device=str(jax.devices()[0].platform),
            )
        )
    return rows
