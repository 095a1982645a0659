"""The toy conflict bandit: easy and hard prompts that want different answers from shared parameters.

Generative model (`toy_bandit`), for each of `n_prompts` prompts:

- a latent label, *hard* with probability `p_hard`, else *easy*;
- a scalar feature `s ~ N(-separation/2, 1)` for hard prompts and `N(+separation/2, 1)` for easy
  ones, and features `psi(x) = [1, s(x)]` (so `theta` is `(A, 2)`: a bias and a slope per answer);
- answer 0 is the correct answer of easy prompts, answer 1 that of hard prompts; the other
  `n_actions - 2` answers are always wrong (reward table of 0/1, one correct answer per prompt).

A shared `theta` can only tell the two groups apart through `s`; where the two Gaussians overlap
the same features call for different answers, so the gradients of hard and easy prompts there
point in opposite directions (negative interference). `separation` sets how much the groups
overlap (0: indistinguishable), `p_hard` how many hard prompts there are.

Start `theta0` (documented choice): the policy of a model that has learnt the majority answer but
not yet the feature, `theta0 = [[start_logit, 0], [0, 0], ..., [0, 0]]`: every prompt puts
`e^L / (e^L + A - 1)` on answer 0 and `1 / (e^L + A - 1)` on each other answer. At the defaults
(`L = 2.5`, `A = 8`) easy prompts start at `p = 0.635` (mostly solved) and hard ones at
`p = 0.052` (mostly not). Near this start the pass@1 gradient is dominated by the many easy
prompts; a hard prompt's own gradient (raise answer 1, lower answer 0 at its `s`) lowers the
success of the easy prompts with similar `s`, so hard prompts in the overlap have negative
agreement, and pass@k, which up-weights low-`p` prompts by `w_k(p) = k (1-p)^(k-1)`, turns
against pass@1 from `k*` on.

Defaults (`n_prompts=256`, `p_hard=0.2`, `separation=1.0`, `n_actions=8`, `start_logit=2.5`) give
`k*` between 5 and 7 for every key tried (`tests/test_sim_toy.py` checks `4 <= k* <= 64` on eight
keys), so pass@2 to pass@4 are safe and pass@8 and above conflict. Why these values (from a scan
of `p_hard` in {0.1, 0.2, 0.3}, `separation` in {0.5, 1, 1.5, 2}, `A` in {4, 6, 8, 10},
`L` in {1.5, 2, 2.5, 3}):

- `p_hard = 0.2`: hard prompts are a minority, so `grad J_1` follows the easy ones and the hard
  ones interfere negatively, yet numerous enough that the conflict is not a few outliers;
- `separation = 1`: a wide overlap (about 30% of each group lies on the other side of 0). From
  `separation = 1.5` on, some keys show no conflict at all (a linear rule in `s` serves both
  groups), and at 2 most do;
- `A = 8` and `L = 2.5`: `k*` grows with more wrong answers (hard prompts start lower) and with a
  smaller `L` (easy prompts less solved keep more weight): `A = 4`, `L = 3` gives `k* = 3`, too
  close to 1 to separate "safe" and "conflicting" `k`; `L = 1.5` gives `k*` near 12 but leaves
  easy prompts at `p = 0.39`, not "mostly solved". `L = 2.5` keeps easy prompts above 0.6.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import theory
from sim.bandit import DEFAULT_K_MAX, SoftmaxBandit
from sim.sweep import sweep_map

__all__ = [
    "TOY_DEFAULTS",
    "TOY_FIGURE_K",
    "toy_figure_key",
    "toy_bandit",
    "toy_start",
    "toy_diagnostics",
    "toy_grid_sweep",
]

#: Defaults of :func:`toy_bandit` (see the module docstring for why).
TOY_DEFAULTS = dict(n_prompts=256, p_hard=0.2, separation=1.0, n_actions=8, start_logit=2.5)
#: The order `k` of the toy figure (`figures/bandit_toy.png`) and of `passk toy` without `--k`.
TOY_FIGURE_K = 16
# What the run's key is folded with to draw the toy figure's bandit (other parts fold other numbers).
_TOY_FIGURE_FOLD = 100

EASY_ACTION = 0
HARD_ACTION = 1


def _check_size(name, x, minimum):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {x!r} of type {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {x}")
    return int(x)


def _check_real(name, x, lo=None, hi=None, *, strict_lo=False):
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, bool) or x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a real number; got {x!r}")
    arr = np.asarray(x)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a real scalar; got {x!r}")
    v = float(arr)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v!r}")
    if lo is not None and (v < lo or (strict_lo and v <= lo)):
        raise ValueError(f"{name} must be {'>' if strict_lo else '>='} {lo}; got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}; got {v!r}")
    return x


def toy_figure_key(key):
    """The key of the toy figure's bandit in a run keyed `key` (`key` folded with a fixed number).

    `passk reproduce --seed s` (the figure and `figures/results.json`) and `passk toy --seed s`
    both pass `key = jax.random.key(s)`, so the two report the same bandit; so does
    :func:`toy_diagnostics` without a `key` (seed 0).

    Args:
      key: the run's `jax.random` key.

    Returns:
      A `jax.random` key.
    """
    return jax.random.fold_in(key, _TOY_FIGURE_FOLD)


def toy_start(n_actions: int, start_logit=TOY_DEFAULTS["start_logit"], dtype=None):
    """The documented start `theta0`: bias `start_logit` on the easy answer, everything else 0.

    Every prompt then has `pi(easy answer) = e^L / (e^L + A - 1)`: easy prompts mostly solved,
    hard ones mostly not. Shape `(n_actions, 2)`.
    """
    n_actions = _check_size("n_actions", n_actions, 2)
    _check_real("start_logit", start_logit)
    dtype = jnp.result_type(float) if dtype is None else dtype
    theta = jnp.zeros((n_actions, 2), dtype)
    return theta.at[EASY_ACTION, 0].set(jnp.asarray(start_logit, dtype))


def toy_bandit(
    key,
    *,
    n_prompts: int = TOY_DEFAULTS["n_prompts"],
    p_hard=TOY_DEFAULTS["p_hard"],
    separation=TOY_DEFAULTS["separation"],
    n_actions: int = TOY_DEFAULTS["n_actions"],
    start_logit=TOY_DEFAULTS["start_logit"],
    dtype=None,
):
    """Sample the toy conflict bandit and its start (see the module docstring).

    `p_hard`, `separation` and `start_logit` may be traced (vmap over regimes: the same `key`
    gives common random numbers, so neighbouring regimes differ only by the parameters);
    `n_prompts` and `n_actions` set shapes and must be Python integers.

    Args:
      key: a `jax.random` key.
      n_prompts: `P >= 1`.
      p_hard: probability in `[0, 1]` that a prompt is hard.
      separation: distance `>= 0` between the centres of the hard and easy feature Gaussians.
      n_actions: `A >= 2` answers (answer 0 correct for easy prompts, answer 1 for hard ones).
      start_logit: bias of the easy answer in `theta0`.
      dtype: floating dtype (default: JAX's default float, float32 unless x64 is enabled).

    Returns:
      `(bandit, theta0)`: a :class:`SoftmaxBandit` with features `(P, 2)`, rewards `(P, A)` and
      uniform prompt weights, and `theta0` of shape `(A, 2)`. The hard labels are
      `bandit.rewards[:, 1] == 1`.
    """
    n_prompts = _check_size("n_prompts", n_prompts, 1)
    n_actions = _check_size("n_actions", n_actions, 2)
    _check_real("p_hard", p_hard, 0.0, 1.0)
    _check_real("separation", separation, 0.0)
    _check_real("start_logit", start_logit)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    features, rewards, theta0 = _toy_arrays(
        key, p_hard, separation, start_logit, n_prompts=n_prompts, n_actions=n_actions, dtype=dtype
    )
    return SoftmaxBandit(features, rewards), theta0


@functools.partial(jax.jit, static_argnames=("n_prompts", "n_actions", "dtype"))
def _toy_arrays(key, p_hard, separation, start_logit, *, n_prompts, n_actions, dtype):
    """Features, reward table and start of :func:`toy_bandit` (compiled once per size and dtype)."""
    k_label, k_noise = jax.random.split(key)
    hard = jax.random.uniform(k_label, (n_prompts,), dtype) < jnp.asarray(p_hard, dtype)
    half = jnp.asarray(separation, dtype) / 2
    s = jax.random.normal(k_noise, (n_prompts,), dtype) + jnp.where(hard, -half, half)
    features = jnp.stack([jnp.ones_like(s), s], axis=-1)
    correct = jnp.where(hard, HARD_ACTION, EASY_ACTION)
    rewards = jax.nn.one_hot(correct, n_actions, dtype=dtype)
    theta0 = jnp.zeros((n_actions, 2), dtype).at[EASY_ACTION, 0].set(jnp.asarray(start_logit, dtype))
    return features, rewards, theta0


def hard_mask(bandit: SoftmaxBandit):
    """Boolean `(P,)`: which prompts of a :func:`toy_bandit` are hard."""
    return bandit.rewards[..., HARD_ACTION] > 0


def toy_diagnostics(
    p_hard=TOY_DEFAULTS["p_hard"],
    separation=TOY_DEFAULTS["separation"],
    k: int = TOY_FIGURE_K,
    *,
    n_actions: int = TOY_DEFAULTS["n_actions"],
    n_prompts: int = TOY_DEFAULTS["n_prompts"],
    start_logit=TOY_DEFAULTS["start_logit"],
    ks=None,
    key=None,
    k_max: int = DEFAULT_K_MAX,
) -> dict:
    """Exact conflict diagnostics of one toy regime at its start, as a JSON-serialisable dict.

    For `passk toy`; without arguments, the toy figure's start (`figures/results.json`, part
    `bandit`, `toy`). Computed in float32 unless x64 is enabled; in float64 the same key draws a
    different bandit (the figure's is float32).

    Args:
      p_hard, separation, n_actions, n_prompts, start_logit: the regime (see :func:`toy_bandit`).
      k: the pass@k order of interest (`>= 1`).
      ks: orders for the `cos_k` / `I_k` curves (default 1..max(64, 2k), powers-of-two spaced
        above 16).
      key: `jax.random` key of the bandit's draw (default: the figure's at seed 0,
        `toy_figure_key(jax.random.key(0))`).
      k_max: largest `k` searched for `k*`.

    Returns:
      A dict with the regime, `k_star` (None when no conflict up to `k_max`), `safe_k`, the
      values at `k` (`j1`, `jk`, `inner`, `mean_agreement`, `cos`, `conflict`), the curves over
      `ks`, and the per-group means of `p`, agreement and normalised weight at `k`.
    """
    k = _check_size("k", k, 1)
    key = toy_figure_key(jax.random.key(0)) if key is None else key
    if ks is None:
        top = max(64, 2 * k)
        ks = sorted(set(list(range(1, 17)) + [int(x) for x in np.unique(np.geomspace(16, top, 12).astype(int))] + [k]))
    ks = np.asarray(ks, dtype=np.int64)
    if ks.ndim != 1 or ks.size == 0 or ks.min() < 1:
        raise ValueError(f"ks must be a non-empty 1-D list of integers >= 1; got {ks!r}")
    if k not in set(ks.tolist()):
        ks = np.sort(np.append(ks, k))
    bandit, theta0 = toy_bandit(
        key,
        n_prompts=n_prompts,
        p_hard=p_hard,
        separation=separation,
        n_actions=n_actions,
        start_logit=start_logit,
    )
    # On the host from here: indexing device arrays would compile a program per operation.
    diag = bandit.diagnostics(theta0, jax.device_put(ks.astype(np.int32)), k_max=k_max)
    diag = jax.tree_util.tree_map(np.asarray, diag)
    hard = hard_mask(jax.tree_util.tree_map(np.asarray, bandit))
    idx = int(np.searchsorted(ks, k))
    p = np.asarray(diag.p, dtype=np.float64)
    a = np.asarray(diag.agreement, dtype=np.float64)
    omega = np.asarray(diag.weights[idx], dtype=np.float64)

    def group(mask):
        if not mask.any():
            return None
        return {
            "count": int(mask.sum()),
            "mean_p": float(p[mask].mean()),
            "mean_agreement": float(a[mask].mean()),
            "share_negative_agreement": float((a[mask] < 0).mean()),
            "weight_at_k": float(omega[mask].sum()),
        }

    k_star = theory.k_star_or_none(diag.k_star, k_max)
    return {
        "regime": {
            "p_hard": float(p_hard),
            "separation": float(separation),
            "n_actions": int(n_actions),
            "n_prompts": int(n_prompts),
            "start_logit": float(start_logit),
        },
        "k": k,
        "k_star": k_star,
        "safe_k": theory.safe_k(k_star, k_max),
        "conflict": bool(float(diag.mean_agreement[idx]) < 0),
        "j1": float(diag.j1),
        "jk": float(diag.jk[idx]),
        "inner": float(diag.inner[idx]),
        "mean_agreement": float(diag.mean_agreement[idx]),
        "cos": float(diag.cos[idx]),
        "grad_norm_1": float(diag.grad_norm_1),
        "curves": {
            "ks": ks.tolist(),
            "jk": np.asarray(diag.jk, np.float64).tolist(),
            "inner": np.asarray(diag.inner, np.float64).tolist(),
            "mean_agreement": np.asarray(diag.mean_agreement, np.float64).tolist(),
            "cos": np.asarray(diag.cos, np.float64).tolist(),
        },
        "groups": {"hard": group(hard), "easy": group(~hard)},
        "prompts": {
            "p": p.tolist(),
            "agreement": a.tolist(),
            "hard": hard.tolist(),
            "weight_at_k": omega.tolist(),
        },
    }


def toy_grid_sweep(
    entry, *, key, n_p_hard: int, n_separation: int, n_seeds: int, p_hard_range, separation_range, devices=None
):
    """`entry((p_hard, separation, key))` over a `p_hard x separation` grid and seeds, one compiled call.

    All `n_seeds * n_p_hard * n_separation` regimes form one sweep axis (:func:`sim.sweep.sweep_map`,
    float32 parameters). Seeds use common random numbers across the grid (the same key for every
    cell), so a map is smooth in the parameters.

    Returns:
      `(p_axis, separation_axis, out)`: the grid axes and `entry`'s outputs with leading axes
      `(n_seeds, n_p_hard, n_separation)`, as numpy arrays.
    """
    p_axis = np.linspace(*p_hard_range, n_p_hard)
    s_axis = np.linspace(*separation_range, n_separation)
    seed_keys = jax.random.split(key, n_seeds)
    S, I, J = np.meshgrid(np.arange(n_seeds), np.arange(n_p_hard), np.arange(n_separation), indexing="ij")
    args = (
        jnp.asarray(p_axis[I.ravel()], jnp.float32),
        jnp.asarray(s_axis[J.ravel()], jnp.float32),
        seed_keys[S.ravel()],
    )
    out = sweep_map(entry, args, devices=devices)
    shape = (n_seeds, n_p_hard, n_separation)
    return p_axis, s_axis, jax.tree_util.tree_map(lambda v: np.asarray(v).reshape(shape + v.shape[1:]), out)
