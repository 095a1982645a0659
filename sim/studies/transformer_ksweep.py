"""Training through the crossing: pass@1 after a few pass@k steps at every `k`, for two task
families and three warm starts each.

The transformer confirmation (:mod:`sim.studies.transformer_experiment`) predicts `k*` at one warm start
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
(:func:`sim.studies.transformer_ksweep_rows.explain`): `I_k` had already turned at the step that
moved pass@1 the wrong way (`k*` moved past `k` along the trajectory); the update taken pointed the
other way although `I_k` did not (the sampled estimate decided); or both had the predicted sign and
pass@1 still moved the other way (the step was too large for the first-order prediction).

Runs through the trainer. Every run is the transformer trainer's fine-tuning step
(:func:`sim.transformer.pg_step.policy_gradient_runs`: rule `"passk"`, plain SGD) with the exact
gradient or with `theory.ESTIMATOR_TABLE`'s `"pkpo-loo-1"` entry. Every prompt has exactly one
correct answer and PKPO's `k-1` baseline gives wrong answers a weight of exactly 0, so the step
draws the rewards `r_ij ~ Bernoulli(p_i)` from the exact `p_i` instead of sampling answer strings
(the same distribution of updates; :mod:`sim.transformer.pg_step` explains it and the tests check
the identity on sampled answers), for one linearisation of `log p` over the `P` prompts per step.
That is why `n` can be `4K + 1` at no cost. The rows and verdicts are read from the runs by
:mod:`sim.studies.transformer_ksweep_rows`.

Compilation. The sampled runs of the study (all `k`, seeds, warm starts and both families) go
through one compiled program and the exact runs through another: `k` is a traced integer, the
families' populations are padded to one size with weight-0 prompts (they share the vocabulary and
so the model), the runs are `vmap`ped in equal batches (`lax.map`), the steps are a `lax.scan`. A
family's warm starts are consecutive calls of the supervised warm start, which compile once per
family.

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
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sim.intervals import wilson_interval
from sim.records import RECORD_NAMES as R
from sim.records import floats as _floats
from sim.studies.transformer_ksweep_rows import (
    histogram,
    observed_sign,
    predicted_sign,
    run_records,
    summarise,
    warm_start_rows,
)
from sim.transformer import exact as _exact
from sim.transformer import model as _model
from sim.transformer import pg_step as _pg_step
from sim.transformer import task_families as _families
from sim.transformer import train as _train

__all__ = [
    "ESTIMATOR",
    "FamilySetting",
    "KSweepConfig",
    "ksweep_study",
    "predicted_sign",
    "observed_sign",
    "run_records",
    "sweep_runs",
]

#: The sampled estimator of the sweep: PKPO with the `k-1`-subset baseline (wrong answers weigh 0).
ESTIMATOR = "pkpo-loo-1"


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
    """All sizes of the study; `passk.presets` holds the command's quick and full ones.

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


def sweep_runs(
    params, prompts, answers, config, ks, keys, exact, *, learning_rate, n_samples, steps, mu=None, batch=64
):
    """Plain-SGD fine-tuning runs from one starting point, through the transformer trainer's step
    (:func:`sim.transformer.pg_step.policy_gradient_runs`, rule `"passk"`).

    Run `r` takes `steps` steps `theta <- theta + eta u`: `u` the exact `grad J_k` where
    `exact[r]`, else sampled PKPO (:data:`ESTIMATOR`, `theory.ESTIMATOR_TABLE`'s entry) from
    `n_samples` answers per prompt, drawn as `r_ij ~ Bernoulli(p_i)` with the key
    `fold_in(keys[r], t)` at step `t` (every prompt has one correct answer). The sampled runs are
    one compiled program, the exact runs another.

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
        raise ValueError(
            f"ks, keys and exact must have one entry per run; got shapes {ks.shape}, {np.shape(keys)}, {exact.shape}"
        )
    keys = jnp.asarray(keys)
    out = {}
    for estimator, chosen in (("exact", exact), (ESTIMATOR, ~exact)):
        if not chosen.any():
            continue
        pg = _train.PGConfig(
            estimator=estimator,
            k=int(ks[chosen].max()),
            n_samples=max(2, int(n_samples)),
            optimizer="sgd",
            learning_rate=float(learning_rate),
            steps=int(steps),
            checkpoint_every=int(steps),
        )
        runs = _pg_step.policy_gradient_runs(
            params, prompts, answers, config, pg, ks=ks[chosen], keys=keys[np.flatnonzero(chosen)], mu=mu, batch=batch
        )
        for name in ("p", "agreement", R.update_inner):
            value = runs[name]
            out.setdefault(name, np.zeros((ks.shape[0],) + value.shape[1:], np.float64))[chosen] = value
    return out


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
    sft = _train.SFTConfig(
        steps=stage, batch_size=cfg.sft_batch_size, learning_rate=cfg.sft_learning_rate, checkpoint_every=stage
    )
    prompts, answers = task.prompts[task.sft_index], task.answers[task.sft_index]
    params, losses, done, out = _model.init(k_init, mcfg), [], 0, []
    for steps in sorted(setting.warm_start_steps):
        while done < steps:
            params, loss = _train.supervised_warm_start(
                params, prompts, answers, mcfg, sft, key=jax.random.fold_in(k_sft, done // stage)
            )
            losses.append(np.asarray(loss))
            done += stage
        out.append((steps, params, np.concatenate(losses)))
    return out


def _check_config(cfg: KSweepConfig):
    for setting in cfg.families:
        steps = setting.warm_start_steps
        if len(set(steps)) != len(steps) or any(s < 1 or s % setting.sft_stage for s in steps):
            raise ValueError(
                f"warm_start_steps of {setting.family!r} must be distinct positive multiples of "
                f"sft_stage = {setting.sft_stage}; got {steps!r}"
            )


def ksweep_study(
    *, config: KSweepConfig, key, families=_families.FAMILIES, progress: Callable[[str], None] | None = None
) -> dict:
    """Fine-tune through the crossing at every `k` for each task family and warm start.

    Args:
      config: the study's sizes (:class:`KSweepConfig`).
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
    if not isinstance(config, KSweepConfig):
        raise TypeError(f"config must be a KSweepConfig; got {type(config).__name__}")
    cfg = config
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
        task = _families.make_family_task(
            family,
            modulus=cfg.modulus,
            hard_fraction=setting.hard_fraction,
            sft_hard_fraction=setting.sft_hard_fraction,
            key=k_task,
        )
        built[family] = (task, k_init, k_sft, k_runs)
    size = max(t.prompts.shape[0] for t, *_ in built.values())
    first = next(iter(built.values()))[0]
    mcfg = _model.ModelConfig(
        vocab_size=first.vocab_size,
        max_len=first.seq_len,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        d_mlp=cfg.d_mlp,
    )
    starts = []
    for family, (task, k_init, k_sft, _k_runs) in built.items():
        prompts, answers, mu = _pad(task, size)
        for steps, params, losses in _warm_starts(task, mcfg, cfg, settings[family], k_init=k_init, k_sft=k_sft):
            # Full float32 products (GPUs default to TF32), as the confirmation.
            with jax.default_matmul_precision("float32"):
                agree, p, _ = _agreement_jvp(
                    params, jnp.asarray(prompts), jnp.asarray(answers), mcfg, jnp.asarray(mu, jnp.float32)
                )
                # the last-layer proxy of the same agreements (output head only)
                agree_ll, _, _ = _agreement_jvp(
                    params,
                    jnp.asarray(prompts),
                    jnp.asarray(answers),
                    mcfg,
                    jnp.asarray(mu, jnp.float32),
                    subset=_model.LAST_LAYER,
                )
            agree, p = np.asarray(agree, np.float64), np.asarray(p, np.float64)
            agree_ll = np.asarray(agree_ll, np.float64)
            # k*, I_k, A_k in float64 whatever the global setting (the model itself is float32)
            with jax.enable_x64(True):
                summary = _exact.conflict_summary(p, agree, tuple(range(1, cfg.max_k + 1)), mu)
                summary["last_layer_k_star"] = _exact.conflict_summary(p, agree_ll, (1,), mu)["k_star"]
            real = mu > 0
            summary["last_layer_sign_right"] = wilson_interval(
                int(np.sum(np.sign(agree_ll[real]) == np.sign(agree[real]))), int(real.sum())
            )
            k_star = summary["k_star"]
            starts.append((family, steps, params, losses, p, agree, summary))
            say(
                f"{family}, warm start of {steps} steps: pass@1 {p[mu > 0].mean():.3f}, k* {k_star} "
                f"[{time.perf_counter() - start:.0f} s]"
            )

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
        out = sweep_runs(
            params,
            prompts,
            answers,
            mcfg,
            run_ks,
            keys,
            run_exact,
            learning_rate=cfg.learning_rate,
            n_samples=n_samples,
            steps=cfg.steps,
            mu=mu,
            batch=cfg.run_batch,
        )
        name = f"{steps} steps"
        with jax.enable_x64(True):
            ws_rows = warm_start_rows(family, name, k_star, ks, cfg.seeds, out, n_samples, summary, mu)
        rows.extend(ws_rows)
        real = mu > 0
        hard = np.asarray(task.is_hard, bool)
        p_real, a_real = p[real], agree[real]
        warm_out.append(
            {
                "task": family,
                "warm_start": name,
                "sft_steps": steps,
                "k_star": k_star,
                "k_covers_2k_star": k_star is None or 2 * k_star <= k_top,
                "last_layer_k_star": summary["last_layer_k_star"],
                "last_layer_sign_right": summary["last_layer_sign_right"],
                "pass1": float(p_real.mean()),
                R.inner: summary[R.inner][:k_top],
                R.mean_agreement: summary[R.mean_agreement][:k_top],
                "p_histogram": histogram(p_real, hard),
                "hard_mean_p": float(p_real[hard].mean()),
                "easy_mean_p": float(p_real[~hard].mean()),
                "hard_negative_agreement_share": float(np.mean(a_real[hard] < 0)),
                "easy_negative_agreement_share": float(np.mean(a_real[~hard] < 0)),
                "sft_loss": _floats(losses),
            }
        )
        counts = {v: sum(r["verdict"] == v for r in ws_rows) for v in ("agree", "disagree", "inconclusive")}
        say(f"{family}, {name}: {len(run_ks)} runs in {time.perf_counter() - t_runs:.1f} s; {counts}")
    family_out = {
        family: {
            "n_prompts": int(task.prompts.shape[0]),
            "n_hard": int(task.is_hard.sum()),
            "n_sft_prompts": int(task.sft_index.size),
            "hard_fraction": settings[family].hard_fraction,
            "sft_hard_fraction": settings[family].sft_hard_fraction,
        }
        for family, (task, *_rest) in built.items()
    }
    return {
        "k_sweep": rows,
        "summary": summarise(rows),
        "warm_starts": warm_out,
        "families": family_out,
        "ks": list(ks),
        "n_samples": n_samples,
        "n_params": _model.param_count(starts[0][2]),
        "settings": {
            **{name: value for name, value in dataclasses.asdict(cfg).items() if name != "families"},
            "families": [
                {**dataclasses.asdict(s), "warm_start_steps": list(s.warm_start_steps)}
                for s in cfg.families
                if s.family in families
            ],
            "estimator": ESTIMATOR,
            "optimizer": "sgd",
            "level": 0.95,
        },
        "runtime_s": time.perf_counter() - start,
    }
