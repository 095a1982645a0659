"""Softmax-policy bandits: exact pass@1, pass@k, gradients and agreements (SPEC sections 1 to 4, 7).

A bandit has `P` prompts with features `psi(x_i)` (rows of `features`, shape `(P, d)`), a finite
answer set of `A` answers with rewards `r(x_i, y)` (the `(P, A)` table `rewards`, in `[0, 1]`)
and prompt weights `mu` (`(P,)`, summing to 1). The policy is multinomial logistic with parameters
`theta` of shape `(A, d)`:

    logits_i = theta psi(x_i)        pi(. | x_i) = softmax(logits_i)

(tabular softmax: one-hot features, `d = P`). Every prompt reads the same `theta`, so a step that
helps one prompt moves the others: prompts interfere.

Exact quantities (no sampling):

- success `p_i = sum_y pi(y|x_i) r(x_i, y)`; `J_1 = sum_i mu_i p_i`; `J_k = sum_i mu_i pass@k(p_i)`
  (through :func:`theory.pass_at_k`);
- per-prompt gradients (closed form, the check for small models): `grad p_i = Cov_pi(r, phi)`,
  i.e. `dp_i / dlogits_i = pi_i * (r_i - p_i)`, and `grad_theta p_i = (dp_i/dlogits_i) psi_i^T`;
- agreements `a = J (J^T mu)` (`J = dp/dtheta`) by one reverse pass (`v = J^T mu = grad J_1`) and
  one forward pass (`jax.jvp` of `success` along `v`): cost of a few gradient evaluations and
  memory `O(P + A d)`, never per-prompt gradients nor the `P x P` kernel (SPEC section 7);
- the conflict inner product `I_k`, its underflow-free sign `A_k`, the cosine `cos_k` and the
  critical `k*`, all from `theory` applied to `p` and `a`.

Layout of the compiled kernels: `success`, the reverse pass `J^T w` and the forward pass `J v`
work on arrays with prompts on the last (fastest) axis, `(A, P)`, and reduce over answers with
`A - 1` elementwise operations (for `A <= 16`). XLA's CPU backend vectorises elementwise work along
the fast axis, but neither a 4-wide trailing answer axis nor a reduction over a short non-minor
axis (measurements: `passk/benchmarks/README.md`, "Why the kernels look as they do"). The reverse and
forward passes are the closed
forms of autodiff's (`dp_i/dlogits_i = pi_i (r_i - p_i)`, logits linear in `theta`), written out
so that one forward evaluation serves any number of reverse passes (:func:`pullback` of a stack of
prompt weights is one matrix product) and the forward pass `J v` reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from theory import validate as _validate

__all__ = ["SoftmaxBandit", "BanditDiagnostics", "DEFAULT_K_MAX"]

# Largest k searched for k* by default: comfortably above the k of any practical pass@k trainer.
DEFAULT_K_MAX = 4096

# Up to this many answers, reductions over answers are unrolled into elementwise operations (see
# the module docstring); above it, one `jnp` reduction keeps the compiled program small.
_UNROLL_ANSWERS = 16

_HIGHEST = jax.lax.Precision.HIGHEST


def _concrete(x) -> bool:
    return _validate.is_concrete(x)


@dataclasses.dataclass(frozen=True, eq=False)
class SoftmaxBandit:
    """A multinomial-logistic policy over a finite answer set, shared by all prompts.

    Fields (the pytree leaves, in this order):
      features: `(P, d)` prompt features `psi(x_i)`.
      rewards: `(P, A)` reward table `r(x_i, y)` in `[0, 1]`.
      prompt_weights: `(P,)` prompt weights `mu`, non-negative, summing to 1 (uniform when None).

    `SoftmaxBandit(features, rewards, prompt_weights=None)` validates concrete inputs (shapes,
    finiteness, rewards in `[0, 1]`, `mu` on the simplex) and casts `rewards` and `mu` to the
    floating dtype of `features`. A `SoftmaxBandit` is a pytree: pass it through `jax.jit`,
    `jax.vmap` (a batch of bandits has a leading axis on every field) and `lax.scan`.
    Unflattening (inside JAX transformations) does not re-validate.

    Example:
      >>> import jax.numpy as jnp
      >>> b = SoftmaxBandit(jnp.eye(2), jnp.array([[1.0, 0.0], [0.0, 1.0]]))
      >>> b.success(jnp.zeros((2, 2)))  # uniform policy: each prompt has one of two answers right
      Array([0.5, 0.5], dtype=float32)
    """

    features: jax.Array
    rewards: jax.Array
    prompt_weights: jax.Array = None

    def __post_init__(self):
        feats = _validate.finite("features", self.features)
        if feats.ndim != 2:
            raise ValueError(f"features must have shape (P, d); got shape {feats.shape}")
        n_prompts, dim = feats.shape
        if n_prompts < 1 or dim < 1:
            raise ValueError(f"features must have at least one prompt and one feature; got shape {feats.shape}")
        dtype = feats.dtype
        rewards = _validate.probability("rewards", _validate.as_float_array("rewards", self.rewards).astype(dtype))
        if rewards.ndim != 2 or rewards.shape[0] != n_prompts or rewards.shape[1] < 1:
            raise ValueError(
                f"rewards must have shape (P, A) = ({n_prompts}, A) with A >= 1 (one row per prompt of "
                f"features); got shape {rewards.shape}"
            )
        if self.prompt_weights is not None and jnp.shape(self.prompt_weights) != (n_prompts,):
            raise ValueError(
                f"prompt_weights must have shape (P,) = ({n_prompts},); got shape {jnp.shape(self.prompt_weights)}"
            )
        mu = _validate.prompt_weights(self.prompt_weights, n_prompts, dtype, name="prompt_weights")
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "prompt_weights", mu)

    # ----------------------------------------------------------------- sizes

    @property
    def n_prompts(self) -> int:
        """`P`, the number of prompts."""
        return self.features.shape[-2]

    @property
    def n_actions(self) -> int:
        """`A`, the number of answers."""
        return self.rewards.shape[-1]

    @property
    def dim(self) -> int:
        """`d`, the feature dimension."""
        return self.features.shape[-1]

    @property
    def param_shape(self) -> tuple[int, int]:
        """Shape `(A, d)` of `theta`."""
        return (self.n_actions, self.dim)

    @property
    def feature_norm(self):
        """`B = max_i ||psi(x_i)||`, the constant of the smoothness bounds (SPEC section 5)."""
        return jnp.max(jnp.linalg.norm(self.features, axis=-1), axis=-1)

    def _check_theta(self, theta):
        theta = jnp.asarray(theta)
        if theta.shape != self.param_shape:
            raise ValueError(f"theta must have shape (A, d) = {self.param_shape}; got shape {theta.shape}")
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            raise TypeError(f"theta must be a floating array; got dtype {theta.dtype}")
        return theta

    # ----------------------------------------------------------------- policy
    # Public methods check their arguments and call one compiled function each (so eager calls
    # cost one compile per shape, not one per primitive); inside other transformations the
    # compiled function is inlined. The `_..._impl` methods hold the formulas.

    def _check_k(self, k):
        k = jnp.asarray(k)
        if k.dtype == jnp.bool_ or not jnp.issubdtype(k.dtype, jnp.integer):
            raise TypeError(f"k must be an integer or integer array; got dtype {k.dtype}")
        if _concrete(k) and k.size and int(jnp.min(k)) < 1:
            raise ValueError(f"k must be >= 1; got {int(jnp.min(k))}")
        return k

    def logits(self, theta):
        """`logits_i = theta psi(x_i)`, shape `(P, A)`.

        Full-precision matrix product (`Precision.HIGHEST`): on GPUs the default float32 product
        may round its inputs to TF32 (10-bit mantissa), which would make "exact" quantities
        exact only to about 1e-3.
        """
        return _compiled["logits"](self, self._check_theta(theta))

    def policy(self, theta):
        """`pi(y | x_i) = softmax(logits_i)`, shape `(P, A)`."""
        return _compiled["policy"](self, self._check_theta(theta))

    def success(self, theta):
        """Per-prompt success (pass@1) `p_i = sum_y pi(y|x_i) r(x_i, y)`, shape `(P,)`."""
        return _compiled["success"](self, self._check_theta(theta))

    def objective(self, theta, k):
        """`J_k = sum_i mu_i (1 - (1 - p_i)^k)` through :func:`theory.pass_at_k`.

        Args:
          theta: `(A, d)` parameters.
          k: integer or integer array `>= 1`.

        Returns:
          `J_k` of shape `jnp.shape(k)` (`J_1` for `k = 1`).

        Its gradient (autodiff through :func:`theory.pass_at_k`, whose derivative is `w_k`) is
        finite everywhere; :meth:`pass_at_k_grad` gives the same in one reverse pass.
        """
        return _compiled["objective"](self, self._check_theta(theta), self._check_k(k))

    def per_prompt_grads(self, theta):
        """Exact per-prompt gradients `grad_theta p_i`, shape `(P, A, d)`.

        Closed form `grad p = Cov_pi(r, phi)`: `dp_i/dlogits_{i y} = pi(y|x_i) (r(x_i, y) - p_i)`,
        and `logits_i = theta psi_i`, so `d p_i / d theta_{y,:} = pi(y|x_i) (r_{iy} - p_i) psi_i`.
        Memory `O(P A d)`: the check for small bandits, not the method at scale.
        """
        return _compiled["per_prompt_grads"](self, self._check_theta(theta))

    def weighted_grad(self, theta, weights):
        """`sum_i weights_i grad p_i` by one reverse pass (a vector-Jacobian product), `(A, d)`.

        With `weights = mu` this is `grad J_1`; with `weights = mu w_k(p)` (held fixed) it is
        `grad J_k`; with the normalised weights `omega` it is `grad J_k / sum_j mu_j w_k(p_j)`,
        which never underflows.
        """
        theta = self._check_theta(theta)
        weights = jnp.asarray(weights)
        if weights.shape != (self.n_prompts,):
            raise ValueError(f"weights must have shape (P,) = ({self.n_prompts},); got shape {weights.shape}")
        return _compiled["weighted_grad"](self, theta, weights)

    def pass_at_k_grad(self, theta, k):
        """Exact `grad J_k = sum_i mu_i w_k(p_i) grad p_i` (SPEC section 2), one reverse pass.

        The prompt weights `mu w_k(p)` come from :func:`theory.pass_at_k_weight` and are held
        fixed (`stop_gradient`): one reverse pass of `success`, finite also where `p` rounds to 1.
        """
        return _compiled["pass_at_k_grad"](self, self._check_theta(theta), self._check_k(k))

    def agreement_scores(self, theta):
        """Agreements `a_i = <grad p_i, grad J_1>`, shape `(P,)`, by one reverse and one forward pass.

        `v = J^T mu = grad J_1` (reverse pass), then `a = J v` as the directional derivative of
        `success` along `v` (`jax.jvp`, forward pass). Never forms per-prompt gradients.
        """
        return _compiled["agreement_scores"](self, self._check_theta(theta))

    # formulas (traceable, unchecked)

    def _logits_impl(self, theta):
        return jnp.matmul(self.features, theta.T, precision=_HIGHEST)

    def _policy_impl(self, theta):
        return jax.nn.softmax(self._logits_impl(theta), axis=-1)

    def _success_impl(self, theta):
        return success_parts(prompts_last(self), theta, with_dlogits=False)[0]

    def _objective_impl(self, theta, k):
        p = self._success_impl(theta)
        pk = theory.pass_at_k(p, jnp.reshape(k, k.shape + (1,)))
        return jnp.sum(self.prompt_weights * pk, axis=-1)

    def _per_prompt_grads_impl(self, theta):
        pi = self._policy_impl(theta)
        p = jnp.sum(pi * self.rewards, axis=-1)
        dlogits = pi * (self.rewards - p[:, None])
        return jnp.einsum("pa,pd->pad", dlogits, self.features)

    def _weighted_grad_impl(self, theta, weights):
        lay = prompts_last(self)
        _, dlogits = success_parts(lay, theta)
        return pullback(lay, dlogits, weights.astype(theta.dtype))

    def _pass_at_k_grad_impl(self, theta, k):
        lay = prompts_last(self)
        p, dlogits = success_parts(lay, theta)
        w = jax.lax.stop_gradient(self.prompt_weights * theory.pass_at_k_weight(p, k))
        return pullback(lay, dlogits, w)

    def _agreement_scores_impl(self, theta):
        lay = prompts_last(self)
        _, dlogits = success_parts(lay, theta)
        return pushforward(lay, dlogits, pullback(lay, dlogits, lay.prompt_weights))

    # ----------------------------------------------------------------- diagnostics

    def diagnostics(self, theta, ks, *, k_max: int = DEFAULT_K_MAX) -> BanditDiagnostics:
        """Everything the conflict analysis reads, for every `k` in `ks`, in one compiled call.

        Args:
          theta: `(A, d)` parameters.
          ks: integer array `(K,)` (or a scalar) of pass@k orders `>= 1`.
          k_max: largest `k` searched for `k*` (static: a new value recompiles).

        Returns:
          :class:`BanditDiagnostics`.
        """
        theta = self._check_theta(theta)
        ks = jnp.asarray(ks)
        if ks.dtype == jnp.bool_ or not jnp.issubdtype(ks.dtype, jnp.integer):
            raise TypeError(f"ks must be an integer array of pass@k orders; got dtype {ks.dtype}")
        if _concrete(ks) and ks.size and int(np.asarray(ks).min()) < 1:
            raise ValueError(f"ks must be >= 1; got {int(np.asarray(ks).min())}")
        if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 1:
            raise ValueError(f"k_max must be a positive integer; got {k_max!r}")
        return _diagnostics(self, theta, ks, k_max=int(k_max))


class BanditDiagnostics(NamedTuple):
    """Exact conflict diagnostics of one bandit at one `theta` (SPEC sections 3, 4).

    Shapes with `ks` of shape `(K,)` and `P` prompts (vmapped calls add leading axes):

    Attributes:
      p: `(P,)` per-prompt success.
      agreement: `(P,)` agreement scores `a_i = <grad p_i, grad J_1>`.
      j1: `()` pass@1 `J_1`.
      jk: `(K,)` pass@k `J_k`.
      inner: `(K,)` `I_k = <grad J_k, grad J_1> = sum_i mu_i w_k(p_i) a_i` (may underflow to 0).
      mean_agreement: `(K,)` `A_k = sum_i omega_i a_i`, the sign of `I_k` without underflow.
      cos: `(K,)` `cos_k = <g_k, g_1> / (|g_k| |g_1|)` from reverse passes with fixed `omega`.
      weights: `(K, P)` normalised prompt weights `omega`.
      grad_norm_1: `()` `||grad J_1||`.
      k_star: `()` integer `k* = min{k : I_k < 0}`, or `k_max + 1` when none up to `k_max`.
    """

    p: jax.Array
    agreement: jax.Array
    j1: jax.Array
    jk: jax.Array
    inner: jax.Array
    mean_agreement: jax.Array
    cos: jax.Array
    weights: jax.Array
    grad_norm_1: jax.Array
    k_star: jax.Array


class PromptsLast(NamedTuple):
    """A bandit's tables with prompts on the last (fastest) axis, the layout of the kernels.

    Build it once (:func:`prompts_last`) outside a step loop: the transposes are then paid once,
    not at every step.

    Attributes:
      features_t: `(d, P)` features, transposed.
      rewards_t: `(A, P)` rewards, transposed.
      prompt_weights: `(P,)` `mu`.
    """

    features_t: jax.Array
    rewards_t: jax.Array
    prompt_weights: jax.Array


def prompts_last(bandit: SoftmaxBandit) -> PromptsLast:
    """The :class:`PromptsLast` tables of one (unbatched) bandit."""
    return PromptsLast(bandit.features.T, bandit.rewards.T, bandit.prompt_weights)


def _over_answers(op, x):
    """Reduce `x` of shape `(A, P)` over answers with `op` (`jnp.add` or `jnp.maximum`), `(P,)`."""
    n = x.shape[0]
    if n <= _UNROLL_ANSWERS:
        return functools.reduce(op, [x[i] for i in range(n)])
    return (jnp.sum if op is jnp.add else jnp.max)(x, axis=0)


def success_parts(lay: PromptsLast, theta, *, with_dlogits: bool = True):
    """`(p, dp/dlogits)`: success `(P,)` and its derivative in the logits `pi (r - p)`, `(A, P)`."""
    logits = jnp.matmul(theta, lay.features_t, precision=_HIGHEST)  # (A, P)
    e = jnp.exp(logits - _over_answers(jnp.maximum, logits))
    pi = e / _over_answers(jnp.add, e)
    p = _over_answers(jnp.add, pi * lay.rewards_t)
    return p, (pi * (lay.rewards_t - p) if with_dlogits else None)


def pullback(lay: PromptsLast, dlogits, weights):
    """Reverse pass `J^T w = sum_i w_i grad p_i` for weights `(..., P)`: `(..., A, d)`, one matrix product."""
    return jnp.einsum("...ap,dp->...ad", weights[..., None, :] * dlogits, lay.features_t, precision=_HIGHEST)


def pushforward(lay: PromptsLast, dlogits, v):
    """Forward pass `J v`: the directional derivative of `p` along `v` `(A, d)`, shape `(P,)`."""
    return _over_answers(jnp.add, dlogits * jnp.matmul(v, lay.features_t, precision=_HIGHEST))


def prompt_mean(values, mu):
    """`sum_i mu_i values_i` over the last (prompt) axis, as a matrix-vector product.

    A product rather than `jnp.sum(mu * values)`: inside a vmapped step loop XLA's CPU backend
    runs it with the matrix kernels, faster than its reduction kernel there (`passk/benchmarks/README.md`).
    """
    return jnp.matmul(values, mu, precision=_HIGHEST)


def assemble_diagnostics(p, agreement, g1, g_dir, weights, ks, mu, *, k_max: int, k_star=None) -> BanditDiagnostics:
    """:class:`BanditDiagnostics` from the passes' results.

    Args:
      p: `(P,)` success.
      agreement: `(P,)` `a = J g_1`.
      g1: `(A, d)` `grad J_1`.
      g_dir: `(K, A, d)` `J^T omega` for the normalised weights `weights` at orders `ks`.
      weights: `(K, P)` normalised weights.
      ks: `(K,)` orders.
      mu: `(P,)` prompt weights.
      k_max: `k*` search limit.
      k_star: a `k*` already computed (else searched here).
    """
    flat_k = g_dir.reshape(g_dir.shape[0], -1)
    flat_1 = g1.reshape(-1)
    norm_1 = jnp.linalg.norm(flat_1)
    dots = jnp.matmul(flat_k, flat_1, precision=_HIGHEST)
    cos = theory.safe_cosine(dots, jnp.linalg.norm(flat_k, axis=-1) * norm_1)
    inner = theory.conflict_inner_product(p, agreement, ks, mu)
    mean_agreement = theory.weighted_mean_agreement(p, agreement, ks, mu)
    jk = prompt_mean(theory.pass_at_k(p, ks[:, None]), mu)
    if k_star is None:
        k_star = theory.critical_k_jax(p, agreement, mu, k_max=k_max)
    return BanditDiagnostics(
        p=p,
        agreement=agreement,
        j1=prompt_mean(p, mu),
        jk=jk,
        inner=inner,
        mean_agreement=mean_agreement,
        cos=cos,
        weights=weights,
        grad_norm_1=norm_1,
        k_star=k_star,
    )


def diagnostics_fn(bandit: SoftmaxBandit, theta, ks, *, k_max: int) -> BanditDiagnostics:
    """Uncompiled body of :meth:`SoftmaxBandit.diagnostics` (for use inside other jitted code).

    One forward evaluation (`p` and `dp/dlogits`), one reverse pass for `grad J_1` and the `K`
    directions `J^T omega` together (one matrix product), one forward pass `a = J grad J_1`.
    """
    lay = prompts_last(bandit)
    mu = lay.prompt_weights
    p, dlogits = success_parts(lay, theta)
    ks_vec = jnp.atleast_1d(ks)
    omega = jax.lax.stop_gradient(theory.normalized_weights(p, ks_vec, mu))  # (K, P), log space
    grads = pullback(lay, dlogits, jnp.concatenate([mu[None], omega]))  # grad J_1, then (K, A, d)
    g1 = grads[0]
    a = pushforward(lay, dlogits, g1)  # a = J g1: one forward pass
    out = assemble_diagnostics(p, a, g1, grads[1:], omega, ks_vec, mu, k_max=k_max)
    if jnp.ndim(ks) == 0:
        out = out._replace(
            jk=out.jk[0],
            inner=out.inner[0],
            mean_agreement=out.mean_agreement[0],
            cos=out.cos[0],
            weights=omega[0],
        )
    return out


_diagnostics = jax.jit(diagnostics_fn, static_argnames=("k_max",))

_compiled = {
    name: jax.jit(getattr(SoftmaxBandit, f"_{name}_impl"))
    for name in (
        "logits",
        "policy",
        "success",
        "objective",
        "per_prompt_grads",
        "weighted_grad",
        "pass_at_k_grad",
        "agreement_scores",
    )
}


def _flatten_with_keys(b: SoftmaxBandit):
    children = (
        (jax.tree_util.GetAttrKey("features"), b.features),
        (jax.tree_util.GetAttrKey("rewards"), b.rewards),
        (jax.tree_util.GetAttrKey("prompt_weights"), b.prompt_weights),
    )
    return children, None


def _unflatten(_, children) -> SoftmaxBandit:
    # Bypass __init__: inside transformations the leaves are tracers or placeholders.
    obj = object.__new__(SoftmaxBandit)
    for name, value in zip(("features", "rewards", "prompt_weights"), children):
        object.__setattr__(obj, name, value)
    return obj


jax.tree_util.register_pytree_with_keys(
    SoftmaxBandit,
    _flatten_with_keys,
    _unflatten,
    flatten_func=lambda b: ((b.features, b.rewards, b.prompt_weights), None),
)
