"""`sampled`: the unbiased `I_k` for every `k <= n - 1` and the `k*` interval, at run scale.

Measured: :func:`theory.sampled_critical_k` on one run of `P` prompts with `n` answers each and
`D`-dimensional (sketched) score vectors in float32, input validation included: it evaluates
`I_k_hat` and its jackknife standard error at every `k = 1 .. n - 1` and reads the interval off
the Bonferroni band over those `k` (no key).
Its statistics `G_i`, `Q_i` are :func:`theory.answer_sums`, compiled by XLA.

Target: at most :data:`READS_TARGET` reads of the scores, `ours_over_floor = ours_s / floor_s`,
where the floor is reading the scores once at this machine's memory bandwidth (measured in the
same run as the best of several jitted sums over a buffer of the same size): the statistics read
every score, so no method can be faster than the floor.

Baseline (ratio reported, no target): :func:`numpy_sampled_critical_k`, the same closed form
(SPEC section 10) in plain numpy: the statistics by `einsum`, then for each `k` the coefficients
from `scipy.special.comb`, the estimate and the delete-one-prompt jackknife, vectorised over
prompts. `ratio_ceiling["one_read"]` is the baseline's time over the floor.

Also timed, in the same interleaved set: :func:`theory.answer_statistics` alone (`statistics_s`,
`statistics_over_floor`), the part of the call that reads the scores; the rest of the call is the
table over `k` with its jackknife.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import comb
from scipy.stats import norm

import theory
from passk.benchmarks._timing import interleaved, row

__all__ = ["READS_TARGET", "numpy_sampled_critical_k", "make_run", "bench"]

#: The target: `theory.sampled_critical_k` in at most this many reads of the scores.
READS_TARGET = 3


def numpy_sampled_critical_k(rewards, scores, level: float = 0.95):
    """`(estimate, lower, upper)` of `k*` (None where absent) from `I_k_hat +- z se`, plain numpy,
    `z = Phi^{-1}(1 - (1 - level) / (2 (n - 1)))` the Bonferroni band over `k = 1 .. n - 1`."""
    r = np.asarray(rewards, np.float64)
    s = np.asarray(scores)
    n_prompts, n = r.shape
    z = float(norm.ppf(1 - (1 - level) / (2 * (n - 1))))
    mu = np.full(n_prompts, 1.0 / n_prompts)
    big_g = np.einsum("pn,pnd->pd", r, s, dtype=np.float64)
    q = np.einsum("pn,pnd->p", r, s * s, dtype=np.float64)
    c = r.sum(axis=1)
    f = n - c
    g = big_g / n
    pair = np.where(c >= 2, ((big_g * big_g).sum(axis=1) - q) / (n * (n - 1)), 0.0)
    h = mu @ g
    along_h = g @ h
    sq = (g * g).sum(axis=1)
    found = {"estimate": None, "lower": None, "upper": None}
    for k in range(1, n):
        c1 = np.where(c >= 1, k * comb(f, k - 1) / comb(n - 1, k - 1), 0.0)
        c2 = np.where(c >= 2, k * comb(f, k - 1) / comb(n - 2, k - 1), 0.0)
        x1, x2 = mu * c1, mu * mu * c2
        along_u = g @ (x1 @ g)
        cross = x1 * (along_h - mu * sq)
        self_term = x2 * pair
        total = np.sum(cross + self_term)
        deleted = (total - cross - mu * (along_u - x1 * sq) - self_term) / (1 - mu) ** 2
        se = np.sqrt((n_prompts - 1) / n_prompts * np.sum((deleted - deleted.mean()) ** 2))
        for name, value in (("estimate", total), ("lower", total - z * se), ("upper", total + z * se)):
            if found[name] is None and value < 0:
                found[name] = k
    return found["estimate"], found["lower"], found["upper"]


def make_run(key, n_prompts: int, n: int, dim: int):
    """One run: per-prompt success rates uniform in [0, 1], rewards `(P, n)`, float32 scores
    `(P, n, D)` whose correct answers lean towards a direction shared by the easier prompts, and
    away from it on the hardest fifth (so that `I_k` changes sign at a moderate `k`)."""
    k_p, k_r, k_s, k_d = jax.random.split(key, 4)
    p = jax.random.uniform(k_p, (n_prompts, 1))
    rewards = (jax.random.uniform(k_r, (n_prompts, n)) < p).astype(jnp.float32)
    direction = jax.random.normal(k_d, (dim,))
    lean = jnp.where(p < jnp.quantile(p, 0.2), -3.0, 1.0)[:, :, None] * direction / jnp.sqrt(dim)
    scores = jax.random.normal(k_s, (n_prompts, n, dim)) / jnp.sqrt(dim) + lean
    return np.asarray(rewards), jnp.asarray(scores, jnp.float32)


def _bandwidth_floor(nbytes: int, repeats: int) -> float:
    """Seconds to read `nbytes` once: the best of `repeats` jitted sums over a float32 buffer."""
    buf = jnp.ones((nbytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    jax.block_until_ready(total(buf))
    return interleaved({"read": lambda: total(buf)}, repeats, reduce=min)["read"]


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """`sampled[P, n, D]`: ours against one read of the scores (target: at most
    :data:`READS_TARGET` reads), and against the numpy closed form (ratio reported)."""
    n_prompts, n, dim = (512, 32, 64) if quick else (4096, 64, 256)
    repeats = repeats or (3 if quick else 5)
    rewards, scores = make_run(key, n_prompts, n, dim)
    scores_np = np.asarray(scores)
    ours = lambda: theory.sampled_critical_k(rewards, scores)  # noqa: E731
    base = lambda: numpy_sampled_critical_k(rewards, scores_np)  # noqa: E731
    t0 = time.perf_counter()
    got = ours()
    compile_s = time.perf_counter() - t0
    want = base()
    stats = lambda: theory.answer_statistics(rewards, scores)  # noqa: E731
    med = interleaved({"ours": ours, "baseline": base, "statistics": stats}, repeats)
    floor_s = _bandwidth_floor(scores.nbytes, repeats)
    same = [got.estimate, got.lower, got.upper] == list(want)
    return [
        row(
            f"sampled[P={n_prompts}, n={n}, D={dim}]",
            med["ours"],
            med["baseline"],
            f"<= {READS_TARGET} reads of the scores (ours / read-once floor)",
            compile_s=compile_s,
            floor_s=floor_s,
            ours_over_floor=med["ours"] / floor_s,
            statistics_s=med["statistics"],
            statistics_over_floor=med["statistics"] / floor_s,
            ratio_ceiling={"one_read": med["baseline"] / floor_s},
            same_k_star=same,
            k_star=[got.estimate, got.lower, got.upper],
            scores_bytes=int(scores.nbytes),
            size=f"{n_prompts} prompts x n={n} answers x D={dim}, float32 scores",
            met=bool(same and med["ours"] / floor_s <= READS_TARGET),
            device=str(jax.devices()[0].platform),
        )
    ]
