"""End-to-end confirmation in a small transformer: warm start, predict, fine-tune, compare.

Steps of :func:`run_experiment`:

1. Task (:mod:`sim.transformer.task`): "reverse the pair, with exceptions": prompt `[a, b, op, =]`,
   answer `(b, a)`, except that `TWIST` prompts on a random set of pairs have their own random
   answer. Hard prompts use the same tokens as rule-following ones, so raising their answer lowers
   the look-alikes' success.
2. Supervised warm start (Adam on the cross-entropy) on every easy prompt and a share of the hard
   ones, stopped early so `p(x)` is spread: easy prompts high, hard ones seen by the warm start
   low-to-middle, unseen hard ones near 0.
3. At the warm start: exact `p` for every prompt; agreement scores `a = J (J^T mu)` over all
   parameters by one reverse and one forward pass (checked against `vmap(grad)` per-prompt
   gradients); the same restricted to the output head (the last-layer proxy), where it is wrong
   and the same proxy from sampled answers (:mod:`sim.studies.transformer_proxy`); `I_k`, `A_k`, `k*`
   from `theory`; `cos_k` from one reverse pass per `k`.
4. Sign test (SPEC section 5): a small plain step along `grad J_k` for every `k` of a grid; the
   observed sign of the change of `J_1` against the predicted sign of `I_k`.
5. Policy-gradient fine-tuning from the warm start on the whole population with (a) the exact
   pass@k gradient, (b) sampled PKPO `k-1`-baseline weights with `n` answers per prompt, (c) pass@1
   with RLOO; plain gradient steps (SGD) for several `k` below and above `k*` and several seeds,
   and longer Adam runs that record the update-aware inner product `<g_1, u>`.

Scope (SPEC section 9): the set-up leaves out PPO-style ratio clipping, KL penalties (no reference
policy), token-length normalisation (answers have a fixed length), off-policy or stale samples
(every update samples from the current policy) and entropy bonuses. It uses a finite number of
sampled answers (estimators (b), (c)) and, for Adam, a preconditioned update; for these the
first-order prediction concerns the expected update, and Adam's sign is judged by `<g_1, u>`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import wilson_interval
from sim.records import RECORD_NAMES as R
from sim.records import floats as _floats
from sim.studies import transformer_proxy as _proxy
from sim.transformer import exact as _exact
from sim.transformer import model as _model
from sim.transformer import task as _task
from sim.transformer import train as _train

__all__ = ["ExperimentConfig", "RunSpec", "SCOPE", "SFT", "TASK", "choose_ks", "run_experiment", "warm_start"]

#: `fold_in` index of the Monte Carlo proxy's answers (far from the run seeds).
PROXY_KEY = 10**6

# SPEC section 9: what this set-up uses (True) and leaves out (False).
SCOPE = {
    "ppo_ratio_clipping": False,
    "kl_penalty": False,
    "token_length_normalisation": False,
    "off_policy_or_stale_samples": False,
    "entropy_bonus": False,
    "sampled_estimators": True,
    "adam_preconditioning": True,
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One group of fine-tuning runs: estimator, optimiser, which `k`, and seeds.

    `k` is `"one"` (pass@1), `"low"` (below the predicted `k*`) or `"high"` (above it); the
    numbers are fixed once `k*` is known at the warm start (see :func:`choose_ks`).
    """

    estimator: str
    k: str
    optimizer: str
    seeds: tuple = (0,)


#: The confirmation's task: "reverse the pair, with exceptions" modulo 11.
TASK = _task.TaskConfig(modulus=11, hard_fraction=0.25, sft_hard_fraction=0.5)
#: The supervised warm start, stopped early so that `p(x)` is spread.
SFT = _train.SFTConfig(steps=40, batch_size=64, learning_rate=3e-3, checkpoint_every=20)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """All sizes of one experiment; `passk.presets` holds the command's quick and full ones.

    The defaults are the confirmation's set-up (task, model, warm start, the `k` grid) with no
    fine-tuning runs; every study of the transformer that shares this warm start reads it.

    Attributes:
      task, d_model, n_heads, n_layers, d_mlp: the task and the model.
      sft: the supervised warm start.
      ks: the orders of the sign test and of `I_k`, `A_k`, `cos_k` (the roles' `k` are added).
      min_samples: the fewest sampled answers per prompt (at least the high role's `k`).
      sign_step: the step of the sign test.
      first_steps: the steps over which a run's observed sign is read.
      proxy_samples: answers per prompt of the Monte Carlo last-layer proxy.
      runs: the fine-tuning runs (:class:`RunSpec`).
      sgd_learning_rate, sgd_steps, adam_learning_rate, adam_steps: the runs' optimisers.
      checkpoint_every: steps between the runs' checkpoints (divides both step counts).
    """

    task: _task.TaskConfig = TASK
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_mlp: int = 128
    sft: _train.SFTConfig = SFT
    ks: tuple = tuple(range(1, 17)) + (24, 32, 48, 64)
    min_samples: int = 8
    sign_step: float = 1e-2
    first_steps: int = 3
    proxy_samples: int = 16
    runs: tuple = ()
    sgd_learning_rate: float = 1.0
    sgd_steps: int = 40
    adam_learning_rate: float = 1e-3
    adam_steps: int = 100
    checkpoint_every: int = 20


def choose_ks(k_star) -> dict:
    """The `k` of each role: `low = max(1, k* // 2) < k*`, `high = 2 k*` (conflict predicted).

    Without a predicted conflict (`k*` None) `low = 2`, `high = 32`: both should raise pass@1.
    """
    if k_star is None:
        return {"one": 1, "low": 2, "high": 32}
    return {"one": 1, "low": max(1, k_star // 2), "high": 2 * k_star}


def _sign(x: float) -> int:
    return int(np.sign(x))


_agreement_jvp = jax.jit(_exact.agreement_jvp, static_argnums=3, static_argnames=("subset", "chunk_size"))
_agreement_pergrad = jax.jit(_exact.agreement_pergrad, static_argnums=3)


@functools.partial(jax.jit, static_argnums=3)
def _sign_test(params, prompts, answers, cfg, ks, eta):
    """`J_1(theta + eta d_k) - J_1(theta)` and the same for `J_k`, with `d_k = g_k / |g_k|` the unit
    direction of `grad J_k` (from the normalised weights, so it never underflows); also
    `cos_k = <g_k, g_1> / (|g_k| |g_1|)`. One reverse pass per `k`, vectorised."""
    p, vjp = jax.vjp(lambda th: _exact.success(th, prompts, answers, cfg), params)
    ks = jnp.asarray(ks)
    omega = theory.normalized_weights(p, ks, None)  # (K, P)

    (g1,) = vjp(jnp.full(p.shape, 1.0 / p.shape[0], p.dtype))

    def one(weights, k):
        (d,) = vjp(weights)  # parallel to grad J_k
        norm = jnp.sqrt(_exact.tree_dot(d, d))
        cos = theory.safe_cosine(_exact.tree_dot(d, g1), norm * jnp.sqrt(_exact.tree_dot(g1, g1)))
        scale = eta / norm
        moved = jax.tree_util.tree_map(lambda t, u: t + scale * u, params, d)
        p_new = _exact.success(moved, prompts, answers, cfg)
        return jnp.mean(p_new) - jnp.mean(p), jnp.mean(theory.pass_at_k(p_new, k) - theory.pass_at_k(p, k)), cos

    return jax.vmap(one)(omega, ks)


def warm_start(cfg: ExperimentConfig, *, key, checkpoint_dir=None, progress=None):
    """The task, model config and supervised warm start of an experiment.

    The same `key` as :func:`run_experiment` gives the same task and parameters (its first three
    splits). Returns `(task, model_config, params, sft_loss)`.
    """
    say = progress if progress is not None else (lambda line: None)
    k_task, k_init, k_sft, _ = jax.random.split(key, 4)
    task = _task.make_task(cfg.task, key=k_task)
    mcfg = _model.ModelConfig(
        vocab_size=task.vocab_size,
        max_len=task.seq_len,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        d_mlp=cfg.d_mlp,
    )
    params = _model.init(k_init, mcfg)
    say(
        f"task: {task.n_prompts} prompts ({int(task.is_hard.sum())} hard); "
        f"model: {_model.param_count(params)} parameters"
    )
    params, sft_loss = _train.supervised_warm_start(
        params,
        task.prompts[task.sft_index],
        task.answers[task.sft_index],
        mcfg,
        cfg.sft,
        key=k_sft,
        checkpoint_path=None if checkpoint_dir is None else Path(checkpoint_dir) / "warm_start.pkl",
        progress=say,
    )
    return task, mcfg, params, sft_loss


def run_experiment(
    *, config: ExperimentConfig, key, checkpoint_dir=None, progress: Callable[[str], None] | None = None
) -> dict:
    """Run the transformer confirmation and return its numbers (JSON-serialisable).

    Args:
      config: the sizes (:class:`ExperimentConfig`; `passk.presets` holds the quick and full ones).
      key: a `jax.random` key; the same key gives the same numbers.
      checkpoint_dir: folder for training checkpoints; a run killed and restarted with the same
        folder and key resumes and ends with the same numbers as an uninterrupted run.
      progress: optional callable receiving one status line at a time.

    Returns:
      A dict with, among others, `k_star_predicted`, `ks`, `inner` (`I_k`), `mean_agreement` (`A_k`), `cos` (`cos_k`),
      `agreement_jvp_vs_pergrad_max_abs_err`, `last_layer_sign_agreement` (a Wilson interval over
      prompts), `last_layer_proxy` (:mod:`sim.studies.transformer_proxy`: the proxy's sign errors by `p`
      and by pass@k weight, the Monte Carlo proxy, the constructed case it misses), `warm_start`
      (per-prompt `p`, agreements, hard flags), `sign_test` (its `agreement_fraction` a Wilson
      interval over `k`), and `runs` (each with `pass1_before`,
      `pass1_after`, `passk_before`, `passk_after`, trajectories `pass1`, `passk`, `g1_dot_u`,
      predicted and observed signs), plus `scope` (SPEC section 9) and `runtime_s`.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig; got {config!r}")
    cfg = config
    say = progress if progress is not None else (lambda line: None)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None; got {progress!r}")
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)
    start = time.perf_counter()
    k_pg = jax.random.split(key, 4)[3]
    task, mcfg, params, sft_loss = warm_start(cfg, key=key, checkpoint_dir=ckpt, progress=say)
    prompts, answers = jnp.asarray(task.prompts), jnp.asarray(task.answers)

    # Agreements at the warm start: JVP method (all parameters), its per-prompt check, last layer.
    # Full float32 matrix products here (GPUs default to TF32, which would blur the check).
    with jax.default_matmul_precision("float32"):
        agree, p, g1_sq = _agreement_jvp(params, prompts, answers, mcfg)
        agree_pg = _agreement_pergrad(params, prompts, answers, mcfg)
        agree_ll, _, _ = _agreement_jvp(params, prompts, answers, mcfg, subset=_model.LAST_LAYER)
        agree, p, agree_pg, agree_ll = (np.asarray(x, np.float64) for x in (agree, p, agree_pg, agree_ll))
        err = float(np.max(np.abs(agree - agree_pg)))
        ll_sign = wilson_interval(int(np.sum(np.sign(agree_ll) == np.sign(agree))), agree.size)
        k_star = _exact.conflict_summary(p, agree, (1,))["k_star"]
        role_k = choose_ks(k_star)
        ks = tuple(sorted(set(cfg.ks) | set(role_k.values())))
        summary = _exact.conflict_summary(p, agree, ks)
        summary_ll = _exact.conflict_summary(p, agree_ll, ks)
        d_pass1, d_passk, cos_k = (_floats(x) for x in _sign_test(params, prompts, answers, mcfg, ks, cfg.sign_step))
    say(
        f"warm start: pass@1 {p.mean():.4f}; k* predicted {k_star}; JVP vs per-prompt max error {err:.2e}; "
        f"last-layer sign agreement {ll_sign['value']:.3f}"
    )
    weigh_ks = sorted({k for k in (k_star, role_k["high"]) if k is not None} | {2})
    proxy_study = {
        "errors": _proxy.proxy_errors(p, agree, agree_ll, task.is_hard, weigh_ks),
        "monte_carlo": _proxy.monte_carlo_proxy(
            params,
            prompts,
            mcfg,
            _task.verify,
            (task.hard_table, task.exception_table),
            key=jax.random.fold_in(k_pg, PROXY_KEY),
            n=cfg.proxy_samples,
            agreement=agree,
            agreement_proxy=agree_ll,
        ),
        "hidden_conflict_case": _proxy.hidden_conflict_case(),
    }

    predicted = [_sign(a) for a in summary[R.mean_agreement]]
    observed = [_sign(d) for d in d_pass1]
    sign_test = {
        "ks": list(ks),
        "step": cfg.sign_step,
        "delta_pass1": d_pass1,
        "delta_passk": d_passk,
        "predicted_sign": predicted,
        "observed_sign": observed,
        "agreement_fraction": wilson_interval(int(np.sum(np.asarray(predicted) == np.asarray(observed))), len(ks)),
    }

    a_of_k = dict(zip(ks, summary[R.mean_agreement]))
    n_samples = max(cfg.min_samples, role_k["high"])  # PKPO needs k <= n
    specs = [(spec, seed) for spec in cfg.runs for seed in spec.seeds]
    runs = []
    for index, (spec, seed) in enumerate(specs):
        sgd = spec.optimizer == "sgd"
        k = role_k[spec.k]
        name = f"{spec.optimizer}-{spec.estimator}-k{k}-s{seed}"
        pg = _train.PGConfig(
            estimator=spec.estimator,
            k=k,
            n_samples=n_samples,
            optimizer=spec.optimizer,
            learning_rate=cfg.sgd_learning_rate if sgd else cfg.adam_learning_rate,
            steps=cfg.sgd_steps if sgd else cfg.adam_steps,
            checkpoint_every=cfg.checkpoint_every,
            track_ks=(k,),
        )
        _, traj = _train.finetune(
            params,
            prompts,
            answers,
            mcfg,
            pg,
            key=jax.random.fold_in(k_pg, seed),
            verifier=_task.verify,
            verifier_args=(task.hard_table, task.exception_table),
            checkpoint_path=None if ckpt is None else ckpt / f"{name}.pkl",
            progress=say,
            label=f"run {index + 1}/{len(specs)} {name}",
        )
        pass1, passk = traj[R.j1], traj[R.jk][:, 0]
        m = min(cfg.first_steps, pg.steps)
        runs.append(
            {
                "name": name,
                "estimator": spec.estimator,
                "k": k,
                "k_role": spec.k,
                "optimizer": spec.optimizer,
                "seed": seed,
                "learning_rate": pg.learning_rate,
                "steps": pg.steps,
                "n_samples": None if spec.estimator == "exact" else n_samples,
                "k_ge_k_star": None if k_star is None else bool(k >= k_star),
                "pass1_before": float(pass1[0]),
                "pass1_after": float(pass1[-1]),
                "passk_before": float(passk[0]),
                "passk_after": float(passk[-1]),
                "pass1": _floats(pass1),
                "passk": _floats(passk),
                "g1_dot_u": _floats(traj[R.update_inner]),
                "mean_reward": _floats(np.nan_to_num(traj["mean_reward"])),
                "predicted_sign_I_k": _sign(a_of_k[k]),
                "observed_sign_first_steps": _sign(pass1[m] - pass1[0]),
                "first_steps": m,
                "sign_g1_dot_u_first_step": _sign(traj[R.update_inner][0]),
            }
        )
        say(f"{name}: pass@1 {pass1[0]:.4f} -> {pass1[-1]:.4f}, pass@{k} {passk[0]:.4f} -> {passk[-1]:.4f}")

    # Where observations depart from the first-order prediction (SPEC section 9 asks to say so).
    departures = {
        "sign_test_ks": [k for k, a, b in zip(ks, predicted, observed) if a != b],
        "runs_first_steps": [r["name"] for r in runs if r["observed_sign_first_steps"] != r["predicted_sign_I_k"]],
        "adam_runs_first_update": [
            r["name"]
            for r in runs
            if r["optimizer"] == "adam" and r["sign_g1_dot_u_first_step"] != r["predicted_sign_I_k"]
        ],
    }
    in_sft = np.zeros(task.n_prompts, bool)
    in_sft[task.sft_index] = True
    return {
        "n_params": _model.param_count(params),
        "n_prompts": task.n_prompts,
        "n_hard": int(task.is_hard.sum()),
        "task": dataclasses.asdict(cfg.task),
        "model": {"d_model": cfg.d_model, "n_heads": cfg.n_heads, "n_layers": cfg.n_layers, "d_mlp": cfg.d_mlp},
        "warm_start": {
            "sft_loss": _floats(sft_loss),
            "pass1": float(p.mean()),
            "p": _floats(p),
            "is_hard": [bool(h) for h in task.is_hard],
            "in_sft": [bool(s) for s in in_sft],
            "agreement": _floats(agree),
            "agreement_pergrad": _floats(agree_pg),
            "agreement_last_layer": _floats(agree_ll),
            "grad_pass1_sq_norm": float(g1_sq),
        },
        "agreement_jvp_vs_pergrad_max_abs_err": err,
        "agreement_jvp_vs_pergrad_rel_err": err / float(np.max(np.abs(agree_pg))),
        "last_layer_sign_agreement": ll_sign,
        "last_layer_proxy": proxy_study,
        "last_layer_k_star": summary_ll["k_star"],
        "ks": list(ks),
        R.inner: summary[R.inner],
        R.mean_agreement: summary[R.mean_agreement],
        R.cos: cos_k,
        "mean_agreement_last_layer": summary_ll[R.mean_agreement],
        "k_star_predicted": k_star,
        "k_roles": role_k,
        "n_samples": n_samples,
        "sign_test": sign_test,
        "runs": runs,
        "scope": dict(SCOPE),
        "departures": departures,
        "runtime_s": time.perf_counter() - start,
    }
