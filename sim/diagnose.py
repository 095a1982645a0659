"""Diagnose a run from its sampled answers: is it in the conflict regime, at which `k`, how sure.

Two entry points, one report (SPEC sections 6 and 10):

- :func:`diagnosis_report` builds the report from arrays a run already logs: per prompt the number
  of correct answers `c_i` out of `n`, and, when score vectors `s_ij = grad log pi(y_ij | x_i)`
  (or a sketch of them) were logged, their sums over the correct answers
  `G_i = sum_j r_ij s_ij` and `Q_i = sum_j r_ij ||s_ij||^2` (:func:`score_sums`). The `passk
  diagnose` command reads files into these arrays and calls it.
- :func:`diagnose_model` computes the same sums on any JAX model by autodiff (exact per-answer
  gradients in chunks, or a Gaussian sketch from JVPs) and returns the same report.

The report (a JSON-serialisable dict):

- `n_prompts`, `samples_per_prompt` (`n`), `k_max` (`n - 1`), `ks` (the requested orders),
  `scores` (where the scores came from, or None), `score_dim` (`D`, or None);
- `k_star`: `{"estimate", "lower", "upper", "level", "band", "quantile", "signal"}`, read off
  `inner` by :func:`theory.critical_k_from_inner`: the interval from a simultaneous Bonferroni
  band over `k = 1 .. n-1` (`band`, with its `quantile`), so both ends hold `level` together
  (`lower`/`upper` None: see :class:`theory.SampledCriticalK`); `signal` whether `I_1 > 0` is
  established; all None without scores; `z`, the pointwise normal quantile of each `I_k`'s
  interval;
- `inner`: for every `k = 1 .. n-1`, the unbiased `I_k = <grad J_k, grad J_1>` with its jackknife
  standard error (`estimate`, `stderr`, and the underflow-free `scaled_estimate`,
  `scaled_stderr`, `log_scale`); empty without scores;
- `trainers`: for every method of :data:`theory.IMPLIED_METHODS` and requested `k`, how the
  trainer spreads its update over prompts: with `T(c_i)` the unbiased estimate of the finite-`n`
  implied weight (:func:`theory.implied_weight_unbiased`) and `omega_i = mu_i T(c_i) / sum_l mu_l
  T(c_l)`, the effective number of prompts `1 / sum omega_i^2`, the share `sum_{c_i = 0} omega_i`
  on prompts no sampled estimator updates this step, and the share on the top 10% of prompts by
  `omega`: `{method: [{"k", "effective_prompts", "share_unsolved", "top_decile_share"}, ...]}`,
  one entry per allowed `k` (a `k` the method does not allow at this `n` is left out and named in
  `notes`); `k`-free methods (REINFORCE, RLOO, GRPO) have one entry with `k` None;
- `prompts`: per prompt `prompt_id`, `n`, `c`, `p_hat = c/n`, `weight` (`mu_i`) and the unbiased
  agreement `a_hat_i` (None without scores);
- `notes`: plain sentences (what could not be computed and why).

Numbers are computed in float64 whatever the caller's JAX setting.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import theory
from theory import validate as _validate

__all__ = ["diagnosis_report", "diagnose_model", "sketch_scores", "score_sums", "default_ks", "NO_SCORES_NOTE"]

NO_SCORES_NOTE = (
    "no score vectors: the sign of I_k = <grad J_k, grad J_1>, and so k*, cannot be estimated from "
    "counts alone. It needs, for each answer, its score vector s_ij = grad_theta log pi(y_ij | x_i) "
    "(all parameters, one layer, or a random sketch S s_ij with E[S^T S] = I); only correct answers' "
    "scores are used."
)


def default_ks(n: int) -> list[int]:
    """`1, 2, 4, 8, ...` up to `n`."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def score_sums(rewards, scores):
    """`(c, G, Q)` of sampled answers in float64 on the host: :func:`theory.answer_sums`, whatever
    JAX's precision setting, added answer by answer as a file read line by line adds them.

    Args:
      rewards: `(P, n)` in `{0, 1}`.
      scores: `(P, n, ...)` score vectors (or a sketch; trailing axes flattened).

    Returns:
      :class:`theory.AnswerSums` `(c (P,), G (P, D), Q (P,))` of float64 numpy arrays.
    """
    r = np.asarray(rewards, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    return theory.answer_sums(r, s.reshape(s.shape[:2] + (-1,)))


def _concentration(omega: np.ndarray, unsolved: np.ndarray) -> dict:
    top = max(1, math.ceil(omega.size / 10))
    return {
        "effective_prompts": float(1.0 / np.sum(omega * omega)),
        "share_unsolved": float(np.sum(omega[unsolved])),
        "top_decile_share": float(np.sum(np.sort(omega)[::-1][:top])),
    }


def _trainers(c: np.ndarray, n: int, mu: np.ndarray, ks, notes: list) -> dict:
    """Weight concentration of every implied method (module docstring)."""
    counts = c.astype(np.int64)
    unsolved = counts == 0
    table = np.arange(n + 1)  # T(c) for every possible count, then read at the prompts' counts
    out = {}
    for method, estimator in theory.ESTIMATOR_TABLE.items():
        limit = estimator.max_k(n)
        entries = []
        for k in ks if estimator.needs_k else [None]:
            if k is not None and k > limit:
                notes.append(f"trainer {method} skipped at k={k}: it needs k <= {estimator.k_bound} = {limit}")
                continue
            t = np.asarray(theory.implied_weight_unbiased(n, table, method, k), dtype=np.float64)[counts]
            raw = mu * t
            total = float(raw.sum())
            entry = {"k": k}
            if total > 0:
                entry.update(_concentration(raw / total, unsolved))
            else:
                entry.update(effective_prompts=None, share_unsolved=None, top_decile_share=None)
                notes.append(f"trainer {method} at k={k} puts no weight on any prompt of this run")
            entries.append(entry)
        out[method] = entries
    return out


def _as_counts(correct, n):
    n = _validate.python_int("n", n, minimum=2)
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or c.size < 1:
        raise ValueError(f"correct must have shape (P,) with P >= 1; got shape {c.shape}")
    bad = ~np.isfinite(c) | (c != np.round(c)) | (c < 0) | (c > n)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise ValueError(f"correct must be integer counts in [0, n = {n}]; got {c[i]!r} at prompt {i}")
    return c, n


def _as_mu(mu, n_prompts):
    if mu is None:
        return np.full(n_prompts, 1.0 / n_prompts)
    w = np.asarray(mu, dtype=np.float64)
    if w.shape != (n_prompts,):
        raise ValueError(f"mu must have shape (P,) = ({n_prompts},); got shape {w.shape}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise ValueError(f"mu must be finite and >= 0; got {w[i]!r} at prompt {i}")
    if w.sum() <= 0:
        raise ValueError(f"mu must have a positive sum; got {w.sum()!r}")
    return w / w.sum()


def diagnosis_report(
    correct,
    n: int,
    *,
    score_sum=None,
    score_sq_sum=None,
    mu=None,
    prompt_ids=None,
    ks=None,
    level: float = 0.95,
    scores: str | None = None,
) -> dict:
    """The diagnosis of one run from per-prompt counts and (optionally) score sums.

    With scores, `I_k_hat = sum_i mu_i [c1_i <g_i, H - mu_i g_i> + mu_i c2_i (||G_i||^2 - Q_i)/(n(n-1))]`
    for `k = 1 .. n-1` (:func:`theory.inner_product_from_statistics`), `k*` with its interval
    (:func:`theory.critical_k_from_statistics`) and `a_hat_i`; always, the trainers' weight
    concentration from `omega_i ∝ mu_i T(c_i)` (module docstring).

    Args:
      correct: `(P,)` counts `c_i` in `[0, n]`.
      n: answers per prompt, `>= 2`.
      score_sum: `(P, D)` `G_i = sum_j r_ij s_ij`, or None (counts only).
      score_sq_sum: `(P,)` `Q_i = sum_j r_ij ||s_ij||^2`; given exactly when `score_sum` is.
      mu: `(P,)` non-negative prompt weights (normalised here); uniform when None.
      prompt_ids: `(P,)` names of the prompts (default `"0"`, `"1"`, ...).
      ks: the `k` at which to report the trainers (default `1, 2, 4, ...` up to `n`).
      level: nominal level of the intervals, in `(0, 1)`.
      scores: a label of where the scores came from (`"exact"`, `"sketch"`, `"file"`), stored.

    Returns:
      The report dict (module docstring), JSON-serialisable.

    Raises:
      ValueError, TypeError: bad counts, weights, shapes, `k` or `level`, naming the argument.
    """
    c, n = _as_counts(correct, n)
    n_prompts = c.size
    w = _as_mu(mu, n_prompts)
    if prompt_ids is None:
        ids = [str(i) for i in range(n_prompts)]
    else:
        ids = [str(x) for x in prompt_ids]
        if len(ids) != n_prompts:
            raise ValueError(f"prompt_ids must have length P = {n_prompts}; got {len(ids)}")
    if ks is None:
        ks = default_ks(n)
    else:
        ks = sorted({_validate.python_int("ks", k, minimum=1) for k in ks})
    z = theory.normal_quantile(level)  # validates level
    level = float(level)
    if (score_sum is None) != (score_sq_sum is None):
        raise ValueError("score_sum and score_sq_sum must be given together (both or neither)")
    notes: list[str] = []
    for k in ks:
        if k > n:
            notes.append(f"k={k} exceeds n = {n}: no trainer samples k answers from a group of {n}")
    report = {
        "n_prompts": n_prompts,
        "samples_per_prompt": n,
        "k_max": n - 1,
        "ks": ks,
        "scores": scores if score_sum is not None else None,
        "score_dim": None,
        "k_star": {
            "estimate": None,
            "lower": None,
            "upper": None,
            "level": level,
            "band": None,
            "quantile": None,
            "signal": None,
        },
        "inner": [],
    }
    agreement = [None] * n_prompts
    with jax.enable_x64(True):
        if score_sum is not None:
            big_g = np.asarray(score_sum, dtype=np.float64)
            stats = theory.statistics_from_sums(c, big_g, np.asarray(score_sq_sum, np.float64), n=n)
            report["score_dim"] = int(stats.mean_score.shape[-1])
            mu64 = jnp.asarray(w)
            k_all = np.arange(1, n)
            inner = theory.inner_product_from_statistics(stats, k_all, mu=mu64)
            fields = [np.asarray(x, dtype=np.float64) for x in inner]
            crit = theory.critical_k_from_inner(inner, level=level)
            report["k_star"] = {
                "estimate": crit.estimate,
                "lower": crit.lower,
                "upper": crit.upper,
                "level": level,
                "band": crit.band,
                "quantile": crit.quantile,
                "signal": crit.signal,
            }
            report["inner"] = [
                {
                    "k": int(k),
                    "estimate": float(fields[0][i]),
                    "stderr": float(fields[1][i]),
                    "scaled_estimate": float(fields[2][i]),
                    "scaled_stderr": float(fields[3][i]),
                    "log_scale": float(fields[4][i]),
                }
                for i, k in enumerate(k_all)
            ]
            report["z"] = z
            agreement = [float(a) for a in np.asarray(theory.agreement_from_statistics(stats, mu=mu64))]
        else:
            notes.insert(0, NO_SCORES_NOTE)
        report["trainers"] = _trainers(c, n, w, ks, notes)
    report["prompts"] = [
        {
            "prompt_id": ids[i],
            "n": n,
            "c": int(c[i]),
            "p_hat": float(c[i] / n),
            "weight": float(w[i]),
            "agreement": agreement[i],
        }
        for i in range(n_prompts)
    ]
    report["notes"] = notes
    return report


# ---------------------------------------------------------------------------------------------
# Scores from a JAX model


def _check_batch(batch, shape):
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if tuple(jnp.shape(leaf)[:2]) != shape:
            raise ValueError(
                f"batch leaves must have leading axes (P, n) = {shape}; got shape {jnp.shape(leaf)} at "
                f"{jax.tree_util.keystr(path) or 'the root'}"
            )


def _exact_sums(logp, params, batch, r, chunk_size):
    """`G_i`, `Q_i` over all parameters: one reverse pass per correct answer, `chunk_size` at a time."""
    flat, _ = ravel_pytree(params)
    n_prompts = r.shape[0]
    where = np.argwhere(r == 1)  # (m, 2): the correct answers; wrong ones carry no gradient
    big_g = jnp.zeros((n_prompts, flat.size), flat.dtype)
    q = jnp.zeros((n_prompts,), flat.dtype)
    if where.shape[0] == 0:
        return big_g, q
    pad = (-where.shape[0]) % chunk_size
    live = np.concatenate([np.ones(where.shape[0]), np.zeros(pad)])
    where = np.concatenate([where, np.zeros((pad, 2), where.dtype)])
    for start in range(0, where.shape[0], chunk_size):
        idx = where[start : start + chunk_size]
        big_g, q = _exact_chunk(
            logp,
            params,
            batch,
            big_g,
            q,
            jnp.asarray(idx[:, 0]),
            jnp.asarray(idx[:, 1]),
            jnp.asarray(live[start : start + chunk_size], flat.dtype),
        )
    return big_g, q


@functools.partial(jax.jit, static_argnums=0)
def _exact_chunk(logp, params, batch, big_g, q, rows, cols, live):
    """Add the gradients of the answers `(rows, cols)` (weighted by `live`) to `G` and their norms to `Q`."""
    flat, unravel = ravel_pytree(params)

    def one(f, item):  # item: the batch entry of one answer, leaves with leading axes (1, 1)
        return logp(unravel(f), item)[0, 0]

    items = jax.tree_util.tree_map(lambda x: x[rows, cols][:, None, None], batch)
    grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(flat, items)  # (m, D)
    sums = theory.answer_sums(live[:, None], grads[:, None, :])  # each answer a chunk of one
    return big_g.at[rows].add(sums.score_sum), q.at[rows].add(sums.score_sq_sum)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _sketch_chunk(logp, params, batch, key, ds, sketch_dim):
    """`<v_d, grad logp>` for the directions `d` in `ds`: `(len(ds), P, n)`."""
    flat, unravel = ravel_pytree(params)
    _, lin = jax.linearize(lambda f: logp(unravel(f), batch), flat)
    scale = 1.0 / math.sqrt(sketch_dim)
    vs = jax.vmap(lambda d: jax.random.normal(jax.random.fold_in(key, d), flat.shape, flat.dtype))(ds) * scale
    return jax.vmap(lin)(vs)


def _sketch_scores(logp, params, batch, sketch_dim, key, chunk_size):
    """`(P, n, sketch_dim)` sketched scores `S s_ij`: `<v_d, s_ij>` for `v_d ~ N(0, I / sketch_dim)`."""
    parts = []
    for start in range(0, sketch_dim, chunk_size):
        ds = jnp.arange(start, start + chunk_size)
        parts.append(np.asarray(_sketch_chunk(logp, params, batch, key, ds, sketch_dim))[: sketch_dim - start])
    return np.moveaxis(np.concatenate(parts, axis=0), 0, -1)


def sketch_scores(logp, params, batch, *, sketch_dim: int, key, chunk_size: int = 64) -> np.ndarray:
    """Sketched score vectors `S s_ij` of shape `(P, n, sketch_dim)`, to log or write to a file.

    `S` has rows `v_d ~ N(0, I / sketch_dim)` (`E[S^T S] = I`): inner products of sketched scores
    are unbiased for those of the full score vectors `s_ij = grad_theta log pi(y_ij | x_i)`.
    Column `d` is the JVP `<v_d, grad logp>` (direction `d` drawn from `fold_in(key, d)`).
    Cost: `sketch_dim` forward-mode passes over the batch. Arguments as in :func:`diagnose_model`.
    """
    sketch_dim = _validate.python_int("sketch_dim", sketch_dim, minimum=1)
    chunk_size = _validate.python_int("chunk_size", chunk_size, minimum=1)
    if key is None:
        raise ValueError("key must be a jax.random key for a sketch; got None")
    return _sketch_scores(logp, params, batch, sketch_dim, key, chunk_size)


def diagnose_model(
    logp,
    params,
    batch,
    rewards,
    *,
    mu=None,
    prompt_ids=None,
    ks=None,
    level: float = 0.95,
    scores: str = "exact",
    sketch_dim: int = 256,
    key=None,
    chunk_size: int = 64,
) -> dict:
    """The diagnosis of :func:`diagnosis_report` for a JAX model, with score vectors by autodiff.

    `s_ij = grad_theta log pi(y_ij | x_i)` is never logged by hand: it is the gradient of `logp`.

    Args:
      logp: `logp(params, batch) -> (P', n')` log-probabilities `log pi(y_ij | x_i)` of the given
        sampled answers, for a batch whose leaves have leading axes `(P', n')`; entry `(i, j)` of
        the result must depend only on entry `(i, j)` of every leaf (so the batch can be cut into
        pieces, down to single answers with leading axes `(1, 1)`).
      params: the parameter pytree `theta` (all its floating leaves are differentiated).
      batch: a pytree of arrays with leading axes `(P, n)`: entry `[i, j]` holds what `logp` needs
        for answer `j` of prompt `i` (e.g. the prompt's tokens, repeated over `j`, and the answer's
        tokens).
      rewards: `(P, n)` rewards in `{0, 1}` of those answers.
      mu: `(P,)` non-negative prompt weights (normalised), uniform when None.
      prompt_ids: optional `(P,)` prompt names for the report.
      ks: orders at which to report the trainers (default `1, 2, 4, ...` up to `n`).
      level: nominal level of the intervals.
      scores: `"exact"`: per-answer gradients over all parameters, `chunk_size` answers at a time,
        accumulated into `G_i = sum_j r_ij s_ij` and `Q_i = sum_j r_ij ||s_ij||^2` (only correct
        answers are differentiated). Cost: one reverse pass per correct answer; memory
        `O(P D_theta)` for `G` plus `chunk_size` gradients. Exact inner products.
        `"sketch"`: sketched scores `S s_ij` with `S` of shape `(sketch_dim, D_theta)`, rows
        `v_d ~ N(0, I / sketch_dim)` (so `E[S^T S] = I` and every inner product, hence `I_k_hat`,
        stays unbiased over `S`; the variance grows as `sketch_dim` shrinks), each column a JVP
        `<v_d, grad logp>` along `v_d` (`jax.linearize` once, then `sketch_dim` forward-mode
        passes over the whole batch, `chunk_size` directions at a time). Cost: `sketch_dim`
        forward passes over the batch; memory `O(P n sketch_dim)` plus one linearisation.
      sketch_dim: `D`, the sketch dimension (`"sketch"` only).
      key: a `jax.random` key, required for `"sketch"` (direction `d` uses `fold_in(key, d)`, so the
        sketch does not depend on `chunk_size`).
      chunk_size: answers (exact) or directions (sketch) per compiled call.

    Returns:
      The report of :func:`diagnosis_report` (`scores` set to `"exact"` or `"sketch"`).

    Raises:
      ValueError: bad `rewards`, batch leaves whose leading axes are not `(P, n)`, unknown `scores`,
        missing `key` for the sketch, `sketch_dim` or `chunk_size` below 1.
    """
    r = np.asarray(_validate.binary_rewards("rewards", rewards), dtype=np.float64)
    _check_batch(batch, r.shape)
    chunk_size = _validate.python_int("chunk_size", chunk_size, minimum=1)
    if scores == "exact":
        big_g, q = _exact_sums(logp, params, batch, r, chunk_size)
        c = r.sum(axis=-1)
        big_g, q = np.asarray(big_g, np.float64), np.asarray(q, np.float64)
    elif scores == "sketch":
        sketch_dim = _validate.python_int("sketch_dim", sketch_dim, minimum=1)
        if key is None:
            raise ValueError("key must be a jax.random key for scores='sketch'; got None")
        sketched = _sketch_scores(logp, params, batch, sketch_dim, key, chunk_size)
        c, big_g, q = score_sums(r, sketched)
    else:
        raise ValueError(f"scores must be 'exact' or 'sketch'; got {scores!r}")
    return diagnosis_report(
        c,
        r.shape[1],
        score_sum=big_g,
        score_sq_sum=q,
        mu=mu,
        prompt_ids=prompt_ids,
        ks=ks,
        level=level,
        scores=scores,
    )
