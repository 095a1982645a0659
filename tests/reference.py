"""An independent reference: a linear-softmax policy differentiated by autodiff.

The theory functions take closed forms; these helpers give the same quantities from
`jax.grad`/`jax.jacrev`/`jax.hessian` of an explicitly written policy, so that tests compare two
independent computations.

Policy: `logits_i = Theta psi_i` (`Theta` of shape `(A, d)`), `p_i = sum_y softmax(logits_i)_y r_iy`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def success(theta, features, rewards):
    """`(P,)` per-prompt success of the linear-softmax policy."""
    logits = features @ theta.T  # (P, A)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * rewards, axis=-1)


def pass1(theta, features, rewards, mu):
    return jnp.sum(mu * success(theta, features, rewards))


def passk(theta, features, rewards, mu, k):
    p = success(theta, features, rewards)
    return jnp.sum(mu * (1.0 - (1.0 - p) ** k))


def per_prompt_grads(theta, features, rewards):
    """`(P, A, d)` per-prompt gradients by reverse-mode autodiff."""
    return jax.jacrev(success)(theta, features, rewards)


def random_policy(rng: np.random.Generator, n_prompts: int, n_actions: int, dim: int, *, scale=1.5,
                  binary=True, feature_norm=None):
    """A random instance `(theta, features, rewards, mu)` in float64.

    Features are scaled to norm `feature_norm` when given (else Gaussian); rewards are binary or
    uniform in [0, 1]; `mu` is a random point of the simplex.
    """
    theta = scale * rng.normal(size=(n_actions, dim))
    features = rng.normal(size=(n_prompts, dim))
    if feature_norm is not None:
        features = feature_norm * features / np.linalg.norm(features, axis=1, keepdims=True)
    if binary:
        rewards = (rng.uniform(size=(n_prompts, n_actions)) < 0.4).astype(np.float64)
    else:
        rewards = rng.uniform(size=(n_prompts, n_actions))
    mu = rng.dirichlet(np.ones(n_prompts))
    return (jnp.asarray(theta), jnp.asarray(features), jnp.asarray(rewards), jnp.asarray(mu))


def realizable_gradients(rng: np.random.Generator, agreement, mu, dim: int):
    """Per-prompt gradients `(P, dim)` whose agreement scores are exactly `agreement`.

    Requires `sum mu a > 0`: rows `g_i = a_i g / ||g||^2 + e_i` with `e_i` orthogonal to `g` and
    `sum mu_i e_i = 0`, so `grad J_1 = sum mu_i g_i = g` and `<g_i, g> = a_i`.
    """
    agreement = np.asarray(agreement, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    total = float(mu @ agreement)
    assert total > 0
    g = rng.normal(size=dim)
    g *= np.sqrt(total) / np.linalg.norm(g)
    e = rng.normal(size=(agreement.size, dim))
    e -= np.outer(e @ g, g) / (g @ g)
    e -= mu @ e  # now sum_i mu_i e_i = 0 and each e_i stays orthogonal to g
    return agreement[:, None] * g / (g @ g) + e
