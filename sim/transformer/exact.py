"""Exact success probabilities, objectives and agreement scores of the transformer policy.

With a unique correct answer `y* = (y*_1, y*_2)` the per-prompt success is exact:
`p(x) = pi(y*|x) = prod_t pi(y*_t | x, y*_<t)`, so `J_1 = sum_i mu_i p_i`,
`J_k = sum_i mu_i (1 - (1 - p_i)^k)` and their gradients need no sampling.

Agreement scores over all parameters follow SPEC section 7: `v = grad J_1 = J^T mu` is one reverse
pass and `a = J v` one forward pass (`jax.jvp` of the map `theta -> p(theta)` along `v`), where
`J = dp/dtheta` is the `P x D` Jacobian that is never formed; both passes go over chunks of
prompts, so memory does not grow with `P` beyond the outputs. The per-prompt gradient route
(`vmap(grad p_i)`, then `theory.agreement_scores`) is kept only as a check. The last-layer proxy
restricts the same computation to the output head (`model.LAST_LAYER`): it is the agreement of the
policy whose other weights are frozen.

`I_k`, `A_k`, `k*` come from `theory` (never re-derived here); `cos_k` uses one reverse pass per
`k` with the normalised weights `omega_k` (`g_k = J^T omega_k` is parallel to `grad J_k` and
never underflows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.records import RECORD_NAMES as R
from sim.records import floats
from sim.transformer import model as _model

__all__ = [
    "log_success",
    "success",
    "pass_at_1",
    "pass_at_k_objective",
    "grad_pass_at_1",
    "agreement_jvp",
    "agreement_pergrad",
    "per_prompt_gradients",
    "gradient_cosines",
    "conflict_summary",
    "tree_dot",
]


def tree_dot(a, b):
    """Inner product `<a, b>` of two parameter pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def log_success(params, prompt, answer, config: _model.ModelConfig):
    """`log p(x) = sum_t log pi(y*_t | x, y*_<t)` for one prompt `(Lp,)` and its answer `(La,)`."""
    seq = jnp.concatenate([prompt, answer])  # (Lp + La,)
    logits = _model.apply(params, seq[:-1], config)  # (Lp + La - 1, V)
    logp = jax.nn.log_softmax(logits[prompt.shape[0] - 1 :], axis=-1)  # (La, V): rows predict answer
    return jnp.sum(jnp.take_along_axis(logp, answer[:, None], axis=-1))


def success(params, prompts, answers, config: _model.ModelConfig):
    """Exact per-prompt success `p_i = pi(y*_i | x_i)`, shape `(P,)`."""
    return jnp.exp(jax.vmap(log_success, in_axes=(None, 0, 0, None))(params, prompts, answers, config))


def _mu(mu, n, dtype):
    if mu is None:
        return jnp.full((n,), 1.0 / n, dtype)
    return jnp.asarray(mu, dtype)


def pass_at_1(params, prompts, answers, config, mu=None):
    """`J_1 = sum_i mu_i p_i` (uniform `mu` when None)."""
    p = success(params, prompts, answers, config)
    return jnp.sum(_mu(mu, p.shape[0], p.dtype) * p)


def pass_at_k_objective(params, prompts, answers, config, k, mu=None):
    """`J_k = sum_i mu_i (1 - (1 - p_i)^k)` via `theory.pass_at_k` (stable for any `k`)."""
    p = success(params, prompts, answers, config)
    return jnp.sum(_mu(mu, p.shape[0], p.dtype) * theory.pass_at_k(p, k))


def grad_pass_at_1(params, prompts, answers, config, mu=None):
    """`grad J_1` as a parameter pytree (one reverse pass)."""
    return jax.grad(pass_at_1)(params, prompts, answers, config, mu)


def _split(params, subset):
    """Split a top-level dict into the varying part (keys in `subset`) and the frozen rest."""
    if subset is None:
        return params, {}
    missing = [name for name in subset if name not in params]
    if missing:
        raise ValueError(f"subset names parameters {missing} that are not in params {sorted(params)}")
    varying = {name: params[name] for name in subset}
    frozen = {name: value for name, value in params.items() if name not in subset}
    return varying, frozen


def agreement_jvp(params, prompts, answers, config, mu=None, *, subset=None, chunk_size=256):
    """Agreement scores of every prompt in a few passes: `a = J (J^T mu)` (SPEC section 7).

    `v = grad J_1 = sum_i mu_i grad p_i` is one reverse pass and `a = J v` is one forward pass
    (`jax.jvp` of `theta -> p(theta)`); the `P x D` Jacobian `J` is never formed. Both passes run
    over chunks of `chunk_size` prompts in sequence (`lax.scan`, `lax.map`): the reverse pass sums
    the chunks' `J_c^T mu_c`, the forward pass gives each chunk's `J_c v`. Scratch memory is then
    `O(chunk_size x activations + D)` whatever `P`, and the working set of a chunk stays small
    enough to be reused from cache rather than allocated afresh.

    Args:
      params: model parameters.
      prompts: `(P, Lp)` prompts; answers: `(P, La)` their correct answers.
      config: the model config.
      mu: prompt weights `(P,)`, uniform when None.
      subset: top-level parameter names to differentiate (e.g. `model.LAST_LAYER` for the
        last-layer proxy); all parameters when None.
      chunk_size: prompts per pass (a positive int), or None for all `P` in one pass. A last,
        partial chunk is padded with weight-0 copies of the first prompt, whose outputs are dropped.

    Returns:
      `(a, p, grad_j1_sq)`: agreements `(P,)`, success `(P,)` and `||grad J_1||^2`
      (which equals `sum_i mu_i a_i`).

    Example:
      >>> a, p, g1_sq = agreement_jvp(params, prompts, answers, config)  # doctest: +SKIP
      >>> # sum(mu * a) == g1_sq up to rounding
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)):
        raise TypeError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size}")
    varying, frozen = _split(params, subset)
    n = prompts.shape[0]
    weights = _mu(mu, n, jax.tree_util.tree_leaves(varying)[0].dtype)
    if chunk_size is None or chunk_size >= n:
        chunk_size, n_chunks = n, 1
    else:
        n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n

    def chunks(x, fill):  # (P, ...) -> (n_chunks, chunk_size, ...), padded with `fill`
        x = jnp.concatenate([x, jnp.broadcast_to(fill, (pad,) + x.shape[1:])]) if pad else x
        return x.reshape((n_chunks, chunk_size) + x.shape[1:])

    xs, ys, ws = chunks(prompts, prompts[0]), chunks(answers, answers[0]), chunks(weights, 0)

    def p_of(theta, x, y):
        return success({**frozen, **theta}, x, y, config)

    def reverse(v, chunk):  # v += J_c^T mu_c
        x, y, w = chunk
        p, vjp = jax.vjp(lambda theta: p_of(theta, x, y), varying)
        (g,) = vjp(w.astype(p.dtype))
        return jax.tree_util.tree_map(jnp.add, v, g), p

    v, p = jax.lax.scan(reverse, jax.tree_util.tree_map(jnp.zeros_like, varying), (xs, ys, ws))
    a = jax.lax.map(lambda xy: jax.jvp(lambda theta: p_of(theta, *xy), (varying,), (v,))[1], (xs, ys))
    return a.reshape(-1)[:n], p.reshape(-1)[:n], tree_dot(v, v)


@functools.partial(jax.jit, static_argnames=("config", "subset", "log"))
def per_prompt_gradients(params, prompts, answers, config, *, subset=None, log=False):
    """Per-prompt gradients `grad p_i` (or `grad log p_i`, with `log=True`), flattened: `(P, D)`.

    `grad log p_i = grad log pi(y*_i | x_i)` is the score vector of prompt `i`'s unique correct
    answer: every correct sampled answer of that prompt has this score. By `vmap(grad)`; memory
    `O(P D)`, for small models and checks. `subset` must be hashable (a tuple of names).
    """
    varying, frozen = _split(params, subset)

    def value(theta, prompt, answer):
        logp = log_success({**frozen, **theta}, prompt, answer, config)
        return logp if log else jnp.exp(logp)

    grads = jax.vmap(jax.grad(value), in_axes=(None, 0, 0))(varying, prompts, answers)
    return jnp.concatenate([g.reshape(prompts.shape[0], -1) for g in jax.tree_util.tree_leaves(grads)], axis=1)


def agreement_pergrad(params, prompts, answers, config, mu=None, *, subset=None):
    """The check: per-prompt gradients `grad p_i` by `vmap(grad)`, then `theory.agreement_scores`.

    Memory `O(P D)`: only for small models. Same return values as :func:`agreement_jvp`'s first.
    """
    return theory.agreement_scores(per_prompt_gradients(params, prompts, answers, config, subset=subset), mu)


def gradient_cosines(params, prompts, answers, config, ks, mu=None):
    """`cos_k = <g_k, g_1> / (|g_k| |g_1|)` for each `k` in `ks`.

    `g_k = J^T omega_k` with `omega_k` the normalised pass@k weights at the current `p`
    (`theory.normalized_weights`): parallel to `grad J_k`, never underflowing. One reverse pass
    per `k` (vectorised). Returns `(len(ks),)`; 0 where a gradient vanishes.
    """
    p, vjp = jax.vjp(lambda theta: success(theta, prompts, answers, config), params)
    n = p.shape[0]
    mu_arr = _mu(mu, n, p.dtype)
    omega = theory.normalized_weights(jax.lax.stop_gradient(p), jnp.asarray(ks), mu_arr)  # (K, P)
    (g1,) = vjp(mu_arr)
    (gk,) = jax.vmap(vjp)(omega)  # (K, ...) pytree

    def one(row):
        g = jax.tree_util.tree_map(lambda x: x[row], gk)
        return theory.safe_cosine(tree_dot(g, g1), jnp.sqrt(tree_dot(g, g) * tree_dot(g1, g1)))

    return jnp.stack([one(i) for i in range(len(ks))])


def conflict_summary(p, agreement, ks, mu=None, *, k_max: int = 10**6) -> dict:
    """`I_k`, `A_k` for each `k` in `ks`, and `k* = min{k : I_k < 0}` (None if none up to `k_max`).

    All three come from `theory` (`conflict_inner_product`, `weighted_mean_agreement`,
    `critical_k`). Returns plain Python floats/ints keyed by :data:`sim.records.RECORD_NAMES`:
    `{"ks", "inner": [I_k], "mean_agreement": [A_k], "k_star"}`.
    """
    p = np.asarray(p, dtype=np.float64)
    agreement = np.asarray(agreement, dtype=np.float64)
    ks_arr = np.asarray(ks, dtype=np.int64)
    i_k = theory.conflict_inner_product(p, agreement, ks_arr, mu)
    a_k = theory.weighted_mean_agreement(p, agreement, ks_arr, mu)
    k_star = theory.critical_k(p, agreement, mu, k_max=k_max)
    return {
        "ks": [int(k) for k in ks_arr],
        R.inner: floats(i_k),
        R.mean_agreement: floats(a_k),
        R.k_star: None if k_star is None else int(k_star),
    }
