"""Where the last-layer proxy of the agreement scores is wrong, and a case it cannot see.

Large-model studies cannot afford agreements over all parameters, so they compute them over the
output head ("last layer", :data:`sim.transformer.model.LAST_LAYER`), from the final hidden state
and a few Monte Carlo answers per prompt. Three studies of that proxy:

- :func:`proxy_errors`: at a warm start, the prompts whose exact last-layer agreement has the wrong
  sign (against the agreement over all parameters), by success `p`, by hard/easy, and the share of
  the pass@k weight `w_k(p)` they carry at each `k`.
- :func:`monte_carlo_proxy`: the proxy as such studies compute it: `n` sampled answers per prompt,
  their rewards, the score vectors `grad_U log pi(y | x)` of the output head `U` (a function of the
  final hidden state alone), and the unbiased estimates of SPEC section 10
  (:func:`theory.sampled_agreement_scores`, :func:`theory.sampled_critical_k`), set next to the
  exact values.
- :func:`hidden_conflict_case`: a two-layer softmax policy, constructed so that the hidden states
  of a hard and an easy prompt are orthogonal. The output-head kernel between them,
  `<u_h, u_e> <h_h, h_e>` with `u(x) = sum_y pi(y|x) (r_y - p(x)) e_y`, is then exactly 0, while
  the kernel through the first layer, `<W^T u_h, W^T u_e> <psi_h, psi_e>`, is negative. The hard
  prompt interferes negatively with the easy one and pass@k ascent lowers pass@1 past `k*`, but
  the last-layer agreement of every prompt is its own positive self term: the proxy sees no
  conflict at any `k`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.intervals import wilson_interval
from sim.records import RECORD_NAMES as R
from sim.transformer import exact as _exact
from sim.transformer import model as _model
from sim.transformer import train as _train

__all__ = ["P_BINS", "proxy_errors", "monte_carlo_proxy", "hidden_conflict_case"]

#: Edges of the success bins of :func:`proxy_errors`.
P_BINS = (0.0, 0.05, 0.5, 0.95, 1.0)


def proxy_errors(p, agreement, agreement_proxy, is_hard, ks) -> dict:
    """Where the proxy's agreement sign is wrong, and how much pass@k weight those prompts carry.

    A prompt's proxy sign is wrong when `sign(a_proxy_i) != sign(a_i)`. Reported as Wilson
    intervals over prompts: overall, per bin of `p` (:data:`P_BINS`, right-closed last bin), for
    hard and easy prompts; and per `k` the share of the normalised weight
    `omega_k = mu w_k(p) / sum mu w_k(p)` (:func:`theory.normalized_weights`) on wrong-sign prompts
    (a plain number: it is a property of this warm start, not an estimate).

    Args:
      p: `(P,)` exact success; agreement, agreement_proxy: `(P,)` exact and proxy agreements;
      is_hard: `(P,)` bool; ks: the orders at which to weigh the errors.

    Returns:
      `{"sign_right", "wrong_by_p", "wrong_hard", "wrong_easy", "weight_on_wrong"}`.
    """
    p = np.asarray(p, np.float64)
    a, b = np.asarray(agreement, np.float64), np.asarray(agreement_proxy, np.float64)
    hard = np.asarray(is_hard, bool)
    if not (p.shape == a.shape == b.shape == hard.shape) or p.ndim != 1:
        raise ValueError(
            f"p, agreement, agreement_proxy, is_hard must share one (P,) shape; got "
            f"{p.shape}, {a.shape}, {b.shape}, {hard.shape}"
        )
    wrong = np.sign(a) != np.sign(b)
    by_p = []
    for i, (lo, hi) in enumerate(zip(P_BINS[:-1], P_BINS[1:])):
        inside = (p >= lo) & ((p < hi) if i < len(P_BINS) - 2 else (p <= hi))
        by_p.append(
            {
                "p_range": [lo, hi],
                "wrong": wilson_interval(int(wrong[inside].sum()), int(inside.sum())) if inside.any() else None,
            }
        )
    omega = np.asarray(theory.normalized_weights(p, np.asarray(ks), None))  # (K, P)
    return {
        "sign_right": wilson_interval(int((~wrong).sum()), wrong.size),
        "wrong_by_p": by_p,
        "wrong_hard": wilson_interval(int(wrong[hard].sum()), int(hard.sum())) if hard.any() else None,
        "wrong_easy": wilson_interval(int(wrong[~hard].sum()), int((~hard).sum())) if (~hard).any() else None,
        "weight_on_wrong": [{"k": int(k), "share": float(omega[j, wrong].sum())} for j, k in enumerate(ks)],
    }


def _head_scores(params, prompts, answers, config):
    """`(P, n, D_U)` score vectors of the output head: `grad_U log pi(y_ij | x_i)`."""
    n_prompts, n = answers.shape[:2]
    flat = _exact.per_prompt_gradients(
        params,
        jnp.repeat(prompts, n, axis=0),
        answers.reshape(n_prompts * n, -1),
        config,
        subset=_model.LAST_LAYER,
        log=True,
    )  # (P n, D_U)
    return flat.reshape(n_prompts, n, -1)


_head_scores_jit = jax.jit(_head_scores, static_argnums=3)
_sample_jit = jax.jit(_train.sample_answers, static_argnums=(3, 4, 5))


def monte_carlo_proxy(
    params, prompts, config, verifier, verifier_args, *, key, n: int, agreement, agreement_proxy, level: float = 0.95
) -> dict:
    """The last-layer proxy from `n` sampled answers per prompt, next to the exact agreements.

    Args:
      params, prompts, config: the model and its prompts `(P, Lp)`.
      verifier: `verifier(prompt, answer, *verifier_args) -> reward in {0, 1}`.
      verifier_args: extra arguments of the verifier (arrays).
      key: `jax.random` key of the answers.
      n: answers per prompt (`>= 3`).
      agreement, agreement_proxy: `(P,)` the exact agreements over all parameters and over the
        output head, to compare with.
      level: level of the `k*` interval.

    Returns:
      `{"n", "sign_right_vs_exact", "sign_right_vs_exact_proxy", "k_star"}`: Wilson intervals of the
      share of prompts whose estimated proxy agreement has the sign of the exact agreement (all
      parameters) and of the exact proxy, and the sampled `k*` with its interval
      (:func:`theory.sampled_critical_k`, prompt jackknife).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer >= 3; got {n!r}")
    answers = _sample_jit(params, prompts, key, config, config.max_len - prompts.shape[1], n)
    extra = tuple(jnp.asarray(v) for v in verifier_args)
    rewards = jax.vmap(lambda x, ys: jax.vmap(lambda y: verifier(x, y, *extra))(ys))(prompts, answers)
    scores = _head_scores_jit(params, prompts, answers, config)
    a_hat = np.asarray(theory.sampled_agreement_scores(rewards, scores), np.float64)
    crit = theory.sampled_critical_k(rewards, scores, level=level)
    a, b = np.sign(np.asarray(agreement)), np.sign(np.asarray(agreement_proxy))
    return {
        "n": n,
        "sign_right_vs_exact": wilson_interval(int((np.sign(a_hat) == a).sum()), a.size),
        "sign_right_vs_exact_proxy": wilson_interval(int((np.sign(a_hat) == b).sum()), b.size),
        "k_star": {
            "estimate": crit.estimate,
            "lower": crit.lower,
            "upper": crit.upper,
            "k_max": crit.k_max,
            "level": crit.level,
        },
    }


def _two_layer_success(theta, features, rewards):
    """`p_i = sum_y pi(y | x_i) r_iy` of the policy `softmax(W V psi_i)`; theta = (V, W)."""
    v, w = theta
    hidden = features @ v.T  # (P, H): the final hidden states
    logits = hidden @ w.T  # (P, A)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * rewards, axis=-1)


def hidden_conflict_case(*, mu_hard: float = 0.2, ks=tuple(range(1, 65))) -> dict:
    """A two-layer softmax policy where the conflict lives below the last layer.

    Two prompts, hard (`h`) and easy (`e`), three answers, answer 0 correct for both. Features
    `psi_h = (1, 0)`, `psi_e = (-0.8, 0.6)` (`<psi_h, psi_e> = -0.8`); the first layer `V` maps them
    to orthogonal hidden states `V psi_h = (1, 0)`, `V psi_e = (0, 1)`; the output head `W` gives
    the hard prompt a low and the easy prompt a high success. Agreements by autodiff of
    :func:`_two_layer_success` over both layers and over `W` alone, then `k*` from each
    (:func:`theory.critical_k`); the exact `I_k = <grad J_k, grad J_1>` is also computed by
    autodiff of `J_k = sum_i mu_i (1 - (1 - p_i)^k)`, written out here.

    Args:
      mu_hard: the hard prompt's weight (the easy one has `1 - mu_hard`).
      ks: the orders at which `I_k` is reported.

    Returns:
      `p`, `agreement`, `agreement_proxy`, `k_star`, `k_star_proxy`, `kernel` and
      `kernel_proxy` (`2 x 2`), `ks` and `inner` (`I_k`, autodiff).
    """
    if not 0.0 < float(mu_hard) < 1.0:
        raise ValueError(f"mu_hard must lie in (0, 1); got {mu_hard!r}")
    with jax.enable_x64(True):
        psi = jnp.array([[1.0, 0.0], [-0.8, 0.6]])
        v = jnp.linalg.inv(psi)  # V psi_i = e_i: orthogonal hidden states
        v = v.T  # hidden = psi @ V^T
        w = jnp.array([[-1.0, 2.5], [1.5, -0.5], [0.0, 0.0]])  # logits of answers 0, 1, 2 per hidden unit
        rewards = jnp.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        mu = jnp.array([mu_hard, 1.0 - mu_hard])
        theta = (v, w)
        p = _two_layer_success(theta, psi, rewards)
        jac = jax.jacrev(_two_layer_success)(theta, psi, rewards)  # ((2, H, 2), (2, A, H))
        full = jnp.concatenate([jac[0].reshape(2, -1), jac[1].reshape(2, -1)], axis=1)
        head = jac[1].reshape(2, -1)
        kernel, kernel_proxy = full @ full.T, head @ head.T
        a, a_proxy = theory.agreement_scores(full, mu), theory.agreement_scores(head, mu)

        def j(th, k):
            q = _two_layer_success(th, psi, rewards)
            return jnp.sum(mu * (1.0 - (1.0 - q) ** k))

        g1 = jax.grad(j)(theta, 1.0)
        flat = lambda g: jnp.concatenate([x.ravel() for x in g])
        inner = [float(jnp.vdot(flat(jax.grad(j)(theta, float(k))), flat(g1))) for k in ks]
        return {
            "p": np.asarray(p).tolist(),
            "mu": np.asarray(mu).tolist(),
            "hidden_inner": float(jnp.vdot(psi[0] @ v.T, psi[1] @ v.T)),
            "kernel": np.asarray(kernel).tolist(),
            "kernel_proxy": np.asarray(kernel_proxy).tolist(),
            "agreement": np.asarray(a).tolist(),
            "agreement_proxy": np.asarray(a_proxy).tolist(),
            "k_star": _critical_or_none(p, a, mu),
            "k_star_proxy": _critical_or_none(p, a_proxy, mu),
            "ks": list(ks),
            R.inner: inner,
        }


def _critical_or_none(p, a, mu):
    k = theory.critical_k(p, a, mu, k_max=10**6)
    return None if k is None else int(k)
