"""Training through the crossing: pass@1 after a few pass@k steps at every `k`, for two task
families and three warm starts each.

The transformer confirmation (:mod:`sim.transformer.experiment`) predicts `k*` at one warm start
of one task and trains at three orders. This study puts the first-order prediction of SPEC
section 5 to the test at every order around the crossing, where it is hardest to get right:

    I_k = <grad J_k, grad J_1> = sum_i mu_i w_k(p_i) a_i,      k* = min{k : I_k < 0},

so a small plain step along `grad J_k` lowers `J_1` for `k >= k*` and raises it for `k < k*`.
For each task family (:mod:`sim.transformer.task_families`: per-pair exceptions, and a rare
second rule) and each of its warm starts (points along one supervised run, so with different
`k*`):

1. `p` and the agreements `a = J (J^T mu)` over all parameters at the warm start
   (:func:`sim.transformer.exact.agreement_jvp`), and `k*`, `I_k`, `A_k` from them
   (:func:`sim.transformer.exact.conflict_summary`, in float64), as in the confirmation.
2. Fine-tuning with plain SGD, `theta <- theta + eta u`, for `T` steps at every `k = 1 .. K`,
   `K = max(8, 2 k*)` over all warm starts (at most `max_k`): sampled PKPO with the
   `k-1`-subset baseline (`"pkpo-loo-1"`, unbiased for `grad J_k`) from `n = 4K + 1 >= 2 k* + 1`
   answers per prompt over `S` seeds, and one deterministic run along the exact `grad J_k`.
3. Per `(family, warm start, k)`: `pass1_change = J_1(T) - J_1(0)` per seed, its mean with a 95%
   Student t interval over seeds (:func:`sim.intervals.mean_interval`); the predicted sign of
   `I_k` at the start (`-1` if `k >= k*`, else `+1`); the observed sign (0 when the interval
   contains 0). A row agrees, disagrees, or is inconclusive (observed sign 0); the exact run's
   sign gets its own verdict.

Each run records, at every `theta_t`, the exact `p` and agreements, hence `J_1`, `J_k`, `k*_t`
and `A_k(theta_t)` at its own `k` (:func:`run_records`), and the first-order change
`<g_1, u_t>` of every step taken. A disagreement is explained from these records
(:func:`_explain`): `I_k` had already turned at the step that moved pass@1 the wrong way (`k*`
moved past `k` along the trajectory); the update taken pointed the other way although `I_k` did
not (the sampled estimate decided); or both had the predicted sign and pass@1 still moved the
other way (the step was too large for the first-order prediction).

Sampling without sampling strings. Every prompt has exactly one correct answer `y*_i`, so a
sampled answer is correct with probability `p_i`, independently of the others, and every correct
answer has the score `grad log pi(y*_i | x_i)`. PKPO's `k-1` baseline gives wrong answers a
weight of exactly 0, so the update of `n` sampled answers,
`u = sum_i mu_i sum_j s_ij grad log pi(y_ij | x_i)`, equals
`sum_i mu_i (sum_j s_ij r_ij) grad log p_i` with `r_ij ~ Bernoulli(p_i)` (as
:mod:`sim.transformer.sampled` uses for its estimators). The study draws `r_ij` from the exact
`p_i`: the same distribution of updates as sampling the answers with
:func:`sim.transformer.train.sample_answers` and scoring them with the family's verifier (the
tests check the identity on sampled answers), for one forward and two reverse passes over the
`P` prompts per step instead of passes over `n P` sampled sequences. That is why `n` can be
`4K + 1` at no cost.

Compilation. Every run of the study (all `k`, seeds, exact runs, warm starts and both families)
goes through one compiled program: `k` is a traced integer (PKPO's weights and `w_k` accept
one), the families' populations are padded to one size with weight-0 prompts (they share the
vocabulary and so the model), the runs are `vmap`ped in equal batches (`lax.map`), the steps are
a `lax.scan`. A family's warm starts are consecutive calls of the supervised warm start, which
compile once per family.

Sizes (:func:`ksweep_config`). The full preset keeps the confirmation's model (68,736
parameters, `M = 11`) and warm-start recipe, cuts the steps to `T = 4` (the sign of the first
steps is the test) and runs 5 seeds; the quick preset cuts the modulus (`M = 7`), the model (one
layer of width 32, 9,312 parameters) and the steps (`T = 3`),
with 3 seeds and a smaller SGD step (`eta = 0.3`: at `eta = 1` a step of pass@1 ascent already
lowered pass@1 on this smaller model). Measured on 2 CPU cores shared with two other jobs
(load 1.5 to 4): the quick preset 29-40 s, the full one 141-165 s (warm starts and compilation
about 25 s; the runs about 20 s per warm start).

Scope (SPEC section 9): plain SGD on the sampled or exact pass@k gradient, on-policy, no clipping,
KL, entropy bonus or length normalisation.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import mean_interval, wilson_interval
from sim.records import RECORD_NAMES as R
from sim.records import floats as _floats
from sim.transformer import exact as _exact
from sim.transformer import model as _model
from sim.transformer import task_families as _families
from sim.transformer import train as _train

__all__ = [
    "ESTIMATOR",
    "FamilySetting",
    "KSweepConfig",
    "ksweep_config",
    "ksweep_study",
    "predicted_sign",
    "observed_sign",
    "run_records",
    "sweep_runs",
    "update_coefficients",
]

#: The sampled estimator of the sweep: PKPO with the `k-1`-subset baseline (wrong answers weigh 0).
ESTIMATOR = "pkpo-loo-1"
_HIST_BINS = 10


@dataclasses.dataclass(frozen=True)
class FamilySetting:
    """A task family and its warm starts.

    Attributes:
      family: the family's name.
      hard_fraction: the share of pairs with a hard prompt.
      sft_hard_fraction: the share of the hard prompts the warm starts see.
      sft_stage: steps per call of the supervised warm start. A warm start of `s` steps is `s /
        sft_stage` consecutive calls from the same initial parameters (fresh Adam moments at each
        call), so the warm starts of a family are points along one supervised run and share one
        compiled program.
      warm_start_steps: the warm starts' lengths, multiples of `sft_stage`.
    """

    family: str
    hard_fraction: float
    sft_hard_fraction: float
    sft_stage: int
    warm_start_steps: tuple


@dataclasses.dataclass(frozen=True)
class KSweepConfig:
    """All sizes of the study (see :func:`ksweep_config` for the two presets).

    Attributes:
      families: the :class:`FamilySetting` of each family.
      modulus, d_model, n_heads, n_layers, d_mlp: the task and model sizes (shared by the families).
      sft_batch_size, sft_learning_rate: the warm starts' batch and Adam step size.
      learning_rate: `eta`, the plain SGD step of fine-tuning.
      steps: `T`, fine-tuning steps per run.
      seeds: sampled runs per `(warm start, k)`.
      samples_per_k: answers per prompt `n = samples_per_k * K + 1` for the largest order `K`
        (at least `2 k* + 1` for every warm start).
      min_k_top: the largest `k` when no warm start conflicts (every grid reaches at least it).
      max_k: the largest `k` of any grid (a warm start with `2 k* > max_k` is swept up to `max_k`
        and says so).
      run_batch: runs per `vmap` batch (bounds memory).
    """

    families: tuple
    modulus: int
    d_model: int
    n_heads: int
    n_layers: int
    d_mlp: int
    sft_batch_size: int
    sft_learning_rate: float
    learning_rate: float
    steps: int
    seeds: int
    samples_per_k: int = 4
    min_k_top: int = 8
    max_k: int = 24
    run_batch: int = 64


def ksweep_config(quick: bool) -> KSweepConfig:
    """The full preset or the quick one (the one the tests run).

    Full: the confirmation's model and task size (`M = 11`, width 64, two layers; 242 exceptions
    prompts, 133 rare-rule prompts) and warm-start recipe (Adam, batch 64, step `3e-3`), `T = 4`
    steps of SGD at `eta = 1`, 5 seeds. Exceptions: a quarter of the pairs hard, 20% of them
    seen, warm starts of 20, 40, 60 steps. Rare rule: `q = 0.1`, 30% of the `KEEP` prompts seen,
    warm starts of 20, 30, 70 steps (in calls of 10).

    Quick: `M = 7`, one layer of width 32, `T = 3` steps at `eta = 0.3`, 3 seeds. Exceptions: half
    of the hard prompts seen, warm starts of 40, 80, 100 steps; rare rule: `q = 0.2`, 30% seen,
    warm starts of 30, 50, 70 steps (in calls of 10).

    The warm starts' lengths were chosen, for the key `jax.random.key(0)`, so that `k*` differs
    between them and their gradients have not vanished. `k*` moves erratically along supervised
    training (a few hard prompts at the smallest `p` decide it), so another key gives other values.
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool; got {quick!r}")
    if quick:
        families = (
            FamilySetting("exceptions", 0.25, 0.5, 20, (40, 80, 100)),
            FamilySetting("rare-rule", 0.2, 0.3, 10, (30, 50, 70)),
        )
        return KSweepConfig(families=families, modulus=7, d_model=32, n_heads=2, n_layers=1, d_mlp=64,
                            sft_batch_size=64, sft_learning_rate=3e-3, learning_rate=0.3, steps=3, seeds=3, max_k=16)
    families = (
        FamilySetting("exceptions", 0.25, 0.2, 20, (20, 40, 60)),
        FamilySetting("rare-rule", 0.1, 0.3, 10, (20, 30, 70)),
    )
    return KSweepConfig(families=families, modulus=11, d_model=64, n_heads=4, n_layers=2, d_mlp=128,
                        sft_batch_size=64, sft_learning_rate=3e-3, learning_rate=1.0, steps=4, seeds=5)


def predicted_sign(k: int, k_star) -> int:
    """The sign of `I_k` at the start that `k*` predicts: `-1` if `k >= k*`, else `+1` (`k*` None: `+1`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k_star is not None and (isinstance(k_star, bool) or not isinstance(k_star, (int, np.integer)) or k_star < 1):
        raise ValueError(f"k_star must be None or an integer >= 1; got {k_star!r}")
    return -1 if k_star is not None and k >= k_star else 1


def observed_sign(interval: dict) -> int:
    """The sign of a mean with an interval: 0 when the interval contains 0, else the mean's sign."""
    lower, upper = float(interval["lower"]), float(interval["upper"])
    if lower <= 0.0 <= upper:
        return 0
    return 1 if lower > 0 else -1


def update_coefficients(p, rewards, k, exact):
    """The coefficient `c_i` of `grad log p_i` in the update `u = sum_i mu_i c_i grad log p_i`.

    Exact: `grad J_k = sum_i mu_i w_k(p_i) grad p_i = sum_i mu_i w_k(p_i) p_i grad log p_i`, so
    `c_i = w_k(p_i) p_i`. Sampled PKPO (`"pkpo-loo-1"`): a wrong answer weighs exactly 0 and every
    correct one has the score `grad log p_i`, so `c_i = sum_j s_ij r_ij` with
    `s = pkpo_weights(r, k, baseline="loo-1")`.

    Args:
      p: `(P,)` exact success.
      rewards: `(P, n)` binary rewards of `n` answers per prompt (unused where `exact`).
      k: the order (an integer, may be traced; `k <= n`).
      exact: a boolean (may be traced): the exact gradient instead of the sampled one.

    Returns:
      `(P,)` coefficients.
    """
    weights = theory.pkpo_weights(rewards, k, baseline="loo-1", binary=True)  # (P, n)
    sampled = jnp.sum(weights * rewards, axis=-1)  # (P,)
    return jnp.where(exact, theory.pass_at_k_weight(p, k) * p, sampled)


@functools.partial(jax.jit, static_argnames=("config", "n_samples", "steps"))
def _sweep(params, prompts, answers, mu, ks, keys, exact, learning_rate, *, config, n_samples, steps):
    """Runs laid out as `(batches, batch)`: `lax.map` over batches of `vmap`ped runs."""
    p_count = prompts.shape[0]
    log_p = lambda theta: jax.vmap(_exact.log_success, in_axes=(None, 0, 0, None))(theta, prompts, answers, config)

    def state(theta):
        """`p`, the reverse pass of `log p`, `g_1 = grad J_1` and the agreements at `theta`."""
        # One linearisation serves the reverse passes (its transpose) and the forward one: the
        # model is traced once per step, which keeps compilation short.
        logp, forward = jax.linearize(log_p, theta)  # (P,)
        vjp = jax.linear_transpose(forward, theta)
        p = jnp.exp(logp)
        (g1,) = vjp(mu * p)  # grad J_1 = sum_i mu_i p_i grad log p_i
        return p, vjp, g1, p * forward(g1)  # a_i = <grad p_i, grad J_1> = p_i <grad log p_i, g_1>

    def one_run(k, key, is_exact):
        def step(theta, t):
            p, vjp, g1, a = state(theta)
            rewards = (jax.random.uniform(jax.random.fold_in(key, t), (p_count, n_samples), p.dtype)
                       < p[:, None]).astype(p.dtype)  # r_ij ~ Bernoulli(p_i)
            (direction,) = vjp(mu * update_coefficients(p, rewards, k, is_exact))
            update = jax.tree_util.tree_map(lambda d: learning_rate * d, direction)
            # <g_1, u>: the first-order change of J_1 by this step
            return jax.tree_util.tree_map(jnp.add, theta, update), (p, a, _exact.tree_dot(g1, update))

        theta, (p, a, inner) = jax.lax.scan(step, params, jnp.arange(steps))
        p_end, _, _, a_end = state(theta)
        return jnp.concatenate([p, p_end[None]]), jnp.concatenate([a, a_end[None]]), inner

    return jax.lax.map(lambda batch: jax.vmap(one_run)(*batch), (ks, keys, exact))


def sweep_runs(params, prompts, answers, config, ks, keys, exact, *, learning_rate, n_samples, steps, mu=None,
               batch=64):
    """Plain-SGD fine-tuning runs from one starting point, all in one compiled program.

    Run `r` takes `steps` steps `theta <- theta + eta u` with
    `u = sum_i mu_i c_i grad log p_i` (:func:`update_coefficients`): the exact `grad J_k` where
    `exact[r]`, else sampled PKPO (`"pkpo-loo-1"`) from `n_samples` answers per prompt, drawn as
    `r_ij ~ Bernoulli(p_i)` with the key `fold_in(keys[r], t)` at step `t`.

    Args:
      params: the starting parameters (every run starts there).
      prompts, answers: `(P, 4)`, `(P, 2)` the population and its unique correct answers.
      config: the model config.
      ks: `(R,)` integer orders, `1 <= k <= n_samples`.
      keys: `(R,)` `jax.random` keys.
      exact: `(R,)` booleans.
      learning_rate: `eta > 0`.
      n_samples: `n`, answers per prompt.
      steps: `T >= 1`.
      mu: `(P,)` prompt weights (uniform when None); a prompt of weight 0 does not count (padding).
      batch: most runs per `vmap` batch (bounds memory); the runs are split into equal batches.

    Returns:
      A dict of numpy float64 arrays: `p` and `agreement` `(R, T + 1, P)`, the exact success and
      agreements `a_i = <grad p_i, grad J_1>` at `theta_0 .. theta_T`, and `update_inner` `(R, T)`,
      `<grad J_1(theta_t), theta_{t+1} - theta_t>`.
    """
    ks = np.asarray(ks)
    if ks.ndim != 1 or not np.issubdtype(ks.dtype, np.integer) or ks.min() < 1 or ks.max() > n_samples:
        raise ValueError(f"ks must be a 1-d integer array with 1 <= k <= n_samples = {n_samples}; got {ks!r}")
    for name, value in (("n_samples", n_samples), ("steps", steps), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    exact = np.asarray(exact, bool)
    if exact.shape != ks.shape or len(keys) != ks.shape[0]:
        raise ValueError(f"ks, keys and exact must have one entry per run; got shapes {ks.shape}, "
                         f"{np.shape(keys)}, {exact.shape}")
    p_count = np.shape(prompts)[0]
    mu = jnp.full((p_count,), 1.0 / p_count, jnp.float32) if mu is None else jnp.asarray(mu, jnp.float32)
    # Equal batches (a last, smaller batch would compile the step a second time): pad with copies of
    # the last run, whose results are dropped.
    runs = ks.shape[0]
    n_batches = -(-runs // batch)
    size = -(-runs // n_batches)
    pad = n_batches * size - runs
    layout = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]).reshape((n_batches, size) + x.shape[1:])
    p, a, inner = _sweep(params, jnp.asarray(prompts), jnp.asarray(answers), mu, layout(jnp.asarray(ks, jnp.int32)),
                         layout(keys), layout(jnp.asarray(exact)), jnp.float32(learning_rate), config=config,
                         n_samples=int(n_samples), steps=int(steps))
    unlayout = lambda x: np.asarray(x, np.float64).reshape((n_batches * size,) + x.shape[2:])[:runs]
    return {"p": unlayout(p), "agreement": unlayout(a), R.update_inner: unlayout(inner)}


def run_records(p, agreement, k, mu=None) -> dict:
    """What the study reads from one run at every step, from its exact `p` and agreements.

    `J_1 = sum_i mu_i p_i`, `J_k = sum_i mu_i (1 - (1 - p_i)^k)`, `A_k` (the sign of `I_k` at the
    run's own `k`, :func:`theory.weighted_mean_agreement`) and `k*` (:func:`theory.critical_k`,
    None for no conflict), in float64 as :func:`sim.transformer.exact.conflict_summary` at the
    warm start.

    Args:
      p, agreement: `(T + 1, P)` per step.
      k: the run's order.
      mu: `(P,)` prompt weights, uniform when None.

    Returns:
      `{"j1", "jk", "mean_agreement"}` (:data:`sim.records.RECORD_NAMES`) as `(T + 1,)` float
      arrays and `"k_star"` as a list of int or None.
    """
    p, agreement = np.asarray(p, np.float64), np.asarray(agreement, np.float64)
    weights = np.full(p.shape[-1], 1.0 / p.shape[-1]) if mu is None else np.asarray(mu, np.float64)
    return {
        R.j1: p @ weights,
        R.jk: np.asarray(theory.pass_at_k(p, k)) @ weights,
        R.mean_agreement: np.asarray(theory.weighted_mean_agreement(p, agreement, k, weights)),
        R.k_star: [theory.critical_k(pt, at, weights) for pt, at in zip(p, agreement)],
    }


_agreement_jvp = jax.jit(_exact.agreement_jvp, static_argnums=3, static_argnames=("subset", "chunk_size"))


def _check_key(key):
    arr = key if isinstance(key, jax.Array) else None
    typed = arr is not None and jnp.issubdtype(arr.dtype, jax.dtypes.prng_key) and arr.shape == ()
    raw = arr is not None and arr.dtype == jnp.uint32 and arr.shape == (2,)
    if not (typed or raw):
        raise TypeError(f"key must be one jax.random key (jax.random.key(seed)); got {key!r}")


def _check_families(families):
    if isinstance(families, str) or not isinstance(families, (tuple, list)) or not families:
        raise TypeError(f"families must be a non-empty tuple of names from {_families.FAMILIES}; got {families!r}")
    for name in families:
        if not isinstance(name, str) or name not in _families.FAMILIES:
            raise ValueError(f"families must name task families from {_families.FAMILIES}; got {name!r}")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat a name; got {families!r}")
    return tuple(families)


def _histogram(p, is_hard):
    edges = np.linspace(0.0, 1.0, _HIST_BINS + 1)
    return {
        "edges": _floats(edges),
        "hard": [int(c) for c in np.histogram(p[is_hard], edges)[0]],
        "easy": [int(c) for c in np.histogram(p[~is_hard], edges)[0]],
    }


def _explain(predicted, observed, k, change, runs, exact_agrees=None):
    """Why the observed sign of a pass@1 change departs from the prediction, from the records.

    `runs`: the records (:func:`run_records` plus `update_inner`) of the runs behind the change.
    In each run the step `t` that moved pass@1 furthest the observed way is classified by what the
    records say at `theta_t`:

    - `"k* moved"`: `I_k` at this `k` already had the observed sign at `theta_t`, `t >= 1`: `k*`
      moved past `k` along the trajectory;
    - `"several crossings"`: the same at `t = 0`: the prediction from `k*` and the sign of `I_k`
      at the start differ, which happens only when `I_k` changes sign more than once in `k`;
    - `"sampled update"`: `I_k` had the predicted sign but the update taken did not
      (`<g_1, u_t>` has the observed sign): the sampled estimate, not the expected update, decided;
    - `"step too large"`: both had the predicted sign, yet pass@1 moved the other way: the step was
      too large for the first-order prediction (second-order terms won).

    Returns one sentence naming the classes with their shares of runs, plus, for sampled runs
    whose exact-gradient twin moved as predicted, that fact.
    """
    classes, where = [], []
    for r in runs:
        deltas = np.diff(r[R.j1])  # (T,)
        t = int(np.argmax(observed * deltas))  # the step that moved pass@1 furthest the observed way
        if np.sign(r[R.mean_agreement][t]) == observed:
            classes.append("k* moved" if t > 0 else "several crossings")
        elif np.sign(r[R.update_inner][t]) == observed:
            classes.append("sampled update")
        else:
            classes.append("step too large")
        where.append(t)
    words = {
        "k* moved": "k* moved past k along the trajectory (I_k at k = {k} had the sign {obs:+d} at step {t}; "
                    "k*_t = {path})",
        "several crossings": "I_k changes sign more than once in k: at the start it already had the sign {obs:+d} "
                             "at k = {k}",
        "sampled update": "the sampled update pointed against the prediction (<g_1, u_t> had the sign {obs:+d} at "
                          "step {t} while I_k had the predicted sign)",
        "step too large": "the step was too large for the first-order prediction (at step {t} both I_k and "
                          "<g_1, u_t> had the predicted sign, pass@1 moved the other way)",
    }
    parts = []
    for name in dict.fromkeys(classes):
        i = classes.index(name)
        share = classes.count(name) / len(classes)
        path = ", ".join(str(v) for v in runs[i][R.k_star])
        parts.append(words[name].format(k=k, obs=observed, t=where[i], path=path) + f" [{share:.0%} of runs]")
    if exact_agrees:
        parts.append("the exact-gradient run at this k moved pass@1 as predicted")
    return f"pass@1 changed by {change:+.2e}: " + "; ".join(parts)


def _verdict(predicted, observed):
    return "inconclusive" if observed == 0 else ("agree" if observed == predicted else "disagree")


def _rows_for(family, ws_name, k_star, ks, seeds, out, n_samples, summary, mu):
    """The table rows of one warm start from its runs (per `k`: `seeds` sampled runs, then the exact one)."""
    rows = []
    n_runs_k = seeds + 1
    a_start = dict(zip(summary["ks"], summary[R.mean_agreement]))
    for index, k in enumerate(ks):
        runs = []
        for r in range(index * n_runs_k, (index + 1) * n_runs_k):
            record = run_records(out["p"][r], out["agreement"][r], int(k), mu)
            record[R.update_inner] = out[R.update_inner][r]
            runs.append(record)
        sampled, exact = runs[:seeds], runs[seeds]
        change = np.asarray([r[R.j1][-1] - r[R.j1][0] for r in sampled])
        interval = mean_interval(change)
        exact_change = float(exact[R.j1][-1] - exact[R.j1][0])
        pred = predicted_sign(int(k), k_star)
        obs, exact_obs = observed_sign(interval), int(np.sign(exact_change))
        row = {
            "task": family,
            "warm_start": ws_name,
            "k_star": k_star,
            "k": int(k),
            "seeds": list(range(seeds)),
            "pass1_change": interval,
            "predicted_sign": pred,
            "observed_sign": obs,
            "verdict": _verdict(pred, obs),
            "explanation": None,
            "n_samples": int(n_samples),
            "mean_agreement_start": float(a_start[int(k)]),
            "pass1_change_per_seed": _floats(change),
            "pass1_mean": _floats(np.mean([r[R.j1] for r in sampled], axis=0)),
            "passk_mean": _floats(np.mean([r[R.jk] for r in sampled], axis=0)),
            "first_order_change": float(np.mean([np.sum(r[R.update_inner]) for r in sampled])),
            "k_star_after": [r[R.k_star][-1] for r in sampled],
            "k_star_path": [r[R.k_star] for r in sampled],
            "exact_pass1_change": exact_change,
            "exact_observed_sign": exact_obs,
            "exact_verdict": _verdict(pred, exact_obs),
            "exact_explanation": None,
            "exact_pass1": _floats(exact[R.j1]),
            "exact_passk": _floats(exact[R.jk]),
            "exact_first_order_change": float(np.sum(exact[R.update_inner])),
            "exact_k_star_path": exact[R.k_star],
            "exact_k_star_after": exact[R.k_star][-1],
        }
        if row["verdict"] == "inconclusive":
            row["explanation"] = (
                f"within noise: the 95% interval over {seeds} seeds, "
                f"[{interval['lower']:.2e}, {interval['upper']:.2e}], "
                f"contains 0 (A_k at the start {row['mean_agreement_start']:.2e})"
            )
        elif row["verdict"] == "disagree":
            row["explanation"] = _explain(pred, obs, int(k), interval["value"], sampled,
                                          exact_agrees=row["exact_verdict"] == "agree")
        if row["exact_verdict"] == "inconclusive":
            row["exact_explanation"] = "pass@1 did not change in float32 (the exact gradient vanishes)"
        elif row["exact_verdict"] == "disagree":
            row["exact_explanation"] = _explain(pred, exact_obs, int(k), exact_change, [exact])
        rows.append(row)
    return rows


def _summary(rows):
    def counts(selected, field="verdict"):
        out = {"agree": 0, "disagree": 0, "inconclusive": 0}
        for row in selected:
            out[row[field]] += 1
        out["rows"] = len(selected)
        return out

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    return {
        "counts": counts(rows),
        "by_task": {task: counts([r for r in rows if r["task"] == task]) for task in tasks},
        "exact_counts": counts(rows, "exact_verdict"),
        "exact_by_task": {task: counts([r for r in rows if r["task"] == task], "exact_verdict") for task in tasks},
        "disagreements": [
            {name: row[name] for name in ("task", "warm_start", "k_star", "k", "pass1_change", "exact_pass1_change",
                                          "k_star_after", "explanation")}
            for row in rows if row["verdict"] == "disagree"
        ],
        "exact_disagreements": [
            {name: row[name] for name in ("task", "warm_start", "k_star", "k", "exact_pass1_change",
                                          "exact_k_star_after", "exact_explanation")}
            for row in rows if row["exact_verdict"] == "disagree"
        ],
    }


def _pad(task, size):
    """The population padded to `size` prompts with weight-0 copies of its first prompt, so that
    every family runs through the same compiled programs; returns `(prompts, answers, mu)`."""
    n = task.prompts.shape[0]
    extra = size - n
    prompts = np.concatenate([task.prompts, np.repeat(task.prompts[:1], extra, axis=0)])
    answers = np.concatenate([task.answers, np.repeat(task.answers[:1], extra, axis=0)])
    mu = np.concatenate([np.full(n, 1.0 / n), np.zeros(extra)])
    return prompts, answers, mu


def _warm_starts(task, mcfg, cfg: KSweepConfig, setting: FamilySetting, *, k_init, k_sft):
    """The family's warm starts: one supervised run from `init(k_init)`, in calls of `setting.sft_stage`
    steps (call `c` with the key `fold_in(k_sft, c)`), read after each length of
    `setting.warm_start_steps`. Returns `[(steps, params, losses)]` by increasing steps."""
    stage = setting.sft_stage
    sft = _train.SFTConfig(steps=stage, batch_size=cfg.sft_batch_size, learning_rate=cfg.sft_learning_rate,
                           checkpoint_every=stage)
    prompts, answers = task.prompts[task.sft_index], task.answers[task.sft_index]
    params, losses, done, out = _model.init(k_init, mcfg), [], 0, []
    for steps in sorted(setting.warm_start_steps):
        while done < steps:
            params, loss = _train.supervised_warm_start(params, prompts, answers, mcfg, sft,
                                                        key=jax.random.fold_in(k_sft, done // stage))
            losses.append(np.asarray(loss))
            done += stage
        out.append((steps, params, np.concatenate(losses)))
    return out


def _check_config(cfg: KSweepConfig):
    for setting in cfg.families:
        steps = setting.warm_start_steps
        if len(set(steps)) != len(steps) or any(s < 1 or s % setting.sft_stage for s in steps):
            raise ValueError(f"warm_start_steps of {setting.family!r} must be distinct positive multiples of "
                             f"sft_stage = {setting.sft_stage}; got {steps!r}")


def ksweep_study(*, quick: bool, key, families=_families.FAMILIES,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Fine-tune through the crossing at every `k` for each task family and warm start.

    Args:
      quick: the quick preset (what the tests run) instead of the full one (:func:`ksweep_config`).
      key: a `jax.random` key; the same key gives the same numbers. Family `f` (its index in
        :data:`sim.transformer.task_families.FAMILIES`) uses `fold_in(key, f)`, split into the
        population's key, the model's initial parameters, the warm starts' key and the runs' key:
        a family's warm starts share the population and the initial parameters and differ in
        their number of supervised steps.
      families: names of the families to run (a subset of `FAMILIES`).
      progress: optional callable receiving one status line at a time.

    Returns:
      A JSON-serialisable dict: `k_sweep` (the table: one row per family, warm start and `k`, with
      `task`, `warm_start`, `k_star`, `k`, `seeds`, `pass1_change` (a :func:`mean_interval` dict),
      `predicted_sign`, `observed_sign`, `verdict`, `explanation`, and the records behind them:
      `k_star_after`, `first_order_change`, the exact run's change, mean trajectories), `summary`
      (agree / disagree / inconclusive counts, overall and per family, the exact runs' counts,
      each disagreement with its explanation), `warm_starts` (per family and warm start: `k*`,
      the last-layer proxy's `k*` and its sign agreement, `I_k`, `A_k` on the `k` grid, pass@1,
      a histogram of `p` for hard and easy prompts, the share of hard prompts with negative
      agreement), `families` (population sizes), `ks`, `n_samples`, `settings` and `runtime_s`.
    """
    cfg = ksweep_config(quick)
    _check_key(key)
    families = _check_families(families)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None; got {progress!r}")
    _check_config(cfg)
    say = progress if progress is not None else (lambda line: None)
    start = time.perf_counter()
    settings = {s.family: s for s in cfg.families}

    # 1. Populations and warm starts, k* at each (agreements by JVP, k* by conflict_summary).
    built = {}
    for family in families:
        setting = settings[family]
        k_task, k_init, k_sft, k_runs = jax.random.split(jax.random.fold_in(key, _families.FAMILIES.index(family)), 4)
        task = _families.make_family_task(family, modulus=cfg.modulus, hard_fraction=setting.hard_fraction,
                                          sft_hard_fraction=setting.sft_hard_fraction, key=k_task)
        built[family] = (task, k_init, k_sft, k_runs)
    size = max(t.prompts.shape[0] for t, *_ in built.values())
    first = next(iter(built.values()))[0]
    mcfg = _model.ModelConfig(vocab_size=first.vocab_size, max_len=first.seq_len, d_model=cfg.d_model,
                              n_heads=cfg.n_heads, n_layers=cfg.n_layers, d_mlp=cfg.d_mlp)
    starts = []
    for family, (task, k_init, k_sft, k_runs) in built.items():
        prompts, answers, mu = _pad(task, size)
        for steps, params, losses in _warm_starts(task, mcfg, cfg, settings[family], k_init=k_init, k_sft=k_sft):
            # Full float32 products (GPUs default to TF32), as the confirmation.
            with jax.default_matmul_precision("float32"):
                agree, p, _ = _agreement_jvp(params, jnp.asarray(prompts), jnp.asarray(answers), mcfg,
                                             jnp.asarray(mu, jnp.float32))
                # the last-layer proxy of the same agreements (output head only)
                agree_ll, _, _ = _agreement_jvp(params, jnp.asarray(prompts), jnp.asarray(answers), mcfg,
                                                jnp.asarray(mu, jnp.float32), subset=_model.LAST_LAYER)
            agree, p = np.asarray(agree, np.float64), np.asarray(p, np.float64)
            agree_ll = np.asarray(agree_ll, np.float64)
            # k*, I_k, A_k in float64 whatever the global setting (the model itself is float32)
            with jax.enable_x64(True):
                summary = _exact.conflict_summary(p, agree, tuple(range(1, cfg.max_k + 1)), mu)
                summary["last_layer_k_star"] = _exact.conflict_summary(p, agree_ll, (1,), mu)["k_star"]
            real = mu > 0
            summary["last_layer_sign_right"] = wilson_interval(
                int(np.sum(np.sign(agree_ll[real]) == np.sign(agree[real]))), int(real.sum()))
            k_star = summary["k_star"]
            starts.append((family, steps, params, losses, p, agree, summary))
            say(f"{family}, warm start of {steps} steps: pass@1 {p[mu > 0].mean():.3f}, k* {k_star} "
                f"[{time.perf_counter() - start:.0f} s]")

    # 2. One k grid for all: every k up to 2 k* of every warm start (within max_k), n = K + 1.
    k_top = min(cfg.max_k, max([cfg.min_k_top] + [2 * s[-1]["k_star"] for s in starts if s[-1]["k_star"] is not None]))
    ks = tuple(range(1, k_top + 1))
    n_samples = cfg.samples_per_k * k_top + 1  # >= 2 k* + 1 for every covered warm start; PKPO needs k <= n
    n_runs_k = cfg.seeds + 1  # the sampled seeds, then the exact run
    run_ks = np.repeat(np.asarray(ks), n_runs_k)
    run_exact = np.tile(np.arange(n_runs_k) == cfg.seeds, len(ks))

    # 3. The runs of every warm start (one compiled program for all), and the table.
    rows, warm_out = [], []
    for family, steps, params, losses, p, agree, summary in starts:
        k_star = summary["k_star"]
        task, _, _, k_runs = built[family]
        prompts, answers, mu = _pad(task, size)
        t_runs = time.perf_counter()
        base = jax.random.fold_in(k_runs, steps)
        # seed s at order k: the same key whatever the other orders and seeds run
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, int(k)), s) for k in ks for s in range(n_runs_k)])
        out = sweep_runs(params, prompts, answers, mcfg, run_ks, keys, run_exact, learning_rate=cfg.learning_rate,
                         n_samples=n_samples, steps=cfg.steps, mu=mu, batch=cfg.run_batch)
        name = f"{steps} steps"
        with jax.enable_x64(True):
            ws_rows = _rows_for(family, name, k_star, ks, cfg.seeds, out, n_samples, summary, mu)
        rows.extend(ws_rows)
        real = mu > 0
        hard = np.asarray(task.is_hard, bool)
        p_real, a_real = p[real], agree[real]
        warm_out.append({
            "task": family, "warm_start": name, "sft_steps": steps, "k_star": k_star,
            "k_covers_2k_star": k_star is None or 2 * k_star <= k_top,
            "last_layer_k_star": summary["last_layer_k_star"],
            "last_layer_sign_right": summary["last_layer_sign_right"],
            "pass1": float(p_real.mean()), R.inner: summary[R.inner][:k_top],
            R.mean_agreement: summary[R.mean_agreement][:k_top],
            "p_histogram": _histogram(p_real, hard),
            "hard_mean_p": float(p_real[hard].mean()), "easy_mean_p": float(p_real[~hard].mean()),
            "hard_negative_agreement_share": float(np.mean(a_real[hard] < 0)),
            "easy_negative_agreement_share": float(np.mean(a_real[~hard] < 0)),
            "sft_loss": _floats(losses),
        })
        counts = {v: sum(r["verdict"] == v for r in ws_rows) for v in ("agree", "disagree", "inconclusive")}
        say(f"{family}, {name}: {len(run_ks)} runs in {time.perf_counter() - t_runs:.1f} s; {counts}")
    family_out = {
        family: {"n_prompts": int(task.prompts.shape[0]), "n_hard": int(task.is_hard.sum()),
                 "n_sft_prompts": int(task.sft_index.size), "hard_fraction": settings[family].hard_fraction,
                 "sft_hard_fraction": settings[family].sft_hard_fraction}
        for family, (task, *_rest) in built.items()
    }
    return {
        "quick": quick,
        "k_sweep": rows,
        "summary": _summary(rows),
        "warm_starts": warm_out,
        "families": family_out,
        "ks": list(ks),
        "n_samples": n_samples,
        "n_params": _model.param_count(starts[0][2]),
        "settings": {
            **{name: value for name, value in dataclasses.asdict(cfg).items() if name != "families"},
            "families": [{**dataclasses.asdict(s), "warm_start_steps": list(s.warm_start_steps)}
                         for s in cfg.families if s.family in families],
            "estimator": ESTIMATOR,
            "optimizer": "sgd",
            "level": 0.95,
        },
        "runtime_s": time.perf_counter() - start,
    }
