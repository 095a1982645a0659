"""The policy over answer strings: token log-probabilities, the compiled sampler, exact success.

The policy is the project's transformer (:mod:`sim.transformer.model`) reading `[prompt, answer]`;
answer token `t` is drawn from the softmax of the digit logits at the position before it
(markers are never answered), at temperature 1:

    log pi(y | x) = sum_{t=1..L} log softmax(logits_digits(x, y_<t))[y_t].

Exact success on a set of prompts enumerates the prefix tree: level `l` holds the `V^l` answer
prefixes of length `l` and one forward pass per prefix gives the next-digit log-probabilities, so a
prompt costs `1 + V + ... + V^(L-1)` passes instead of `V^L` full sequences; the `V^L` string
log-probabilities are sums along the tree, and `p_i = sum_y pi(y | x_i) r(x_i, y)`.
Agreements follow SPEC section 7: `v = grad J_1` by one reverse pass, `a = J v` by one JVP.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.lm.task import LMTask, verify
from sim.transformer import model as _model

__all__ = [
    "ExactEval",
    "all_answers",
    "answer_log_prob",
    "exact_eval",
    "model_config",
    "sample_answers",
    "string_log_probs",
    "success",
    "token_log_probs",
    "tree_dot",
]


def model_config(task: LMTask, *, d_model: int = 32, n_heads: int = 2, n_layers: int = 2, d_mlp: int = 64):
    """A :class:`~sim.transformer.model.ModelConfig` sized for `task` (vocabulary and length)."""
    return _model.ModelConfig(
        vocab_size=task.vocab_size,
        max_len=task.seq_len,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        d_mlp=d_mlp,
    )


def tree_dot(a, b):
    """`<a, b>` of two parameter pytrees."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _digit_log_softmax(params, seq, config, task: LMTask):
    logits = _model.apply(params, seq, config)  # (T, vocab)
    return jax.nn.log_softmax(logits[:, : task.n_digits], axis=-1)  # (T, V): digits only


def token_log_probs(params, prompt, answer, config, task: LMTask):
    """`log pi(y_t | x, y_<t)` for one prompt `(1+D,)` and one answer `(L,)`: shape `(L,)`."""
    seq = jnp.concatenate([prompt, answer])[:-1]  # (1+D+L-1,)
    logp = _digit_log_softmax(params, seq, config, task)[prompt.shape[0] - 1 :]  # (L, V)
    return jnp.take_along_axis(logp, answer[:, None], axis=-1)[:, 0]


def answer_log_prob(params, prompts, answers, config, task: LMTask):
    """`log pi(y_ij | x_i)` for prompts `(B, 1+D)` and answers `(B, n, L)`: shape `(B, n)`."""
    per_token = jax.vmap(
        jax.vmap(token_log_probs, in_axes=(None, None, 0, None, None)), in_axes=(None, 0, 0, None, None)
    )(params, prompts, answers, config, task)
    return jnp.sum(per_token, axis=-1)


@functools.partial(jax.jit, static_argnames=("n", "config", "task"))
def sample_answers(params, prompts, n: int, config, task: LMTask, *, key):
    """`n` answers per prompt, drawn token by token at temperature 1 (one compiled program).

    Args:
      params: the model's parameters.
      prompts: `(B, 1+D)` prompts.
      n: answers per prompt.
      config, task: the model and the task (static).
      key: a jax.random key; token `t` of every answer uses `fold_in(key, t)`.

    Returns:
      `(answers, log_probs)`: tokens `(B, n, L)` (int32) and their log-probabilities `(B, n, L)`.
    """
    b = prompts.shape[0]
    seqs = jnp.broadcast_to(prompts[:, None, :], (b, n, prompts.shape[1]))
    logps = []
    for t in range(task.answer_len):  # L is static: one unrolled program
        logp = jax.vmap(jax.vmap(lambda s: _digit_log_softmax(params, s, config, task)[-1]))(seqs)  # (B, n, V)
        token = jax.random.categorical(jax.random.fold_in(key, t), logp, axis=-1).astype(jnp.int32)  # (B, n)
        logps.append(jnp.take_along_axis(logp, token[..., None], axis=-1)[..., 0])
        seqs = jnp.concatenate([seqs, token[..., None]], axis=-1)
    return seqs[..., prompts.shape[1] :], jnp.stack(logps, axis=-1)


@functools.cache
def _strings(n_digits: int, length: int) -> np.ndarray:
    """Every string of `length` digits, lexicographic: `(V^length, length)` (a `(1, 0)` array at 0)."""
    return np.array(list(itertools.product(range(n_digits), repeat=length)), np.int32).reshape(n_digits**length, length)


def all_answers(task: LMTask):
    """Every answer string `(V^L, L)`, in the order of :func:`string_log_probs`."""
    return jnp.asarray(_strings(task.n_digits, task.answer_len))


def string_log_probs(params, prompt, config, task: LMTask):
    """`log pi(y | x)` of every answer string `(V^L,)` for one prompt, along the prefix tree.

    Level `l = 0 .. L-1` runs one forward pass for each of its `V^l` prefixes (the prompt followed by
    the prefix) and keeps the last position's next-digit log-probabilities `(V^l, V)`; a string's
    log-probability is the sum of its `L` conditional terms, accumulated level by level.
    """
    total = jnp.zeros((1,), jnp.result_type(float))
    for level in range(task.answer_len):
        prefixes = jnp.asarray(_strings(task.n_digits, level))  # (V^l, l)
        seqs = jnp.concatenate([jnp.broadcast_to(prompt, (prefixes.shape[0], prompt.shape[0])), prefixes], axis=1)
        nxt = jax.vmap(lambda s: _digit_log_softmax(params, s, config, task)[-1])(seqs)  # (V^l, V)
        total = (total[:, None] + nxt).reshape(-1)  # (V^(l+1),): prefix-major, as _strings orders them
    return total


def success(params, prompts, config, task: LMTask):
    """Exact `p_i = sum_y pi(y | x_i) r(x_i, y)` for prompts `(P, 1+D)`: shape `(P,)`."""
    answers = all_answers(task)  # (V^L, L)

    def one(prompt):
        rewards = verify(task, prompt, answers)  # (V^L,)
        return jnp.sum(jnp.exp(string_log_probs(params, prompt, config, task)) * rewards)

    return jax.vmap(one)(prompts)


class ExactEval(NamedTuple):
    """Exact evaluation of the policy on a prompt set (uniform weights).

    Attributes:
      p: `(P,)` per-prompt success.
      agreement: `(P,)` `a_i = <grad p_i, grad J_1>`.
      j1: `J_1`.
      jk, inner, mean_agreement, cos: `J_k`, `I_k`, `A_k`, `cos_k` at the order `k`.
      inner_curve: `I_k` at `k = 1 .. len(inner_curve)`.
      k_star: `min{k : I_k < 0}`, `k_max + 1` when none up to `k_max` (int32).
      grad_j1: `grad J_1` (a parameter pytree).
    """

    p: jax.Array
    agreement: jax.Array
    j1: jax.Array
    jk: jax.Array
    inner: jax.Array
    mean_agreement: jax.Array
    cos: jax.Array
    inner_curve: jax.Array
    k_star: jax.Array
    grad_j1: dict


def exact_eval(params, prompts, config, task: LMTask, k, *, curve: int, k_max: int) -> ExactEval:
    """`p`, agreements, `J_1`, `J_k`, `I_k`, `A_k`, `cos_k` and `k*` without sampling (SPEC sections 4, 7).

    One linearisation of `theta -> p` over the prefix trees (the forward pass), its transpose for
    `v = grad J_1 = J^T mu` and `g_k = J^T omega_k` (parallel to `grad J_k`, never underflowing;
    for `cos_k`) in one batched reverse pass, and one forward-mode pass for `a = J v`. `I_k`, `A_k`
    and `k*` come from `theory`. Traceable.

    Args:
      params: model parameters.
      prompts: `(P, 1+D)` evaluation prompts, weighted uniformly.
      config, task: the model and the task.
      k: the order of `J_k`, `I_k`, `A_k`, `cos_k` (an integer `>= 1`).
      curve: `I_k` is also returned at `k = 1 .. curve` (static).
      k_max: the largest `k` searched for `k*` (the sentinel is `k_max + 1`).

    Returns:
      :class:`ExactEval`.
    """
    # One linearisation: its transpose gives the reverse passes, itself the forward-mode pass.
    p, jvp = jax.linearize(lambda theta: success(theta, prompts, config, task), params)
    vjp = jax.linear_transpose(jvp, params)
    mu = jnp.full(p.shape, 1.0 / p.shape[0], p.dtype)
    omega = theory.normalized_weights(p, k, mu)
    (both,) = jax.vmap(vjp)(jnp.stack([mu, omega]))  # g_1 = J^T mu and g_k = J^T omega_k together
    g1 = jax.tree_util.tree_map(lambda x: x[0], both)
    gk = jax.tree_util.tree_map(lambda x: x[1], both)
    a = jvp(g1)
    return ExactEval(
        p=p,
        agreement=a,
        j1=jnp.mean(p),
        jk=jnp.mean(theory.pass_at_k(p, k)),
        inner=theory.conflict_inner_product(p, a, k, mu),
        mean_agreement=theory.weighted_mean_agreement(p, a, k, mu),
        cos=theory.safe_cosine(tree_dot(gk, g1), jnp.sqrt(tree_dot(gk, gk) * tree_dot(g1, g1))),
        inner_curve=theory.conflict_inner_product(p, a, jnp.arange(1, curve + 1), mu),
        k_star=theory.critical_k_jax(p, a, mu, k_max=k_max),
        grad_j1=g1,
    )
