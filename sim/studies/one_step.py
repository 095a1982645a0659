"""Confirmation 3: one plain pass@k step inside the windows lowers `J_1` and raises `J_k`.

:func:`one_step` draws random instances and, on each conflict instance, takes one plain step, one
Adam step and two projected steps of the window's size, measures the Hessians of the `p_i`, and
searches along `grad J_k` for where the first-order picture stops (:mod:`sim.studies.first_order`).
The per-instance numbers come from named pieces (:func:`_window`, :func:`_plain_step`,
:func:`_adam_step`, :func:`_projected_steps`, :func:`_curvature`, :func:`_looseness`,
:func:`_sign_statistics`), one compiled `vmap` over instances; :class:`_Tally` turns them into
shares. Numbers only: the JSON form is :func:`sim.studies.serialise.to_json`, the figures
:mod:`passk.plots.bandit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import theory
from sim.bandit import SoftmaxBandit
from sim.intervals import wilson_interval
from sim.studies.first_order import LOOSENESS_GRID, adam_predictors, first_turn, window_looseness

__all__ = ["OneStep", "one_step"]

#: Conflict instances kept for the figure's scatter.
SCATTER = 400


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
        factor of the window accounts for it (:func:`sim.studies.first_order.window_looseness`).
      adam_predictors: what predicts that Adam's first step raises pass@1 under conflict
        (:func:`sim.studies.first_order.adam_predictors`).
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
    """Gaussian features `(P, d)`, a Bernoulli(0.3) reward table and a Gaussian `theta` of scale 1.5."""
    kf, kr, kt = jax.random.split(key, 3)
    features = jax.random.normal(kf, (n_prompts, dim), jnp.float64)
    rewards = (jax.random.uniform(kr, (n_prompts, n_actions), jnp.float64) < 0.3).astype(jnp.float64)
    theta = 1.5 * jax.random.normal(kt, (n_actions, dim), jnp.float64)
    return SoftmaxBandit(features, rewards), theta


class _Window(NamedTuple):
    """One instance's order, gradients and one-step window (traced values)."""

    conflict: jax.Array  # k* <= k_search
    k: jax.Array  # the order stepped at: k*, or 1 without conflict
    g1: jax.Array  # grad J_1
    gk: jax.Array  # grad J_k
    inner: jax.Array  # I_k = <grad J_k, grad J_1>
    gk_sq: jax.Array  # ||grad J_k||^2
    L1: jax.Array  # the smoothness bound of J_1
    eta1: jax.Array  # the pass@1 decrease window
    etak: jax.Array  # the pass@k increase window
    eta_w: jax.Array  # the window's step, min(eta1, etak)
    eta: jax.Array  # the step taken, step_fraction * eta_w


def _window(bandit: SoftmaxBandit, theta, *, k_search: int, step_fraction: float) -> _Window:
    """`k*` (searched up to `k_search`), `grad J_1`, `grad J_k` at `k = k*` and the window
    `min(eta_1, eta_k)` with `L_1 = softmax_smoothness_bound(B)`, `L_k = passk_smoothness_bound(B, k)`."""
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
    eta1 = theory.pass1_decrease_window(inner, gk_sq, L1)
    etak = theory.passk_increase_window(theory.passk_smoothness_bound(B, k))
    eta_w = jnp.minimum(eta1, etak)
    return _Window(conflict, k, g1, gk, inner, gk_sq, L1, eta1, etak, eta_w, step_fraction * eta_w)


class _Objectives(NamedTuple):
    """`J_1` and `J_k` as functions of the parameters, and their values at the instance's `theta`."""

    j1: Callable
    jk: Callable
    J1: jax.Array
    Jk: jax.Array

    def change(self, theta_new):
        """The changes of `J_1` and `J_k` from `theta` to `theta_new`."""
        return self.j1(theta_new) - self.J1, self.jk(theta_new) - self.Jk


def _objectives(bandit: SoftmaxBandit, theta, k) -> _Objectives:
    j1 = lambda th: bandit.objective(th, 1)
    jk = lambda th: bandit.objective(th, k)
    return _Objectives(j1, jk, j1(theta), jk(theta))


def _plain_step(obj: _Objectives, w: _Window, theta) -> dict:
    """The step `eta grad J_k`, and the change of `J_1` above the descent lemma's bound."""
    d1, dk = obj.change(theta + w.eta * w.gk)
    bound = w.eta * w.inner + 0.5 * w.L1 * w.eta**2 * w.gk_sq  # descent lemma
    return dict(d1_sgd=d1, dk_sgd=dk, bound_gap=d1 - bound)


def _adam_step(obj: _Objectives, w: _Window, theta) -> dict:
    """One Adam step from a fresh state, its update's norm matched to the plain step."""
    lr = w.eta * jnp.sqrt(w.gk_sq) / jnp.sqrt(w.gk.size)
    opt = optax.adam(lr)
    update, _ = opt.update(-w.gk, opt.init(theta), theta)
    d1, dk = obj.change(theta + update)
    return dict(d1_adam=d1, dk_adam=dk, adam_inner=jnp.vdot(w.g1, update))


def _projected_steps(obj: _Objectives, w: _Window, theta) -> dict:
    """Steps of size `eta` along `theory.project_conflict` and `theory.project_step_safe`."""
    flat_k, flat_1 = w.gk.reshape(-1), w.g1.reshape(-1)
    g_proj = theory.project_conflict(flat_k, flat_1).reshape(w.gk.shape)
    g_safe = theory.project_step_safe(flat_k, flat_1, step_size=w.eta, smoothness=w.L1).reshape(w.gk.shape)
    d1_proj, dk_proj = obj.change(theta + w.eta * g_proj)
    d1_safe, dk_safe = obj.change(theta + w.eta * g_safe)
    return dict(d1_proj=d1_proj, dk_proj=dk_proj, d1_safe=d1_safe, dk_safe=dk_safe)


def _curvature(bandit: SoftmaxBandit, w: _Window, theta) -> dict:
    """The Hessians `H_i` of the `p_i`: the largest `||H_i|| / L_1`, and the `mu`-weighted
    `||H_i||`, `|c_i|` and `c_i = u^T H_i u` along `u = grad J_k / ||grad J_k||`."""
    mu = bandit.prompt_weights
    hess = jax.hessian(lambda th: bandit.success(th))(theta).reshape(mu.shape[0], theta.size, theta.size)
    hess_norm = jnp.max(jnp.abs(jnp.linalg.eigvalsh(hess)), axis=-1)
    u = w.gk.reshape(-1) / jnp.sqrt(w.gk_sq)
    curv_i = jnp.einsum("a,iab,b->i", u, hess, u)
    return dict(
        hess_ratio=jnp.max(hess_norm) / w.L1,
        mean_hess_norm=mu @ hess_norm,
        mean_abs_curv=mu @ jnp.abs(curv_i),
        curv=mu @ curv_i,
    )


def _looseness(obj: _Objectives, w: _Window, theta) -> dict:
    """The first step along `grad J_k` at which `J_1` stops falling / `J_k` stops rising."""
    grid = w.eta_w * jnp.asarray(LOOSENESS_GRID)
    eta_max1 = first_turn(lambda e: obj.j1(theta + e * w.gk) - obj.J1 >= 0, grid)
    eta_maxk = first_turn(lambda e: obj.jk(theta + e * w.gk) - obj.Jk <= 0, grid)
    return dict(eta_max1=eta_max1, eta_maxk=eta_maxk)


def _sign_statistics(w: _Window) -> dict:
    """Adam's candidate predictors, coordinate by coordinate: the share of coordinates where
    `g_1` and `g_k` agree in sign, the same weighted by `|g_1|`, and the coefficient of variation
    of `|g_k|`."""
    flat_1, flat_k = w.g1.reshape(-1), w.gk.reshape(-1)
    agree = jnp.sign(flat_1) == jnp.sign(flat_k)
    abs_k = jnp.abs(flat_k)
    return dict(
        sign_agreement=jnp.mean(agree.astype(flat_1.dtype)),
        weighted_sign_agreement=jnp.sum(jnp.abs(flat_1) * agree) / jnp.sum(jnp.abs(flat_1)),
        second_moment_spread=jnp.std(abs_k) / jnp.mean(abs_k),
    )


def _instance(key, *, n_prompts: int, n_actions: int, dim: int, k_search: int, step_fraction: float) -> dict:
    """Every per-instance number of the confirmation, by name (traced; `vmap` it over keys)."""
    bandit, theta = _random_instance(key, n_prompts, n_actions, dim)
    w = _window(bandit, theta, k_search=k_search, step_fraction=step_fraction)
    obj = _objectives(bandit, theta, w.k)
    return dict(
        J1=obj.J1,
        Jk=obj.Jk,
        conflict=w.conflict,
        k=w.k,
        eta=w.eta,
        eta1=w.eta1,
        etak=w.etak,
        inner=w.inner,
        gk_sq=w.gk_sq,
        L1=w.L1,
        **_plain_step(obj, w, theta),
        **_adam_step(obj, w, theta),
        **_projected_steps(obj, w, theta),
        **_curvature(bandit, w, theta),
        **_looseness(obj, w, theta),
        **_sign_statistics(w),
    )


@functools.partial(jax.jit, static_argnames=("n_prompts", "n_actions", "dim", "k_search", "step_fraction"))
def _instances(keys, **sizes) -> dict:
    return jax.vmap(functools.partial(_instance, **sizes))(keys)


class _Tally:
    """Shares over the conflict instances whose changes float64 resolves.

    float64 cannot resolve a change below a few ulps of the objective (`J_k` is often within
    `1e-16` of 1): such changes are counted as unresolved and left out of the shares.
    """

    def __init__(self, r: dict):
        self.c = r["conflict"]
        self.tol_1 = 8 * np.finfo(np.float64).eps * np.abs(r["J1"])
        self.tol_k = 8 * np.finfo(np.float64).eps * np.abs(r["Jk"])

    def share(self, hits, among):
        """Wilson interval of `hits` among `among` (None where `among` is empty)."""
        return wilson_interval(int((hits & among).sum()), int(among.sum())) if among.any() else None

    def pass1_down(self, d1):
        return self.share(d1 < 0, self.c & (np.abs(d1) > self.tol_1))

    def passk_up(self, dk):
        return self.share(dk > 0, self.c & (np.abs(dk) > self.tol_k))

    def both(self, d1, dk):
        return self.share((d1 < 0) & (dk > 0), self.c & (np.abs(d1) > self.tol_1) & (np.abs(dk) > self.tol_k))

    def unresolved_pass1(self, d1):
        return int((self.c & (np.abs(d1) <= self.tol_1)).sum())

    def unresolved_passk(self, dk):
        return int((self.c & (np.abs(dk) <= self.tol_k)).sum())


def _plain_summary(r: dict, t: _Tally) -> dict:
    c, n_c = t.c, int(t.c.sum())
    return {
        "share_pass1_down": t.pass1_down(r["d1_sgd"]),
        "share_passk_up": t.passk_up(r["dk_sgd"]),
        "share_both": t.both(r["d1_sgd"], r["dk_sgd"]),
        "unresolved_pass1": t.unresolved_pass1(r["d1_sgd"]),
        "unresolved_passk": t.unresolved_passk(r["dk_sgd"]),
        "max_descent_lemma_gap": (float(r["bound_gap"][c].max()) if n_c else None),
        "max_descent_lemma_gap_over_rounding": (float((r["bound_gap"][c] / t.tol_1[c]).max()) if n_c else None),
        "share_window_from_pass1": t.share(r["eta1"] <= r["etak"], c),
    }


def _adam_summary(r: dict, t: _Tally) -> dict:
    return {
        "share_pass1_down": t.pass1_down(r["d1_adam"]),
        "share_passk_up": t.passk_up(r["dk_adam"]),
        "share_both": t.both(r["d1_adam"], r["dk_adam"]),
        "share_update_inner_negative": t.share(r["adam_inner"] < 0, t.c),
    }


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
    `eta_k`. The pass@1 ratio factors exactly as::

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

    Returns:
      :class:`OneStep`.
    """
    if not 0 < step_fraction < 1:
        raise ValueError(f"step_fraction must lie in (0, 1); got {step_fraction!r}")
    with jax.enable_x64(True):
        keys = jax.random.split(key, n_instances)
        out = _instances(
            keys, n_prompts=n_prompts, n_actions=n_actions, dim=dim, k_search=k_search, step_fraction=step_fraction
        )
        r = {name: np.asarray(v) for name, v in out.items()}
    t = _Tally(r)
    c, n_c = t.c, int(t.c.sum())
    return OneStep(
        n_instances=int(n_instances),
        n_conflict=n_c,
        sizes={"n_prompts": n_prompts, "n_actions": n_actions, "dim": dim},
        step_fraction=float(step_fraction),
        k_search=int(k_search),
        conflict=wilson_interval(n_c, int(n_instances)),
        k_values=np.bincount(r["k"][c], minlength=k_search + 1)[1:],
        sgd=_plain_summary(r, t),
        adam=_adam_summary(r, t),
        project={"share_pass1_down": t.pass1_down(r["d1_proj"]), "share_passk_up": t.passk_up(r["dk_proj"])},
        project_safe={
            "share_pass1_down": t.pass1_down(r["d1_safe"]),
            "share_passk_up": t.passk_up(r["dk_safe"]),
            "unresolved_pass1": t.unresolved_pass1(r["d1_safe"]),
        },
        hessian={
            "max_ratio_to_bound": float(r["hess_ratio"].max()),
            "conjectured_ratio": 2 / (3 * math.sqrt(3)),
        },
        window_looseness=window_looseness(r, c),
        adam_predictors=adam_predictors(r, c & (np.abs(r["d1_adam"]) > t.tol_1)),
        scatter={name: r[name][c][:SCATTER] for name in ("d1_sgd", "dk_sgd", "d1_adam", "dk_adam", "eta")},
    )
