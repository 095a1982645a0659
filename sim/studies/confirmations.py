"""The five confirmations of `sim`, as numbers (NamedTuples of arrays and plain numbers).

Each function computes one confirmation at a given size and returns a NamedTuple; the tests run
them small, :func:`run_all` runs them at full size for `passk reproduce`. Their JSON form (the
`bandit` part of `results.json`) is built by :mod:`sim.experiments_json`; the figures are drawn
by :mod:`passk.plots.bandit`. Nothing here draws or serialises, and nothing is typed in: every
number comes from the bandits. A `k*` array holds the search limit plus one where there is no
conflict (:func:`theory.k_star_or_none` reads it).

1. :func:`critical_k_agreement` - `theory.critical_k` from exact `p` and agreements equals the
   first `k` at which `<grad J_k, grad J_1>`, computed by autodiff of an independently written
   `J_k = sum_i mu_i (1 - (1 - p_i)^k)`, is negative.
2. :func:`phase_diagram` - `k*` over `p_hard x separation` in one compiled, sharded call.
3. :func:`one_step` - below `min(pass1_decrease_window, passk_increase_window)` one plain pass@k
   step lowers `J_1` and raises `J_k`; how often an Adam step (and the projected steps of SPEC
   section 8) do the same; Hessian norms against the `B^2/2` bound.
4. :func:`dynamics` - trajectories from the toy start: pass@1 ascent, pass@k ascent below and
   above `k*`, the conflict-safe rules, exact and sampled, SGD and Adam, with `k*` along the way.
5. :func:`estimator_check` - the average sampled update of each estimator against its exact
   expectation `sum_i mu_i v(p_i) grad p_i` (`v = theory.implied_prompt_weight`), and variances.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim.bandit import DEFAULT_K_MAX, SoftmaxBandit
from sim.first_order import LOOSENESS_GRID, adam_predictors, first_turn, window_looseness
from sim.intervals import mean_half_width, mean_interval, wilson_interval
from sim.toy import TOY_DEFAULTS, hard_mask, toy_bandit, toy_diagnostics, toy_grid_sweep
from sim.answers import sampled_updates
from sim.train import ESTIMATORS, PASSK_ESTIMATORS, RECORD_NAMES, Records, train_sweep

__all__ = [
    "CriticalK",
    "PhaseDiagram",
    "OneStep",
    "Dynamics",
    "RunSummary",
    "EstimatorCheck",
    "Confirmations",
    "SUMMARISED",
    "critical_k_agreement",
    "phase_diagram",
    "one_step",
    "dynamics",
    "estimator_check",
    "run_all",
    "QUICK",
    "FULL",
]

#: Sizes of `run_all(quick=True)` (also what the tests use, or smaller).
QUICK = {
    "critical_k": dict(p_hards=(0.1, 0.3), separations=(0.5, 2.0), start_logits=(2.5,), n_seeds=2, n_prompts=32, k_grid=64),
    "phase": dict(n_p_hard=12, n_separation=12, n_seeds=2, n_prompts=64),
    "one_step": dict(n_instances=256),
    "dynamics": dict(steps=40, n_seeds=2, n_samples=40, sampled=("pkpo-loo/sgd",)),
    "estimators": dict(n_draws=2000, n_prompts=32),
}
#: Sizes of `run_all(quick=False)` (the figures).
FULL = {
    "critical_k": dict(
        p_hards=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
        separations=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
        start_logits=(1.5, 2.5, 3.5),
        n_seeds=2,
        n_prompts=64,
        k_grid=256,
    ),
    "phase": dict(n_p_hard=40, n_separation=40, n_seeds=8, n_prompts=256),
    "one_step": dict(n_instances=4096),
    "dynamics": dict(steps=200, n_seeds=6, n_samples=40),
    "estimators": dict(n_draws=20000, n_prompts=64),
}


def _keys(key, n):
    return jax.random.split(key, n)


# --------------------------------------------------------------------------- 1. critical k


class CriticalK(NamedTuple):
    """Confirmation 1 over `R` regimes.

    Attributes:
      p_hard, separation, start_logit: `(R,)` regime parameters; seed: `(R,)` seed index.
      k_grid: the orders searched, `1..k_grid`.
      k_star_predicted: `(R,)` `theory.critical_k` (`k_grid + 1`: none).
      k_star_autodiff: `(R,)` first `k` with a negative autodiff inner product (`k_grid + 1`: none).
      inner: `(R, k_grid)` autodiff `<grad J_k, grad J_1>`.
      min_relative_margin: smallest `min(|I_{k*}|, |I_{k*-1}|) / max_k |I_k|` over regimes with a
        crossing (NaN when none): how close to a tie the hardest case was.
      shown: indices of up to six regimes with a crossing (the figure's curves).
    """

    p_hard: np.ndarray
    separation: np.ndarray
    start_logit: np.ndarray
    seed: np.ndarray
    k_grid: int
    k_star_predicted: np.ndarray
    k_star_autodiff: np.ndarray
    inner: np.ndarray
    min_relative_margin: float
    shown: np.ndarray


def _pass_at_k_objective(bandit: SoftmaxBandit, theta, k):
    """`J_k = sum_i mu_i (1 - (1 - p_i)^k)`, written out from :meth:`SoftmaxBandit.success`.

    Independent of :func:`theory.pass_at_k` (and of its derivative rule, which returns the very
    `w_k` that confirmation 1 checks): autodiff of this function differentiates `(1 - p)^k` itself.
    """
    p = bandit.success(theta)
    return jnp.sum(bandit.prompt_weights * (1 - (1 - p) ** k))


def _autodiff_inner(bandit: SoftmaxBandit, theta, ks):
    """`<grad J_k, grad J_1>` for every `k` in `ks`, each by `jax.grad` of :func:`_pass_at_k_objective`."""
    g1 = jax.grad(lambda th: _pass_at_k_objective(bandit, th, 1))(theta)
    gk = jax.vmap(lambda k: jax.grad(lambda th: _pass_at_k_objective(bandit, th, k))(theta))(ks)
    return jnp.einsum("kad,ad->k", gk, g1, precision=jax.lax.Precision.HIGHEST)


def critical_k_agreement(
    *,
    key,
    p_hards=(0.1, 0.3),
    separations=(0.5, 2.0),
    start_logits=(2.5,),
    n_seeds: int = 2,
    n_prompts: int = 32,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    k_grid: int = 64,
) -> CriticalK:
    """Confirmation 1: predicted `k*` versus the first negative autodiff inner product.

    For every regime (toy bandits over `p_hards x separations x start_logits x seeds`, float64):
    `p` and agreements from :meth:`SoftmaxBandit.success` / :meth:`agreement_scores` (one
    reverse and one forward pass) go into :func:`theory.critical_k` (`k_max = k_grid`); separately,
    `<grad J_k, grad J_1>` for `k = 1..k_grid` comes from autodiff of
    `J_k = sum_i mu_i (1 - (1 - p_i)^k)` written out from `p` (not through `theory`), and its
    first negative `k` is read off. The two must be equal (both `k_grid + 1` when there is no
    conflict up to `k_grid`).

    Returns:
      :class:`CriticalK`.
    """
    grid = [(ph, sep, sl, s) for ph in p_hards for sep in separations for sl in start_logits for s in range(n_seeds)]
    seed_keys = _keys(key, n_seeds)
    with jax.enable_x64(True):
        ph = jnp.asarray([g[0] for g in grid], jnp.float64)
        sep = jnp.asarray([g[1] for g in grid], jnp.float64)
        sl = jnp.asarray([g[2] for g in grid], jnp.float64)
        keys = seed_keys[np.asarray([g[3] for g in grid])]
        ks = jnp.arange(1, k_grid + 1, dtype=jnp.int32)

        @jax.jit
        def compute(ph, sep, sl, keys):
            def one(ph, sep, sl, key):
                bandit, theta0 = toy_bandit(
                    key, n_prompts=n_prompts, p_hard=ph, separation=sep, n_actions=n_actions,
                    start_logit=sl, dtype=jnp.float64,
                )
                p = bandit.success(theta0)
                a = bandit.agreement_scores(theta0)
                inner = _autodiff_inner(bandit, theta0, ks)
                return p, a, bandit.prompt_weights, inner

            return jax.vmap(one)(ph, sep, sl, keys)

        p, a, mu, inner = (np.asarray(x) for x in compute(ph, sep, sl, keys))
        predicted = [theory.critical_k(p[i], a[i], mu[i], k_max=k_grid) for i in range(len(grid))]
    none = k_grid + 1
    negative = inner < 0
    first = np.where(negative.any(axis=1), np.argmax(negative, axis=1) + 1, none)
    margins = []
    for i, f in enumerate(first):
        if f != none:
            scale = np.max(np.abs(inner[i]))
            margins.append(float(min(abs(inner[i, f - 1]), abs(inner[i, f - 2]) if f >= 2 else np.inf) / scale))
    return CriticalK(
        p_hard=np.asarray([g[0] for g in grid], np.float64),
        separation=np.asarray([g[1] for g in grid], np.float64),
        start_logit=np.asarray([g[2] for g in grid], np.float64),
        seed=np.asarray([g[3] for g in grid]),
        k_grid=int(k_grid),
        k_star_predicted=np.asarray([none if k is None else k for k in predicted]),
        k_star_autodiff=first,
        inner=inner,
        min_relative_margin=min(margins) if margins else math.nan,
        shown=np.flatnonzero(first != none)[:6],
    )


# --------------------------------------------------------------------------- 2. phase diagram


class PhaseDiagram(NamedTuple):
    """Confirmation 2 on an `I x J` grid of `(p_hard, separation)` and `S` seeds.

    Attributes:
      p_hard: `(I,)`; separation: `(J,)`; k_max, n_prompts, n_actions, start_logit: the settings.
      k_star: `(S, I, J)` `k*` at the toy start (`k_max + 1`: none).
      median_k_star: `(I, J)` median over seeds, none counted as `+inf` (inf: most seeds have none).
      conflict_fraction: `(I, J)` share of seeds with a conflict.
      mean_p_hard_group, mean_p_easy_group: `(I, J)` group mean success, averaged over seeds.
      share_negative_agreement: `(I, J)` share of prompts with `a_i < 0`, averaged over seeds.
      k_star_agreed: `(I, J)` median `k*` where every seed has a conflict, NaN elsewhere.
      seeds_agree: `(I, J)` whether all seeds agree on conflict or none.
      n_seeds: `S`.
      share_cells_with_conflict: share of cells whose median `k*` is finite.
      share_cells_k_star_4_to_64: share of cells whose median `k*` lies in `[4, 64]`.
      area_in_conflict: per seed the share of cells with a conflict, as a mean over seeds with
        its t interval (:func:`sim.intervals.mean_interval`; the seeds' cells share random
        numbers, so the seed, not the cell, is the independent unit).
      cells_seeds_disagree: the count of cells whose seeds disagree on conflict.
    """

    p_hard: np.ndarray
    separation: np.ndarray
    k_max: int
    n_prompts: int
    n_actions: int
    start_logit: float
    k_star: np.ndarray
    median_k_star: np.ndarray
    conflict_fraction: np.ndarray
    mean_p_hard_group: np.ndarray
    mean_p_easy_group: np.ndarray
    share_negative_agreement: np.ndarray
    k_star_agreed: np.ndarray
    seeds_agree: np.ndarray
    n_seeds: int
    share_cells_with_conflict: float
    share_cells_k_star_4_to_64: float
    area_in_conflict: dict
    cells_seeds_disagree: int


@functools.lru_cache(maxsize=16)
def _phase_entry(n_prompts: int, n_actions: int, start_logit: float, k_max: int) -> Callable:
    def entry(args):
        p_hard, separation, key = args
        bandit, theta0 = toy_bandit(
            key, n_prompts=n_prompts, p_hard=p_hard, separation=separation, n_actions=n_actions,
            start_logit=start_logit,
        )
        p = bandit.success(theta0)
        a = bandit.agreement_scores(theta0)
        hard = hard_mask(bandit)
        k_star = theory.critical_k_jax(p, a, bandit.prompt_weights, k_max=k_max)
        n_hard = jnp.sum(hard)
        return {
            "k_star": k_star,
            "p_hard_group": jnp.sum(jnp.where(hard, p, 0)) / jnp.maximum(n_hard, 1),
            "p_easy_group": jnp.sum(jnp.where(hard, 0, p)) / jnp.maximum(p.shape[0] - n_hard, 1),
            "share_negative": jnp.mean(a < 0),
        }

    return entry


def phase_diagram(
    *,
    key,
    n_p_hard: int = 12,
    n_separation: int = 12,
    n_seeds: int = 1,
    n_prompts: int = 64,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    start_logit: float = TOY_DEFAULTS["start_logit"],
    p_hard_range=(0.02, 0.6),
    separation_range=(0.0, 4.0),
    k_max: int = DEFAULT_K_MAX,
    devices=None,
) -> PhaseDiagram:
    """Confirmation 2: `k*` at the toy start over a `p_hard x separation` grid, one compiled call.

    All `n_p_hard * n_separation * n_seeds` regimes form one sweep axis, evaluated by one
    `jit(vmap)` sharded over `devices` (:func:`sim.sweep.sweep_map`), float32. Seeds use common
    random numbers across the grid (the same key for every cell), so the map is smooth in the
    parameters.

    Returns:
      :class:`PhaseDiagram`.
    """
    p_axis, s_axis, out = toy_grid_sweep(
        _phase_entry(n_prompts, n_actions, float(start_logit), k_max), key=key, n_p_hard=n_p_hard,
        n_separation=n_separation, n_seeds=n_seeds, p_hard_range=p_hard_range,
        separation_range=separation_range, devices=devices,
    )
    k_star = out["k_star"]
    conflict = k_star <= k_max
    med = np.median(np.where(conflict, k_star, np.inf), axis=0)  # "none" as +inf
    all_conflict, no_conflict = conflict.all(axis=0), (~conflict).all(axis=0)
    return PhaseDiagram(
        p_hard=p_axis,
        separation=s_axis,
        k_max=int(k_max),
        n_prompts=int(n_prompts),
        n_actions=int(n_actions),
        start_logit=float(start_logit),
        k_star=k_star,
        median_k_star=med,
        conflict_fraction=conflict.mean(axis=0),
        mean_p_hard_group=out["p_hard_group"].mean(axis=0),
        mean_p_easy_group=out["p_easy_group"].mean(axis=0),
        share_negative_agreement=out["share_negative"].mean(axis=0),
        k_star_agreed=np.where(all_conflict, med, np.nan),
        seeds_agree=all_conflict | no_conflict,
        n_seeds=int(n_seeds),
        share_cells_with_conflict=float((med <= k_max).mean()),
        share_cells_k_star_4_to_64=float(((med >= 4) & (med <= 64)).mean()),
        area_in_conflict=mean_interval(conflict.mean(axis=(1, 2))),
        cells_seeds_disagree=int((~(all_conflict | no_conflict)).sum()),
    )


# --------------------------------------------------------------------------- 3. one step


class OneStep(NamedTuple):
    """Confirmation 3. Every share is a Wilson interval `{"value", "lower", "upper", "n"}`
    (:func:`sim.intervals.wilson_interval`) over the conflict instances whose change is resolved
    in float64; None where none is.

    Attributes:
      n_instances, n_conflict, sizes, step_fraction, k_search: the settings and the conflict count.
      conflict: share of instances with `k* <= k_search`.
      k_values: `(k_search,)` how many conflict instances have each `k* = 1..k_search`.
      sgd, adam, project, project_safe: per step kind, shares of `J_1` down / `J_k` up, and
        (plain step) the descent-lemma gap and the counts below float64 resolution.
      hessian: largest `||hess p_i|| / (B^2/2)` and the conjectured supremum ratio.
      window_looseness: how far past the window pass@1 keeps falling and pass@k rising, and which
        factor of the window accounts for it (:func:`sim.first_order.window_looseness`).
      adam_predictors: what predicts that Adam's first step raises pass@1 under conflict
        (:func:`sim.first_order.adam_predictors`).
      scatter: `(<= 400,)` changes of `J_1`, `J_k` for the plain and Adam steps, and `eta`.
    """

    n_instances: int
    n_conflict: int
    sizes: dict
    step_fraction: float
    k_search: int
    conflict: dict
    k_values: np.ndarray
    sgd: dict
    adam: dict
    project: dict
    project_safe: dict
    hessian: dict
    window_looseness: dict
    adam_predictors: dict
    scatter: dict



def _random_instance(key, n_prompts, n_actions, dim):
    kf, kr, kt = jax.random.split(key, 3)
    features = jax.random.normal(kf, (n_prompts, dim), jnp.float64)
    rewards = (jax.random.uniform(kr, (n_prompts, n_actions), jnp.float64) < 0.3).astype(jnp.float64)
    theta = 1.5 * jax.random.normal(kt, (n_actions, dim), jnp.float64)
    return SoftmaxBandit(features, rewards), theta


def one_step(
    *,
    key,
    n_instances: int = 256,
    n_prompts: int = 6,
    n_actions: int = 4,
    dim: int = 3,
    k_search: int = 64,
    step_fraction: float = 0.5,
) -> OneStep:
    """Confirmation 3: one plain pass@k step inside the windows lowers `J_1` and raises `J_k`.

    Random instances (Gaussian features `(P, d)`, Bernoulli(0.3) reward tables, Gaussian `theta`
    of scale 1.5; float64). An instance is a *conflict instance* when `k* <= k_search`; it is
    stepped at `k = k*`, with `eta = step_fraction * min(eta_1, eta_k)`,
    `eta_1 = theory.pass1_decrease_window(I_k, ||grad J_k||^2, L_1)`,
    `eta_k = theory.passk_increase_window(L_k)`, `L_1 = theory.softmax_smoothness_bound(B)`,
    `L_k = theory.passk_smoothness_bound(B, k)`, `B = max_i ||psi_i||`.

    Also reported, on the same instances: one Adam step from a fresh state whose update has the
    same norm as the plain step (Adam's first step is `lr sign(g)` up to `eps`); one step of the
    same size along `theory.project_conflict(g_k, g_1)` and along
    `theory.project_step_safe(g_k, g_1, step_size=eta, smoothness=L_1)`; and the largest
    `||hess p_i|| / (B^2/2)` over prompts and instances (`jax.hessian`; SPEC conjectures the
    supremum `B^2/(3 sqrt 3)`, a ratio of `2/(3 sqrt 3) = 0.385`).

    Window looseness: along `grad J_k` from `theta`, the first step `eta_max` at which `J_1` no
    longer falls or `J_k` no longer rises (a scan over :data:`LOOSENESS_GRID` times the window's
    step `min(eta_1, eta_k)`, refined by bisection; censored at `10^6` times the window), divided
    by the window's step; the same for `J_1` alone against `eta_1` and `J_k` alone against
    `eta_k`. The pass@1 ratio factors exactly as

        eta_max1 / eta_1 = [L_1 / sum_i mu_i ||H_i||]        (the global constant)
                         x [sum_i mu_i ||H_i|| / sum_i mu_i |c_i|]   (the norm against the
                                                                 curvature along the step)
                         x [sum_i mu_i |c_i| / c]            (cancellation between prompts)
                         x [eta_max1 / eta_2]                (beyond second order)

    with `H_i = hess p_i(theta)`, `c_i = u^T H_i u` along `u = grad J_k / ||grad J_k||`,
    `c = sum_i mu_i c_i` and `eta_2 = 2 |I_k| / (c ||grad J_k||^2)` the zero of the second-order
    model of `J_1` (defined when `c > 0`; instances with `c <= 0` are counted apart).

    Adam predictors: Adam's first step is `lr g_k / (|g_k| + eps)`, a sign step, so to first
    order it lowers `J_1` iff `<g_1, sign g_k> < 0`, i.e. iff the `|g_1|`-weighted share of
    coordinates where `g_1` and `g_k` agree in sign is below 1/2; reported with the unweighted
    share and the spread of the second-moment estimates (`|g_k|`, coefficient of variation) as
    candidate predictors of `J_1` rising.
    """
    if not 0 < step_fraction < 1:
        raise ValueError(f"step_fraction must lie in (0, 1); got {step_fraction!r}")
    with jax.enable_x64(True):
        keys = _keys(key, n_instances)

        @jax.jit
        def compute(keys):
            def one(key):
                bandit, theta = _random_instance(key, n_prompts, n_actions, dim)
                p = bandit.success(theta)
                a = bandit.agreement_scores(theta)
                mu = bandit.prompt_weights
                k_star = theory.critical_k_jax(p, a, mu, k_max=k_search)
                conflict = k_star <= k_search
                k = jnp.where(conflict, k_star, 1)
                g1 = bandit.weighted_grad(theta, mu)
                gk = bandit.pass_at_k_grad(theta, k)
                inner = jnp.vdot(gk, g1)
                gk_sq = jnp.vdot(gk, gk)
                B = bandit.feature_norm
                L1 = theory.softmax_smoothness_bound(B)
                Lk = theory.passk_smoothness_bound(B, k)
                eta1 = theory.pass1_decrease_window(inner, gk_sq, L1)
                etak = theory.passk_increase_window(Lk)
                eta_w = jnp.minimum(eta1, etak)  # the window's step
                eta = step_fraction * eta_w
                j1 = lambda th: bandit.objective(th, 1)
                jk = lambda th: bandit.objective(th, k)
                J1, Jk = j1(theta), jk(theta)
                theta_sgd = theta + eta * gk
                d1_sgd = j1(theta_sgd) - J1
                dk_sgd = jk(theta_sgd) - Jk
                bound = eta * inner + 0.5 * L1 * eta**2 * gk_sq  # descent lemma
                # Adam, fresh state, update norm matched to the plain step.
                lr = eta * jnp.sqrt(gk_sq) / jnp.sqrt(gk.size)
                opt = optax.adam(lr)
                upd, _ = opt.update(-gk, opt.init(theta), theta)
                theta_adam = theta + upd
                d1_adam = j1(theta_adam) - J1
                dk_adam = jk(theta_adam) - Jk
                adam_inner = jnp.vdot(g1, upd)
                # Projected steps of the same size.
                flat_k, flat_1 = gk.reshape(-1), g1.reshape(-1)
                g_proj = theory.project_conflict(flat_k, flat_1).reshape(gk.shape)
                g_safe = theory.project_step_safe(flat_k, flat_1, step_size=eta, smoothness=L1).reshape(gk.shape)
                d1_proj = j1(theta + eta * g_proj) - J1
                dk_proj = jk(theta + eta * g_proj) - Jk
                d1_safe = j1(theta + eta * g_safe) - J1
                dk_safe = jk(theta + eta * g_safe) - Jk
                hess = jax.hessian(lambda th: bandit.success(th))(theta).reshape(n_prompts, theta.size, theta.size)
                hess_norm = jnp.max(jnp.abs(jnp.linalg.eigvalsh(hess)), axis=-1)
                # Window looseness: first step along g_k where J_1 stops falling / J_k stops rising.
                grid = eta_w * jnp.asarray(LOOSENESS_GRID)
                eta_max1 = first_turn(lambda e: j1(theta + e * gk) - J1 >= 0, grid)
                eta_maxk = first_turn(lambda e: jk(theta + e * gk) - Jk <= 0, grid)
                u = flat_k / jnp.sqrt(gk_sq)
                curv_i = jnp.einsum("a,iab,b->i", u, hess, u)  # c_i = u^T H_i u
                # Adam's candidates, coordinate by coordinate.
                agree = jnp.sign(flat_1) == jnp.sign(flat_k)
                abs_k = jnp.abs(flat_k)
                return dict(
                    J1=J1, Jk=Jk, conflict=conflict, k=k, eta=eta, eta1=eta1, etak=etak, inner=inner,
                    gk_sq=gk_sq, L1=L1,
                    d1_sgd=d1_sgd, dk_sgd=dk_sgd, bound_gap=d1_sgd - bound,
                    d1_adam=d1_adam, dk_adam=dk_adam, adam_inner=adam_inner,
                    d1_proj=d1_proj, dk_proj=dk_proj, d1_safe=d1_safe, dk_safe=dk_safe,
                    hess_ratio=jnp.max(hess_norm) / L1,
                    eta_max1=eta_max1, eta_maxk=eta_maxk,
                    mean_hess_norm=mu @ hess_norm, mean_abs_curv=mu @ jnp.abs(curv_i), curv=mu @ curv_i,
                    sign_agreement=jnp.mean(agree.astype(flat_1.dtype)),
                    weighted_sign_agreement=jnp.sum(jnp.abs(flat_1) * agree) / jnp.sum(jnp.abs(flat_1)),
                    second_moment_spread=jnp.std(abs_k) / jnp.mean(abs_k),
                )

            return jax.vmap(one)(keys)

        r = {name: np.asarray(v) for name, v in compute(keys).items()}
    c = r["conflict"]
    n_c = int(c.sum())
    # float64 cannot resolve a change below a few ulps of the objective (J_k is often within
    # 1e-16 of 1): such changes are counted as unresolved and left out of the shares.
    tol_1 = 8 * np.finfo(np.float64).eps * np.abs(r["J1"])
    tol_k = 8 * np.finfo(np.float64).eps * np.abs(r["Jk"])

    def share(hits, among):
        return wilson_interval(int((hits & among).sum()), int(among.sum())) if among.any() else None

    def frac(change, sign, tol):
        return share(sign * change > 0, c & (np.abs(change) > tol))

    def both(d1, dk):
        return share((d1 < 0) & (dk > 0), c & (np.abs(d1) > tol_1) & (np.abs(dk) > tol_k))

    def unresolved(change, tol):
        return int((c & (np.abs(change) <= tol)).sum())

    return OneStep(
        n_instances=int(n_instances),
        n_conflict=n_c,
        sizes={"n_prompts": n_prompts, "n_actions": n_actions, "dim": dim},
        step_fraction=float(step_fraction),
        k_search=int(k_search),
        conflict=wilson_interval(n_c, int(n_instances)),
        k_values=np.bincount(r["k"][c], minlength=k_search + 1)[1:],
        sgd={
            "share_pass1_down": frac(r["d1_sgd"], -1, tol_1),
            "share_passk_up": frac(r["dk_sgd"], 1, tol_k),
            "share_both": both(r["d1_sgd"], r["dk_sgd"]),
            "unresolved_pass1": unresolved(r["d1_sgd"], tol_1),
            "unresolved_passk": unresolved(r["dk_sgd"], tol_k),
            "max_descent_lemma_gap": (float(r["bound_gap"][c].max()) if n_c else None),
            "max_descent_lemma_gap_over_rounding": (float((r["bound_gap"][c] / tol_1[c]).max()) if n_c else None),
            "share_window_from_pass1": share(r["eta1"] <= r["etak"], c),
        },
        adam={
            "share_pass1_down": frac(r["d1_adam"], -1, tol_1),
            "share_passk_up": frac(r["dk_adam"], 1, tol_k),
            "share_both": both(r["d1_adam"], r["dk_adam"]),
            "share_update_inner_negative": share(r["adam_inner"] < 0, c),
        },
        project={"share_pass1_down": frac(r["d1_proj"], -1, tol_1), "share_passk_up": frac(r["dk_proj"], 1, tol_k)},
        project_safe={
            "share_pass1_down": frac(r["d1_safe"], -1, tol_1),
            "share_passk_up": frac(r["dk_safe"], 1, tol_k),
            "unresolved_pass1": unresolved(r["d1_safe"], tol_1),
        },
        hessian={
            "max_ratio_to_bound": float(r["hess_ratio"].max()),
            "conjectured_ratio": 2 / (3 * math.sqrt(3)),
        },
        window_looseness=window_looseness(r, c),
        adam_predictors=adam_predictors(r, c & (np.abs(r["d1_adam"]) > tol_1)),
        scatter={
            "d1_sgd": r["d1_sgd"][c][:400],
            "dk_sgd": r["dk_sgd"][c][:400],
            "d1_adam": r["d1_adam"][c][:400],
            "dk_adam": r["dk_adam"][c][:400],
            "eta": r["eta"][c][:400],
        },
    )


# --------------------------------------------------------------------------- 4. dynamics


class RunSummary(NamedTuple):
    """One rule of one dynamics run, over seeds, with one row per `k` and one column per step.

    Attributes:
      mean, std: :class:`sim.train.Records` of `(K, T)` means and standard deviations (`ddof = 1`;
        0 for one seed) over seeds of the float records (`j1`, `jk`, `inner`, `mean_agreement`,
        `cos`, `update_inner`; the others None).
      half: :class:`sim.train.Records` of `(K, T)` half-widths of the 95% t interval of each mean
        (`t_{S-1} std / sqrt(S)`, as :func:`sim.intervals.mean_interval`; 0 for one seed).
      k_star_median: `(K, T)` median `k*` over seeds, none counted as `+inf`.
      k_used_mean: `(K, T - 1)` mean order used.
      ks: the orders; n_seeds: the seeds averaged.
      trend: per `k`, `{"k", "j1", "jk"}` with the start, end, min, argmin, max and the number of
        steps over which the mean curve first falls, of `J_1` and `J_k`.
    """

    mean: Any
    std: Any
    half: Any
    k_star_median: np.ndarray
    k_used_mean: np.ndarray
    ks: list
    n_seeds: int
    trend: list


#: The records a :class:`RunSummary` averages over seeds.
SUMMARISED = (RECORD_NAMES.j1, RECORD_NAMES.jk, RECORD_NAMES.inner, RECORD_NAMES.mean_agreement, RECORD_NAMES.cos,
              RECORD_NAMES.update_inner)


def _trend(j):
    """Start, end, minimum, argmin, maximum of a mean curve, and how many steps it first falls."""
    j = np.asarray(j, np.float64)
    return {
        "start": float(j[0]),
        "end": float(j[-1]),
        "min": float(j.min()),
        "argmin": int(j.argmin()),
        "max": float(j.max()),
        "monotone_down_steps": int(np.argmax(np.diff(j) >= 0)) if (np.diff(j) >= 0).any() else int(len(j) - 1),
    }


def _summarise(out: dict, ks, n_seeds: int, k_max: int) -> RunSummary:
    """Mean and spread over seeds of a `(K, S, T)` record dict; `k*` as a median with `+inf`."""
    mean, std, half = {}, {}, {}
    for name in SUMMARISED:
        v = np.asarray(out[name], np.float64)
        mean[name] = v.mean(axis=-2)
        std[name] = v.std(axis=-2, ddof=1) if n_seeds > 1 else np.zeros_like(mean[name])
        half[name] = mean_half_width(std[name], n_seeds)
    k_star = np.asarray(out[RECORD_NAMES.k_star])
    j1, jk = mean[RECORD_NAMES.j1], mean[RECORD_NAMES.jk]
    return RunSummary(
        mean=Records(**mean),
        std=Records(**std),
        half=Records(**half),
        k_star_median=np.median(np.where(k_star <= k_max, k_star, np.inf), axis=-2),
        k_used_mean=np.asarray(out[RECORD_NAMES.k_used], np.float64).mean(axis=-2),
        ks=list(ks),
        n_seeds=int(n_seeds),
        trend=[{"k": int(k), "j1": _trend(j1[i]), "jk": _trend(jk[i])} for i, k in enumerate(ks)],
    )


class Dynamics(NamedTuple):
    """Confirmation 4: the settings, `k*` at the start, and `runs[name][rule]` (:class:`RunSummary`)."""

    k_star0: int
    k_low: int
    k_high: int
    ks: list
    steps: int
    n_samples: int
    learning_rate: float
    adam_learning_rate: float
    mixture_weight: float
    regime: dict
    runs: dict


def dynamics(
    *,
    key,
    steps: int = 60,
    n_seeds: int = 2,
    n_samples: int = 40,
    learning_rate: float = 1.0,
    adam_learning_rate: float = 0.05,
    mixture_weight: float = 1.0,
    n_prompts: int = TOY_DEFAULTS["n_prompts"],
    sampled=("pkpo-loo/sgd", "grouped-passk/sgd", "pkpo-loo/adam"),
    k_max: int = 1024,
) -> Dynamics:
    """Confirmation 4: training dynamics from the toy start (default regime, float32).

    With `k*` the critical order at the start, `k_low = max(2, k* // 2)` (no conflict) and
    `k_high` the power of two at or above `4 k*`, capped at `n_samples - 1` (conflict). Every run
    covers `ks = (1, k_low, k_high)`: pass@k ascent at `k = 1` *is* pass@1 ascent (`w_1 = 1`; the
    PKPO-LOO estimator at `k = 1` is RLOO, and the group-normalised advantage at `k = 1` is GRPO).
    Each line is one `train_sweep` call (rules, `k` and seeds are vmap axes of one compile):

    - `"exact/sgd"`: exact gradients, plain steps (`optax.sgd(learning_rate)`), rules `"passk"`,
      `"project"`, `"project-safe"`, `"mixture"` (fixed `lambda = mixture_weight`: ascent on
      `J_k + lambda J_1`) and `"safe-k"`; one seed (deterministic);
    - `"exact/adam"`: exact gradients, `optax.adam(adam_learning_rate)`, rule `"passk"`;
    - the sampled runs named in `sampled`, `"estimator/optimizer"` (default `"pkpo-loo/sgd"`,
      `"grouped-passk/sgd"`, `"pkpo-loo/adam"`): `n_samples` answers per prompt over `n_seeds`
      seeds, rule `"passk"`.

    Returns:
      :class:`Dynamics`, with `runs[name][rule]` a :class:`RunSummary` (rows `k = 1, k_low,
      k_high`).
    """
    with jax.enable_x64(False):
        bandit, theta0 = toy_bandit(jax.random.fold_in(key, 0), n_prompts=n_prompts, dtype=jnp.float32)
        k_star0 = int(bandit.diagnostics(theta0, 1, k_max=k_max).k_star)
        k_star0 = theory.k_star_or_none(k_star0, k_max)
        if k_star0 is None:
            raise RuntimeError("the toy start shows no conflict; dynamics needs one (check TOY_DEFAULTS)")
        k_low = max(2, k_star0 // 2)
        k_high = min(2 ** math.ceil(math.log2(4 * k_star0)), n_samples - 1)
        if not k_low < k_star0 <= k_high:
            raise RuntimeError(f"cannot place k below and above k*={k_star0} with n_samples={n_samples}")
        ks = [1, k_low, k_high]
        bandits = jax.tree_util.tree_map(lambda x: x[None], bandit)
        thetas = theta0[None]
        seed_keys = _keys(jax.random.fold_in(key, 1), n_seeds)
        safe_rules = ("passk", "project", "project-safe", "mixture", "safe-k")
        plan = [
            ("exact/sgd", dict(rule=safe_rules, keys=seed_keys[:1], mixture_weight=mixture_weight)),
            ("exact/adam", dict(rule=("passk",), keys=seed_keys[:1], optimizer="adam")),
        ]
        for name in sampled:
            estimator, _, optimizer = str(name).partition("/")
            if estimator not in ESTIMATORS[1:] or optimizer not in ("sgd", "adam", "momentum"):
                raise ValueError(f"sampled runs are named 'estimator/optimizer' (e.g. 'pkpo-loo/sgd'); got {name!r}")
            plan.append((name, dict(rule=("passk",), keys=seed_keys, estimator=estimator, optimizer=optimizer)))
        runs = {}
        for name, cfg in plan:
            cfg = dict(cfg)
            estimator = cfg.pop("estimator", "exact")
            optimizer = cfg.pop("optimizer", "sgd")
            out = train_sweep(
                bandits, thetas, ks=ks, steps=steps, estimator=estimator, optimizer=optimizer,
                n_samples=None if estimator == "exact" else n_samples,
                learning_rate=adam_learning_rate if optimizer == "adam" else learning_rate,
                k_max=k_max, **cfg,
            )
            runs[name] = {
                rule: _summarise({n: v[u, 0] for n, v in out.items()}, ks, len(cfg["keys"]), k_max)  # (K, S, T)
                for u, rule in enumerate(cfg["rule"])
            }
    return Dynamics(
        k_star0=int(k_star0),
        k_low=int(k_low),
        k_high=int(k_high),
        ks=ks,
        steps=int(steps),
        n_samples=int(n_samples),
        learning_rate=float(learning_rate),
        adam_learning_rate=float(adam_learning_rate),
        mixture_weight=float(mixture_weight),
        regime=dict(TOY_DEFAULTS, n_prompts=n_prompts),
        runs=runs,
    )


# --------------------------------------------------------------------------- 5. estimators


class EstimatorCheck(NamedTuple):
    """Confirmation 5.

    Attributes:
      k, n_samples, n_draws, n_prompts, n_parameters: the settings.
      estimators: per estimator, `z_max`, `relative_error`, `cos_expected_vs_grad_jk`,
        `relative_total_variance`, `relative_variance_along_grad_jk` (None when the expectation
        has no component along `grad J_k`) and `uses_k`.
      implied_weights: `{"p": grid, "curves": {estimator: {"finite_n", "limit"}}}`, `v(p)` on the
        grid at `n_samples` and in the limit `n -> inf`.
    """

    k: int
    n_samples: int
    n_draws: int
    n_prompts: int
    n_parameters: int
    estimators: dict
    implied_weights: dict


def estimator_check(
    *,
    key,
    n_draws: int = 2000,
    n_prompts: int = 32,
    k: int = 4,
    n_samples: int = 8,
    estimators=ESTIMATORS[1:],
) -> EstimatorCheck:
    """Confirmation 5: the mean sampled update equals its exact expectation; variances compared.

    At the toy start (default regime, `n_prompts` prompts, float64), `n_draws` independent updates
    of each estimator (:func:`sim.answers.sampled_update`, `n_samples` answers per prompt, order
    `k`) are averaged and compared with the exact expectation
    `sum_i mu_i v(p_i) grad p_i`, `v = theory.implied_prompt_weight(method, p, k=k, n=n_samples)`
    (for the PKPO variants this is `grad J_k` itself). Reported per estimator: the largest
    `|mean - exact| / stderr` over parameters (`z_max`), the relative error
    `||mean - exact|| / ||exact||`, the cosine between the exact expectation and `grad J_k`, the
    total variance `E||u - E u||^2` relative to `||E u||^2`, and the variance of the component
    along `grad J_k`, relative to the squared projection of `E u` on it. Also the implied weights
    `v(p)` on a grid of `p` (at `n_samples` and in the limit) for the figure.
    """
    estimators = tuple(estimators)
    for est in estimators:
        if est not in ESTIMATORS[1:]:
            raise ValueError(f"estimators must be among {ESTIMATORS[1:]}; got {est!r}")
    grid = np.linspace(0.0, 1.0, 101)
    with jax.enable_x64(True):
        bandit, theta0 = toy_bandit(jax.random.fold_in(key, 0), n_prompts=n_prompts, dtype=jnp.float64)
        draw_keys = _keys(jax.random.fold_in(key, 1), n_draws)

        @jax.jit
        def compute(bandit, theta0, draw_keys):
            p = bandit.success(theta0)
            gk = bandit.pass_at_k_grad(theta0, k)
            p_and_grid = jnp.concatenate([p, jnp.asarray(grid, p.dtype)])  # one weight call per method
            expected, finite, limit = {}, {}, {}
            for est in estimators:
                kk = k if est in PASSK_ESTIMATORS else None
                w = theory.implied_prompt_weight(est, p_and_grid, k=kk, n=n_samples)
                expected[est] = bandit.weighted_grad(theta0, bandit.prompt_weights * w[: p.shape[0]])
                finite[est] = w[p.shape[0]:]
                limit[est] = theory.implied_prompt_weight(est, jnp.asarray(grid, p.dtype), k=kk, n=None)
            samples = jax.vmap(
                lambda kk_: sampled_updates(bandit, theta0, estimators=estimators, k=k, n_samples=n_samples, key=kk_)
            )(draw_keys)  # every estimator on the same draws
            return gk, expected, finite, limit, samples

        gk, expected, finite, limit, samples = jax.tree_util.tree_map(np.asarray, compute(bandit, theta0, draw_keys))
    u_hat = gk.reshape(-1) / np.linalg.norm(gk)
    rows = {}
    curves = {}
    for est in estimators:
        curves[est] = {"finite_n": finite[est], "limit": limit[est]}
        e = expected[est].reshape(-1)
        u = samples[est].reshape(n_draws, -1)
        mean = u.mean(axis=0)
        stderr = u.std(axis=0, ddof=1) / math.sqrt(n_draws)
        z = np.abs(mean - e) / np.where(stderr > 0, stderr, np.inf)
        centred = u - mean
        along = centred @ u_hat
        e_along = float(e @ u_hat)
        rows[est] = {
            "z_max": float(z.max()),
            "relative_error": float(np.linalg.norm(mean - e) / np.linalg.norm(e)),
            "cos_expected_vs_grad_jk": float(e_along / np.linalg.norm(e)),
            "relative_total_variance": float(np.mean(np.sum(centred**2, axis=1)) / np.dot(e, e)),
            "relative_variance_along_grad_jk": float(np.mean(along**2) / e_along**2) if e_along != 0 else None,
            "uses_k": est in PASSK_ESTIMATORS,
        }
    return EstimatorCheck(
        k=int(k),
        n_samples=int(n_samples),
        n_draws=int(n_draws),
        n_prompts=int(n_prompts),
        n_parameters=int(np.prod(theta0.shape)),
        estimators=rows,
        implied_weights={"p": grid, "curves": curves},
    )


# --------------------------------------------------------------------------- all together


class Confirmations(NamedTuple):
    """Every confirmation's numbers (:func:`run_all`).

    Attributes:
      toy: the toy start (:func:`sim.toy_diagnostics`, a JSON-ready dict).
      critical_k, phase_diagram, one_step, dynamics, estimators: confirmations 1 to 5.
      meta: `quick`, the sizes, seconds per part, device count and backend.
    """

    toy: dict
    critical_k: CriticalK
    phase_diagram: PhaseDiagram
    one_step: OneStep
    dynamics: Dynamics
    estimators: EstimatorCheck
    meta: dict


def run_all(*, quick: bool, key, progress: Callable[[str], None] | None = None) -> Confirmations:
    """Every confirmation's numbers (quick: small sizes, under a minute; full: the figures).

    Args:
      quick: use :data:`QUICK` sizes instead of :data:`FULL`.
      key: `jax.random` key; each confirmation gets its own `fold_in`.
      progress: optional callback receiving one line per finished part.

    Returns:
      :class:`Confirmations` (its JSON: :func:`sim.experiments_json.to_json`).
    """
    sizes = QUICK if quick else FULL
    say = progress or (lambda _msg: None)
    timings = {}
    results = {}

    def part(name, fn):
        t0 = time.perf_counter()
        results[name] = fn()
        timings[name] = round(time.perf_counter() - t0, 2)
        say(f"{name}: {timings[name]:.1f} s")

    part("toy", lambda: toy_diagnostics(key=jax.random.fold_in(key, 100), k=16))
    part("critical_k", lambda: critical_k_agreement(key=jax.random.fold_in(key, 1), **sizes["critical_k"]))
    part("phase_diagram", lambda: phase_diagram(key=jax.random.fold_in(key, 2), **sizes["phase"]))
    part("one_step", lambda: one_step(key=jax.random.fold_in(key, 3), **sizes["one_step"]))
    part("dynamics", lambda: dynamics(key=jax.random.fold_in(key, 4), **sizes["dynamics"]))
    part("estimators", lambda: estimator_check(key=jax.random.fold_in(key, 5), **sizes["estimators"]))
    meta = {
        "quick": bool(quick),
        "sizes": sizes,
        "seconds": timings,
        "n_devices": len(jax.devices()),
        "backend": jax.default_backend(),
    }
    return Confirmations(**results, meta=meta)
