"""`bandit-sweep`: exact-gradient pass@k training of softmax bandits, many configurations at once.

Measured: :func:`sim.train_sweep` (rule `"passk"`, estimator `"exact"`, plain SGD) over a sweep of
`R` bandit draws (the regime axis, one per seed) times `K` pass@k orders, each run `steps` steps
with every per-step record (`j1`, `jk`, `inner`, `mean_agreement`, `cos`, `k_star`,
`update_inner`, `update_norm`, `k_used`) -- one compiled call. A second row times the same sweep
with `record_every=N`: the diagnostics (`inner`, `mean_agreement`, `cos`, `k_star`) every `N`
steps, the rest at every step, against the baseline recording exactly the same.

Baseline: :func:`numpy_train`, the same math in plain numpy, one configuration after another, each
step vectorised over prompts (answers on the leading axis, prompts contiguous: the faster of the two
numpy layouts). `k*` is the first `t` in `[0, k_max)` with `sum_i c_i (1-p_i)^t < 0`, decided in
log space like :func:`theory.critical_k_jax`, but by evaluating every `t` at once (vectorised over
`t`; the depth-first search of `theory` is sequential and would put a Python loop in the baseline).

Floors (:func:`step_floor`, measured in the same run): the same steps with only their compulsory
work as one XLA program, and the operation count at this machine's measured matrix-product and
exponential rates. `ratio_ceiling` divides the baseline's time by each: no implementation of the
same math on this machine can reach a ratio above the hardware one.

The bandit: `P` prompts with Gaussian features `psi ~ N(0, I_d / d)`, one correct answer out of `A`
per prompt (uniform), uniform `mu`, start `theta0 = 0` (every `p_i = 1/A`).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import theory
from passk.benchmarks._timing import interleaved
from sim.bandit import SoftmaxBandit, prompts_last, pullback, success_parts

__all__ = ["make_bandits", "numpy_train", "numpy_sweep", "run_sweep", "step_floor", "RECORDS", "bench"]

RECORDS = ("j1", "jk", "inner", "mean_agreement", "cos", "k_star", "update_inner", "update_norm", "k_used")


def make_bandits(key, *, n_regimes: int, n_prompts: int, n_actions: int, dim: int, dtype=jnp.float32):
    """`n_regimes` random bandits stacked on a leading regime axis, and their starts `(R, A, d)`."""

    def one(k):
        k_feat, k_ans = jax.random.split(k)
        feats = jax.random.normal(k_feat, (n_prompts, dim), dtype) * (1.0 / math.sqrt(dim))  # keeps dtype
        rewards = jax.nn.one_hot(jax.random.randint(k_ans, (n_prompts,), 0, n_actions), n_actions, dtype=dtype)
        return feats, rewards

    feats, rewards = jax.vmap(one)(jax.random.split(key, n_regimes))
    mu = jnp.full((n_regimes, n_prompts), 1.0 / n_prompts, dtype)
    # Built leaf by leaf: the stacked fields carry a regime axis the constructor does not accept.
    bandits = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(SoftmaxBandit(jnp.zeros((1, 1), dtype), jnp.zeros((1, 1), dtype))),
        [feats, rewards, mu],
    )
    theta0s = jnp.zeros((n_regimes, n_actions, dim), dtype)
    return bandits, theta0s


# --------------------------------------------------------------------------- numpy reference


def _log1mp_power(log1mp, t):
    # t log(1-p) with (1-p)^0 = 1 also at p = 1 (no 0 * -inf).
    return np.where(t == 0, 0.0, t * log1mp).astype(log1mp.dtype)


def _logsumexp_masked(vals):
    """log sum exp over the last axis; -inf for an all -inf row."""
    top = np.max(vals, axis=-1, keepdims=True)
    safe = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(divide="ignore"):
        out = safe[..., 0] + np.log(np.sum(np.exp(vals - safe), axis=-1))
    return np.where(np.isneginf(top[..., 0]), -np.inf, out)


def _k_star(p, c, k_max: int, dtype):
    """First `k` in `[1, k_max]` with `I_k < 0` (log-space comparison), `k_max + 1` when none."""
    t = np.arange(k_max, dtype=dtype)[:, None]
    with np.errstate(divide="ignore"):
        log1mp = np.log1p(-p)
        log_abs_c = np.log(np.where(c != 0, np.abs(c), 1.0)).astype(dtype)
    terms = log_abs_c + _log1mp_power(log1mp, t)  # (k_max, P)
    pos = _logsumexp_masked(np.where(c > 0, terms, -np.inf))
    neg = _logsumexp_masked(np.where(c < 0, terms, -np.inf))
    hit = np.flatnonzero(neg > pos)
    return int(hit[0]) + 1 if hit.size else k_max + 1


def _core_prompts_fast(f_t, r_t, theta, mu, dtype, with_agreement=True):
    """`p`, `a` (None unless `with_agreement`), `grad J_1` and the map `weights -> sum_i weights_i
    grad p_i`, with prompts on the fast axis."""
    logits = theta @ f_t  # (A, P)
    e = np.exp(logits - logits.max(axis=0))
    pi = e / e.sum(axis=0)
    p = np.minimum(np.sum(pi * r_t, axis=0), dtype.type(1))  # (P,)
    dlog = pi * (r_t - p)  # (A, P): d p_i / d logits_i
    grad = lambda weights: (dlog * weights) @ f_t.T  # noqa: E731  (A, d): J^T weights
    g1 = grad(mu)
    a = np.sum(dlog * (g1 @ f_t), axis=0) if with_agreement else None  # (P,): a = J g1
    return p, a, g1, grad


def _core_prompts_slow(f, r, theta, mu, dtype, with_agreement=True):
    """As :func:`_core_prompts_fast` in the layout of the formulas: `(P, A)` logits."""
    logits = f @ theta.T  # (P, A)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    p = np.minimum(np.sum(pi * r, axis=1), dtype.type(1))
    dlog = pi * (r - p[:, None])
    grad = lambda weights: (dlog * weights[:, None]).T @ f  # noqa: E731
    g1 = grad(mu)
    a = np.sum(dlog * (f @ g1.T), axis=1) if with_agreement else None
    return p, a, g1, grad


def numpy_train(
    features,
    rewards,
    mu,
    theta0,
    *,
    k: int,
    steps: int,
    learning_rate: float,
    k_max: int,
    prompts_fast: bool = True,
    record_every: int = 1,
):
    """Exact pass@k training of one bandit by SGD, with the records of :func:`sim.train_sweep`.

    Args:
      features: `(P, d)`; rewards: `(P, A)`; mu: `(P,)`; theta0: `(A, d)` (numpy, one dtype).
      k: pass@k order; steps: number of updates; learning_rate: SGD step; k_max: `k*` search limit.
      prompts_fast: lay arrays out `(A, P)` (prompts contiguous, the faster numpy layout) rather
        than `(P, A)` as the formulas are written.
      record_every: as in :func:`sim.train_sweep`: the diagnostics (`inner`, `mean_agreement`,
        `cos`, `k_star`) at steps `0, N, 2N, ...` and the last state only (NaN, `k_star = -1`
        elsewhere); the steps in between compute `p`, `grad J_1`, `grad J_k`, `J_1` and `J_k`.

    Returns:
      A dict of numpy arrays: state records `(steps + 1,)`, update records `(steps,)`, `theta`.
    """
    dtype = np.asarray(features).dtype
    if prompts_fast:
        f_arr = np.ascontiguousarray(np.asarray(features).T)  # (d, P)
        r_arr = np.ascontiguousarray(np.asarray(rewards, dtype).T)  # (A, P)
        core = _core_prompts_fast
    else:
        f_arr, r_arr, core = np.asarray(features), np.asarray(rewards, dtype), _core_prompts_slow
    mu = np.asarray(mu, dtype)
    theta = np.array(theta0, dtype=dtype)
    lr = dtype.type(learning_rate)
    kf = dtype.type(k)
    nan = dtype.type(np.nan)
    with np.errstate(divide="ignore"):
        log_mu = np.where(mu > 0, np.log(np.where(mu > 0, mu, 1.0)), -np.inf).astype(dtype)
    state = {name: [] for name in ("j1", "jk", "inner", "mean_agreement", "cos", "k_star")}
    upd = {name: [] for name in ("update_inner", "update_norm", "k_used")}

    def evaluate(theta, full):
        p, a, g1, grad = core(f_arr, r_arr, theta, mu, dtype, with_agreement=full)
        with np.errstate(divide="ignore"):
            log1mp = np.log1p(-p)
        tk = _log1mp_power(log1mp, kf - 1)
        w = kf * np.exp(tk)  # pass@k weight w_k(p)
        state["j1"].append(np.sum(mu * p))
        state["jk"].append(np.sum(mu * -np.expm1(_log1mp_power(log1mp, kf))))
        if full:
            logits_w = log_mu + tk  # normalised weights omega in log space (never underflow)
            omega = np.exp(logits_w - logits_w.max())
            omega /= omega.sum()
            gk_dir = grad(omega)
            norms = np.linalg.norm(gk_dir) * np.linalg.norm(g1)
            cos = np.vdot(gk_dir, g1) / norms if norms > 0 else dtype.type(0)
            state["inner"].append(np.sum(mu * w * a))
            state["mean_agreement"].append(np.sum(omega * a))
            state["cos"].append(cos)
            state["k_star"].append(_k_star(p, mu * a, k_max, dtype))
        else:
            for name in ("inner", "mean_agreement", "cos"):
                state[name].append(nan)
            state["k_star"].append(-1)
        return g1, grad(mu * w)  # grad J_1, grad J_k

    for t in range(steps):
        g1, gk = evaluate(theta, t % record_every == 0)
        update = lr * gk  # SGD ascent on J_k
        theta = theta + update
        upd["update_inner"].append(np.vdot(g1, update))
        upd["update_norm"].append(np.linalg.norm(update))
        upd["k_used"].append(k)
    evaluate(theta, True)
    out = {name: np.asarray(v) for name, v in {**state, **upd}.items()}
    out["k_star"] = out["k_star"].astype(np.int64)
    out["theta"] = theta
    return out


def numpy_sweep(
    bandits,
    theta0s,
    *,
    ks,
    steps: int,
    learning_rate: float,
    k_max: int,
    prompts_fast: bool = True,
    record_every: int = 1,
) -> dict:
    """:func:`numpy_train` for every (regime, k), one after another; arrays shaped `(R, K, ...)`."""
    feats, rewards, mu = (np.asarray(x) for x in jax.tree_util.tree_leaves(bandits))
    theta0s = np.asarray(theta0s)
    runs = [
        [
            numpy_train(
                feats[r],
                rewards[r],
                mu[r],
                theta0s[r],
                k=int(k),
                steps=steps,
                learning_rate=learning_rate,
                k_max=k_max,
                prompts_fast=prompts_fast,
                record_every=record_every,
            )
            for k in ks
        ]
        for r in range(feats.shape[0])
    ]
    return {name: np.stack([np.stack([run[name] for run in row]) for row in runs]) for name in runs[0][0]}


# --------------------------------------------------------------------------- benchmark


#: Full and quick sizes. `k_max` bounds the per-step `k*` search of the records (see README);
#: `record_every` lists the variants timed: diagnostics at every step, and every N steps.
FULL = dict(
    n_prompts=4096,
    n_actions=4,
    dim=8,
    n_regimes=8,
    ks=(1, 2, 3, 4, 6, 8, 12, 16),
    steps=500,
    k_max=16,
    learning_rate=1.0,
    repeats=2,
    record_every=(1, 50),
)
#: Targets on `ours_s / hardware_s` by `record_every`: every diagnostic at every step, and every 50
#: steps (10 at the quick size).
FLOOR_TARGETS = {1: 6, 50: 3, 10: 3}
QUICK = dict(
    n_prompts=1024,
    n_actions=4,
    dim=8,
    n_regimes=2,
    ks=(1, 2, 4, 8),
    steps=50,
    k_max=8,
    learning_rate=1.0,
    repeats=2,
    record_every=(1, 10),
)


def run_sweep(
    bandits, theta0s, *, ks, steps: int, k_max: int, learning_rate: float, devices=None, record_every: int = 1
) -> dict:
    """The measured call: :func:`sim.train_sweep` (exact pass@k ascent by SGD, one key)."""
    from sim.train import train_sweep

    return train_sweep(
        bandits,
        theta0s,
        ks=ks,
        keys=jax.random.split(jax.random.key(0), 1),
        steps=steps,
        rule="passk",
        estimator="exact",
        optimizer="sgd",
        learning_rate=learning_rate,
        k_max=k_max,
        record_every=record_every,
        devices=devices,
    )


def _minimal_run(lay, theta0, k, *, steps: int, learning_rate: float):
    """The compulsory work of exact pass@k SGD, nothing else, with the kernels of
    :func:`sim.train_sweep`: per step the logits and softmax (`success_parts`), `w_k(p)`, the
    two-row reverse product (`grad J_1`, `grad J_k`) and the update; no records, no `k*`."""
    mu = lay.prompt_weights

    def step(theta, _):
        p, dlogits = success_parts(lay, theta)
        grads = pullback(lay, dlogits, jnp.stack([mu, mu * theory.pass_at_k_weight(p, k)]))
        return theta + learning_rate * grads[1], jnp.vdot(grads[0], grads[1])

    return jax.lax.scan(step, theta0, None, length=steps)


def step_floor(bandits, theta0s, *, ks, steps: int, learning_rate: float, repeats: int) -> dict:
    """What the fastest implementation of the sweep could take on this machine, measured here
    (each time the best of several repeats: these are lower bounds).

    - `minimal_s`: :func:`_minimal_run` for all configurations, one jitted `lax.scan` doing only
      the compulsory work of each step (no records, no `k*`): the floor for an XLA program.
    - `hardware_s`: the floating-point operations of the two products per step at the best
      matrix-product rate measured here (a 1024 x 1024 float32 product), plus the exponentials and
      logarithms per step at the rate of XLA's `exp` (32 rounds over a vector of `2^20` entries in
      one jitted loop): the floor for any program that computes the same quantities with these
      kernels.
    """
    feats, rewards, _ = jax.tree_util.tree_leaves(bandits)
    n_regimes, n_prompts, dim = feats.shape
    n_actions = rewards.shape[-1]
    kvec = jnp.asarray(ks)
    n_configs = n_regimes * kvec.shape[0]
    run = functools.partial(_minimal_run, steps=steps, learning_rate=learning_rate)
    # configurations share their regime's bandit (as in train_sweep's blocks), regimes side by side
    minimal = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, None, 0)), in_axes=(0, 0, None)))
    args = (jax.vmap(prompts_last)(bandits), theta0s, kvec)
    square = jnp.ones((1024, 1024), feats.dtype)
    product = jax.jit(lambda a: a @ a)
    # Exponentials in a loop over one buffer: no dispatch or fresh output pages in the rate.
    logits = jnp.linspace(-3.0, 3.0, 1 << 20, dtype=feats.dtype)
    exp_rounds = 32
    exp = jax.jit(lambda x: jax.lax.fori_loop(0, exp_rounds, lambda i, y: jnp.exp(y * 0.5 - 1.0), x))
    for fn, a in ((minimal, args), (product, (square,)), (exp, (logits,))):
        jax.block_until_ready(fn(*a))  # compile
    med = interleaved(
        {
            "minimal": lambda: minimal(*args),
            "product": lambda: product(square),
            "exp": lambda: exp(logits),
        },
        max(repeats, 5),
        reduce=min,
    )  # floors: the best of the repeats
    flops = 6 * n_configs * n_actions * dim * n_prompts  # logits (2 CAdP) + two-row reverse (4 CAdP)
    transcendentals = n_configs * n_prompts * (n_actions + 2)  # softmax exps, log1p and exp of w_k
    flop_rate = 2 * 1024**3 / med["product"]
    exp_rate = exp_rounds * logits.size / med["exp"]
    return {
        "minimal_s": med["minimal"],
        "hardware_s": steps * (flops / flop_rate + transcendentals / exp_rate),
        "flops_per_step": flops,
        "transcendentals_per_step": transcendentals,
        "matmul_gflops": flop_rate / 1e9,
        "exp_per_s": exp_rate,
    }


def max_record_diff(ours: dict, ref: dict) -> dict:
    """Largest absolute difference of each float record (NaN where neither recorded), and the
    share of equal `k_star`."""
    out = {}
    for name in ("j1", "jk", "inner", "mean_agreement", "cos", "update_inner", "update_norm"):
        mine, theirs = np.asarray(ours[name])[:, :, 0], np.asarray(ref[name])
        if not np.array_equal(np.isnan(mine), np.isnan(theirs)):
            out[name] = float("inf")  # recorded at different steps
            continue
        out[name] = float(np.nanmax(np.abs(mine - theirs))) if np.any(~np.isnan(mine)) else 0.0
    out["k_star_equal_share"] = float(np.mean(np.asarray(ours["k_star"])[:, :, 0] == ref["k_star"]))
    return out


def bench(*, quick: bool, key, repeats: int | None = None) -> list[dict]:
    """`sim.train_sweep` against :func:`numpy_sweep` and against the hardware floor.

    One row per `record_every` variant: `bandit-sweep` (diagnostics at every step) and
    `bandit-sweep[record_every=N]` (diagnostics every `N` steps, `J_1`, `J_k` and the update
    records at every step), each against the numpy baseline doing the same records. The targets
    are on `ours_s / hardware_s` (:data:`FLOOR_TARGETS`); `ratio` against numpy is reported. The full
    run adds `profile`: the kernels' time per step by source line (:mod:`passk.benchmarks.profile`).
    """
    from passk.benchmarks._timing import CompileCounter, row

    cfg = dict(QUICK if quick else FULL)
    repeats = repeats or cfg["repeats"]
    bandits, theta0s = make_bandits(
        key, n_regimes=cfg["n_regimes"], n_prompts=cfg["n_prompts"], n_actions=cfg["n_actions"], dim=cfg["dim"]
    )
    kw = dict(ks=cfg["ks"], steps=cfg["steps"], k_max=cfg["k_max"], learning_rate=cfg["learning_rate"])
    n_configs = cfg["n_regimes"] * len(cfg["ks"])
    size = (
        f"P={cfg['n_prompts']} A={cfg['n_actions']} d={cfg['dim']}, {n_configs} configs "
        f"({cfg['n_regimes']} bandit seeds x {len(cfg['ks'])} k), {cfg['steps']} steps, "
        f"k_max={cfg['k_max']}, float32"
    )
    # Per configuration-step cost of the two numpy layouts, on one bandit draw and a tenth of the
    # steps (the slow layout over the whole sweep would dominate the run time).
    sub = jax.tree_util.tree_map(lambda x: x[:1], bandits), theta0s[:1]
    sub_kw = dict(kw, steps=max(cfg["steps"] // 10, 1))
    lay = interleaved(
        {
            "prompts_fast": lambda: numpy_sweep(*sub, **sub_kw, prompts_fast=True),
            "prompts_slow": lambda: numpy_sweep(*sub, **sub_kw, prompts_fast=False),
        },
        repeats,
    )
    per_step = len(cfg["ks"]) * (sub_kw["steps"] + 1)
    floor = step_floor(
        bandits, theta0s, ks=cfg["ks"], steps=cfg["steps"], learning_rate=cfg["learning_rate"], repeats=repeats
    )
    rows = []
    for every in cfg["record_every"]:
        ours = lambda every=every: run_sweep(bandits, theta0s, **kw, record_every=every)  # noqa: E731
        base = lambda every=every: numpy_sweep(bandits, theta0s, **kw, record_every=every)  # noqa: E731
        with CompileCounter() as first:
            start = time.perf_counter()
            out = ours()
            first_s = time.perf_counter() - start
        with CompileCounter() as again:
            med = interleaved({"ours": ours, "baseline": base}, repeats)
        ref = base()
        sweep_compiles = [n for n in first.names if "entry" in n]
        rows.append(
            row(
                "bandit-sweep" if every == 1 else f"bandit-sweep[record_every={every}]",
                med["ours"],
                med["baseline"],
                f"<= {FLOOR_TARGETS[every]}x the hardware floor",
                met=bool(med["ours"] / floor["hardware_s"] <= FLOOR_TARGETS[every]),
                ours_over_hardware=med["ours"] / floor["hardware_s"],
                ours_over_minimal=med["ours"] / floor["minimal_s"],
                compile_s=max(first_s - med["ours"], 0.0),
                first_call_s=first_s,
                compiles_first_call=len(sweep_compiles),
                compiles_later_calls=len([n for n in again.names if "entry" in n]),
                size=size,
                record_every=every,
                max_diff_vs_numpy=max_record_diff(out, ref),
                baseline_layouts={name: t / per_step for name, t in lay.items()},
                ours_per_config_step_s=med["ours"] / (n_configs * (cfg["steps"] + 1)),
                floor=floor,
                ratio_ceiling={
                    "minimal": med["baseline"] / floor["minimal_s"],
                    "hardware": med["baseline"] / floor["hardware_s"],
                },
                repeats=repeats,
                device=str(jax.devices()[0].platform),
                **({} if quick else {"profile": _profile_sources(every)}),
            )
        )
    return rows


def _profile_sources(every: int) -> list[dict]:
    """The largest source lines of :func:`passk.benchmarks.profile.bandit_sweep_profile` (ms per step)."""
    from passk.benchmarks.profile import bandit_sweep_profile

    return bandit_sweep_profile(quick=False, record_every=every)["sources"]
