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


def random_policy(
    rng: np.random.Generator, n_prompts: int, n_actions: int, dim: int, *, scale=1.5, binary=True, feature_norm=None
):
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


# ---------------------------------------------------------------------------------------------
# Scores of sampled answers and exact enumeration of outcomes


def log_policy(theta, features):
    """`(P, A)` log-probabilities of the linear-softmax reference policy."""
    return jax.nn.log_softmax(features @ theta.T, axis=-1)


def answer_scores(theta, features):
    """`(P, A, A*d)`: `grad_theta log pi(y | x_i)` for every prompt and answer, by autodiff."""
    jac = jax.jacrev(log_policy)(theta, features)  # (P, A, A, d)
    return jac.reshape(jac.shape[:2] + (-1,))


# ---------------------------------------------------------------------------------------------
# Random instances


def random_agreements(rng: np.random.Generator, n: int):
    """`(p, a, mu)` with `n` uniform success probabilities, Gaussian agreements, `mu` on the simplex."""
    p = rng.uniform(size=n)
    a = rng.normal(size=n)
    mu = rng.dirichlet(np.ones(n))
    return p, a, mu


def mixed_policy(rng: np.random.Generator, n_prompts: int, n_actions: int, dim: int):
    """`(theta, features, rewards, mu)`: every prompt has a correct and a wrong answer."""
    theta = jnp.asarray(1.2 * rng.normal(size=(n_actions, dim)))
    features = jnp.asarray(rng.normal(size=(n_prompts, dim)))
    rewards = np.zeros((n_prompts, n_actions))
    for i in range(n_prompts):
        right = rng.choice(n_actions, size=rng.integers(1, n_actions), replace=False)
        rewards[i, right] = 1.0
    mu = jnp.asarray(rng.dirichlet(np.ones(n_prompts)))
    return theta, features, jnp.asarray(rewards), mu


def interfering_policy(
    rng: np.random.Generator, n_prompts: int, n_actions: int, dim: int, *, scale=1.5, feature_norm=None
):
    """A random policy in which prompt 0 interferes negatively with the rest: `a_0 < 0`.

    Prompt 1 is prompt 0's mirror (features `-psi_0`, the same binary reward row, holding a
    correct and a wrong answer), so `kappa(x_0, x_1) = -||psi_0||^2 sum_y pi_0(y) pi_1(y)
    (r_y - p_0)(r_y - p_1) < 0` (every term of the sum is positive). `mu` puts most of its mass on
    prompts 0 and 1 (`mu_0 <= mu_1`), enough that
    `a_0 = sum_j mu_j kappa(x_0, x_j) <= kappa(x_0, x_1) / 16 < 0`. Prompt 0 is mostly the harder of
    the two (its correct answers have the smaller mean logit); the other prompts are as in
    :func:`random_policy`.

    Returns:
      `(theta, features, rewards, mu)` in float64, like :func:`random_policy`.
    """
    assert n_prompts >= 2 and n_actions >= 2
    theta, features, rewards, _ = random_policy(rng, n_prompts, n_actions, dim, scale=scale, feature_norm=feature_norm)
    theta, features, rewards = np.asarray(theta), np.array(features), np.array(rewards)
    row = rewards[0]
    row[rng.permutation(n_actions)[:2]] = (1.0, 0.0)  # one correct and one wrong answer at least
    psi = features[0]
    logits = theta @ psi
    if logits[row == 1].mean() > logits[row == 0].mean():
        psi = -psi  # prompt 0 prefers wrong answers: the hard one of the pair
    features[0], features[1] = psi, -psi
    rewards[0] = rewards[1] = row
    features, rewards = jnp.asarray(features), jnp.asarray(rewards)
    g = np.asarray(per_prompt_grads(jnp.asarray(theta), features, rewards)).reshape(n_prompts, -1)
    kernel_row = g @ g[0]  # kappa(x_0, x_j)
    assert kernel_row[1] < 0 < kernel_row[0]
    # mu_0 / mu_1 = rho keeps mu_0 kappa_00 + mu_1 kappa_01 <= mu_1 kappa_01 / 2; the rest, delta,
    # is too small to undo it
    rho = min(1.0, abs(kernel_row[1]) / (2 * kernel_row[0]))
    delta = abs(kernel_row[1]) / (8 * np.max(np.abs(kernel_row)))
    mu = (1 - delta) * np.concatenate([[rho, 1.0], np.zeros(n_prompts - 2)]) / (1 + rho)
    mu = mu + delta * rng.dirichlet(np.ones(n_prompts))
    return jnp.asarray(theta), features, rewards, jnp.asarray(mu)
