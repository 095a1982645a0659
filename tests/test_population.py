"""SPEC section 11: the cross-fitted population `I_k` from one number per answer, and the bands of
`theory.bands`.

Unbiasedness is checked by exact enumeration: prompts drawn with replacement from a small
population, every answer of every prompt enumerated, the estimator averaged with the outcomes'
probabilities and compared with the exact `I_k = sum_x mu_x w_k(p_x) <grad p_x, grad J_1>`, written
here in plain numpy (no `theory` closed form). The jackknife is checked against deleting a fold
and recomputing the estimate from scratch.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import theory
from theory import bands

jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------- an independent bandit


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _bandit(seed, n_pop=2, n_actions=2, dim=2):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n_pop, dim))
    theta = rng.normal(size=(n_actions, dim))
    reward = (rng.random((n_pop, n_actions)) < 0.5).astype(float)
    reward[:, 0] = [1.0, 0.0][:n_pop] if n_pop == 2 else reward[:, 0]
    reward[:, -1] = 1.0 - reward[:, 0]  # every prompt has a correct and a wrong answer
    pi = _softmax(phi @ theta.T)  # (N, A)
    # s(x, a) = grad_theta log pi(a|x) = (e_a - pi_x) phi_x^T, flattened
    eye = np.eye(n_actions)
    score = (eye[None, :, :] - pi[:, None, :])[..., None] * phi[:, None, None, :]  # (N, A, A, d)
    score = score.reshape(n_pop, n_actions, n_actions * dim)
    mu = rng.dirichlet(np.ones(n_pop))
    return pi, reward, score, mu


def _exact_inner(pi, reward, score, mu, k):
    p = np.sum(pi * reward, axis=1)
    grad_p = np.einsum("na,na,nad->nd", pi, reward, score)
    grad_j1 = mu @ grad_p
    return float(np.sum(mu * k * (1 - p) ** (k - 1) * (grad_p @ grad_j1)))


def _alignments(r, s, folds, n_folds, mask):
    """`t_ijf = <s_ij, v_f>` for every fold (own fold included), plain numpy, `(P, n, F)`."""
    counts = mask.sum(axis=1)
    g = np.einsum("pn,pnd->pd", r * mask, s) / counts[:, None]
    v = np.stack([g[folds == f].mean(axis=0) for f in range(n_folds)])
    return np.einsum("pnd,fd->pnf", s, v)


def _enumerate(pi, reward, score, mu, n, folds, mask):
    """Every outcome: prompt draws (with replacement) and answers; `(prob, rewards, alignments)`."""
    n_pop, n_actions = pi.shape
    n_prompts, n_folds = len(folds), int(folds.max()) + 1
    probs, rs, ts = [], [], []
    for xs in itertools.product(range(n_pop), repeat=n_prompts):
        xs = np.array(xs)
        for ys in itertools.product(range(n_actions), repeat=n_prompts * n):
            ys = np.array(ys).reshape(n_prompts, n)
            # absent answers are enumerated too and marginalise out (the estimator never reads them)
            prob = np.prod(mu[xs]) * np.prod(pi[xs[:, None], ys])
            r = reward[xs[:, None], ys]
            s = score[xs[:, None], ys]
            probs.append(prob)
            rs.append(r)
            ts.append(_alignments(r, s, folds, n_folds, mask))
    return np.array(probs), np.array(rs), np.array(ts)


@pytest.mark.parametrize(
    "seed, counts",
    [(0, (3, 3, 3)), (1, (3, 3, 3)), (2, (3, 2, 3)), (3, (2, 3, 3))],
)
def test_unbiased_by_exact_enumeration(seed, counts):
    """`E[I_k_hat] = I_k` over prompt draws with replacement and every answer, `k <= min n_i`.

    Mutations that fail it: `C(n_i, k-1)` for `C(n_i - 1, k-1)` in `c1`; the own fold included
    (the alignments here carry the own fold's real value, so using it biases the mean)."""
    pi, reward, score, mu = _bandit(seed)
    n = 3
    folds = np.array([0, 1, 2])
    mask = np.arange(n)[None, :] < np.array(counts)[:, None]
    prob, rs, ts = _enumerate(pi, reward, score, mu, n, folds, mask)
    assert prob.sum() == pytest.approx(1.0, abs=1e-12)
    ks = np.arange(1, min(counts) + 1)
    est = jax.vmap(lambda r, t: theory.population_inner_product(r, t, folds, ks, mask=mask).estimate)(rs, ts)
    mean = np.asarray(prob @ np.asarray(est))
    exact = np.array([_exact_inner(pi, reward, score, mu, int(k)) for k in ks])
    np.testing.assert_allclose(mean, exact, rtol=1e-10, atol=1e-14)


def _instance(seed, n_prompts=9, n=5, n_folds=3, dim=4):
    rng = np.random.default_rng(seed)
    r = (rng.random((n_prompts, n)) < rng.uniform(0.1, 0.9, (n_prompts, 1))).astype(float)
    s = rng.normal(size=(n_prompts, n, dim))
    folds = rng.permutation(np.arange(n_prompts) % n_folds)
    mask = np.ones((n_prompts, n), bool)
    mask[rng.integers(n_prompts), n - 1] = False  # one prompt one answer short
    return r, s, folds, mask, _alignments(r, s, folds, n_folds, mask)


def _from_scratch(r, t, folds, mask, k, keep):
    """The estimator on the folds in `keep` only, written as SPEC section 11 states it."""
    from math import comb

    rows = [i for i in range(len(folds)) if folds[i] in keep]
    total = 0.0
    for i in rows:
        n_i = int(mask[i].sum())
        c = int((r[i] * mask[i]).sum())
        f = n_i - c
        c1 = k * comb(f, k - 1) / comb(n_i - 1, k - 1) if c >= 1 else 0.0
        others = [g for g in keep if g != folds[i]]
        t_i = sum(r[i, j] * np.mean(t[i, j, others]) for j in range(r.shape[1]) if mask[i, j]) / n_i
        total += c1 * t_i
    return total / len(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_and_jackknife_against_the_formula_from_scratch(seed):
    r, s, folds, mask, t = _instance(seed)
    n_folds = t.shape[2]
    ks = np.arange(1, 5)
    inner = theory.population_inner_product(r, t, folds, ks, mask=mask)
    for idx, k in enumerate(ks):
        scale = np.exp(float(inner.log_scale[idx]))
        assert float(inner.estimate[idx]) == pytest.approx(
            _from_scratch(r, t, folds, mask, int(k), range(n_folds)), rel=1e-10, abs=1e-14
        )
        deleted = [
            _from_scratch(r, t, folds, mask, int(k), [g for g in range(n_folds) if g != d]) for d in range(n_folds)
        ]
        np.testing.assert_allclose(np.asarray(inner.deleted[idx]) * scale, deleted, rtol=1e-10, atol=1e-14)
        var = (n_folds - 1) / n_folds * np.sum((np.array(deleted) - np.mean(deleted)) ** 2)
        assert float(inner.stderr[idx]) == pytest.approx(np.sqrt(var), rel=1e-10)
    assert inner.dof == n_folds - 1


def test_own_fold_values_are_ignored():
    r, s, folds, mask, t = _instance(5)
    own = np.arange(t.shape[2])[None, None, :] == folds[:, None, None]
    poisoned = np.where(own, np.nan, t)
    a = theory.population_inner_product(r, t, folds, np.arange(1, 4), mask=mask)
    b = theory.population_inner_product(r, poisoned, folds, np.arange(1, 4), mask=mask)
    np.testing.assert_array_equal(np.asarray(a.estimate), np.asarray(b.estimate))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4))
def test_signs_from_scaled_fields_and_scale_equivariance(seed, k):
    """`estimate = exp(log_scale) scaled_estimate`; scaling every alignment by `c > 0` scales the
    estimate and standard error by `c`."""
    r, s, folds, mask, t = _instance(seed)
    inner = theory.population_inner_product(r, t, folds, k, mask=mask)
    assert float(inner.estimate) == pytest.approx(
        np.exp(float(inner.log_scale)) * float(inner.scaled_estimate), rel=1e-12, abs=1e-300
    )
    scaled = theory.population_inner_product(r, 3.0 * t, folds, k, mask=mask)
    assert float(scaled.estimate) == pytest.approx(3.0 * float(inner.estimate), rel=1e-10, abs=1e-14)
    assert float(scaled.stderr) == pytest.approx(3.0 * float(inner.stderr), rel=1e-10, abs=1e-14)


def test_large_groups_and_orders_do_not_underflow_the_sign():
    """`n = 4000`, `k` up to 4000: the scaled fields stay finite with the sign of the sum."""
    rng = np.random.default_rng(3)
    n_prompts, n, n_folds = 6, 4000, 3
    # 400 correct answers of 4000 each: c1 at k = 3500 is about exp(-830)
    r = np.stack([rng.permutation(np.arange(n) < 400) for _ in range(n_prompts)]).astype(float)
    t = rng.normal(size=(n_prompts, n, n_folds))
    folds = np.arange(n_prompts) % n_folds
    inner = theory.population_inner_product(r, t, folds, np.array([1, 100, 1000, 3500]))
    assert np.all(np.isfinite(np.asarray(inner.scaled_estimate)))
    assert np.all(np.isfinite(np.asarray(inner.scaled_stderr)))
    assert float(inner.estimate[-1]) == 0.0  # underflows, while the scaled field keeps the sign
    assert float(inner.scaled_estimate[-1]) != 0.0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rewards=np.full((3, 2), 0.5)), "rewards must be 0 or 1"),
        (dict(alignments=np.zeros((3, 2))), "alignments must have shape"),
        (dict(alignments=np.zeros((3, 2, 1))), "F >= 2"),
        (dict(folds=np.array([0, 0, 0])), "fold 1 has no prompt"),
        (dict(folds=np.array([0, 1, 3])), "folds must be < F = 3"),
        (dict(folds=np.array([0.0, 1.0, 2.0])), "folds must be an integer"),
        (dict(ks=3), "prompt 0 has 2 answers"),
        (dict(ks=0), "ks must be >= 1"),
        (dict(mask=np.array([[True, False], [False, False], [True, True]])), "prompt 1 has none"),
    ],
)
def test_bad_input_is_named(change, message):
    args = dict(
        rewards=np.array([[1, 0], [0, 1], [1, 1]]),
        alignments=np.ones((3, 2, 3)),
        folds=np.array([0, 1, 2]),
        ks=1,
        mask=None,
    )
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        theory.population_inner_product(
            args["rewards"], args["alignments"], args["folds"], args["ks"], mask=args["mask"]
        )


def test_non_finite_alignment_off_the_own_fold_is_named():
    t = np.ones((3, 2, 3))
    t[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="prompt 1, answer 0, fold 2"):
        theory.population_inner_product(np.array([[1, 0], [0, 1], [1, 1]]), t, np.array([0, 1, 2]), 1)


# --------------------------------------------------------------------------- bands


def test_t_quantile_matches_tables():
    assert bands.t_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert bands.t_quantile(0.95, 3) == pytest.approx(3.182446, abs=1e-6)
    assert bands.t_quantile(0.99, 7) == pytest.approx(stats.t.ppf(0.995, 7), rel=1e-12)


def test_simultaneous_quantile_limits():
    """One order: the pointwise quantile. Independent orders: Sidak's closed form. Identical
    orders: pointwise again. Bonferroni is never narrower. The same key gives the same number."""
    key = jax.random.key(0)
    assert bands.simultaneous_quantile(np.eye(1), key=key) == pytest.approx(1.96, abs=0.03)
    n_k = 6
    sidak = stats.norm.ppf((1 + 0.95 ** (1 / n_k)) / 2)
    q_ind = bands.simultaneous_quantile(np.eye(n_k), key=key, draws=200_000)
    assert q_ind == pytest.approx(sidak, abs=0.02)
    assert bands.simultaneous_quantile(np.ones((n_k, n_k)), key=key) == pytest.approx(1.96, abs=0.03)
    assert bands.simultaneous_quantile(np.eye(n_k)) >= q_ind
    assert bands.simultaneous_quantile(np.eye(n_k), key=key) == bands.simultaneous_quantile(np.eye(n_k), key=key)
    # a multivariate t shares its denominator: P(max |T| <= q) = E_V[(2 Phi(q sqrt(V / nu)) - 1)^K]
    q_t = bands.simultaneous_quantile(np.eye(n_k), dof=4, key=key, draws=200_000)
    joint = integrate.quad(
        lambda v: stats.chi2.pdf(v, 4) * (2 * stats.norm.cdf(q_t * np.sqrt(v / 4)) - 1) ** n_k, 0, np.inf
    )[0]
    assert joint == pytest.approx(0.95, abs=0.003)


def test_band_covers_every_order_at_its_level():
    """Correlated Gaussian t statistics (an AR(1) correlation across 12 orders): the max-t band
    covers all 12 at once in about 95% of draws; the pointwise band does not."""
    n_k, rho = 12, 0.8
    corr = rho ** np.abs(np.subtract.outer(np.arange(n_k), np.arange(n_k)))
    q = bands.simultaneous_quantile(corr, key=jax.random.key(1), draws=100_000)
    z = np.random.default_rng(0).multivariate_normal(np.zeros(n_k), corr, size=20_000)
    covered = np.mean(np.all(np.abs(z) <= q, axis=1))
    pointwise = np.mean(np.all(np.abs(z) <= 1.96, axis=1))
    assert abs(covered - 0.95) < 0.01
    assert pointwise < 0.85


def test_read_critical_k_ends():
    est = np.array([5.0, 1.0, 0.2, -0.5, -3.0])
    se = np.array([1.0, 1.0, 0.1, 0.1, 1.0])
    out = bands.read_critical_k(est, se, quantile=2.0, level=0.95, band="max-t", signal_quantile=1.96)
    assert (out.estimate, out.lower, out.upper, out.k_max, out.signal) == (4, 2, 4, 5, True)
    flat = bands.read_critical_k(
        np.array([0.5, -0.1]), np.array([1.0, 1.0]), quantile=2.0, level=0.95, band="max-t", signal_quantile=1.96
    )
    assert flat.signal is False


def test_bonferroni_quantile_and_band_ends():
    """Bonferroni's `t_{1 - alpha / (2K)}` (the pointwise one at `K = 1`); `band_ends` reads the
    three first crossings along the last axis, `k_max + 1` for none, batched and under `jit`."""
    assert bands.bonferroni_quantile(1) == pytest.approx(1.959964, abs=1e-6)
    assert bands.bonferroni_quantile(15) == pytest.approx(stats.norm.ppf(1 - 0.05 / 30), rel=1e-12)
    assert bands.bonferroni_quantile(7, level=0.9, dof=3) == pytest.approx(stats.t.ppf(1 - 0.1 / 14, 3), rel=1e-12)
    assert bands.simultaneous_quantile(np.eye(15)) == bands.bonferroni_quantile(15)
    with pytest.raises(ValueError, match="n_orders"):
        bands.bonferroni_quantile(0)
    est = np.array([[5.0, 1.0, 0.2, -0.5, -3.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    se = np.array([[1.0, 1.0, 0.1, 0.1, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    got = jax.jit(bands.band_ends)(est, se, 2.0)
    assert [list(map(int, v)) for v in got] == [[4, 6], [2, 1], [4, 6]]
    per_run = bands.band_ends(est, se, np.array([[2.0], [0.5]]))  # a quantile per run
    assert [list(map(int, v)) for v in per_run] == [[4, 6], [2, 6], [4, 6]]


def test_population_critical_k_reads_the_band():
    r, s, folds, mask, t = _instance(7, n_prompts=12, n=6, n_folds=4)
    out = theory.population_critical_k(r, t, folds, mask=mask, key=jax.random.key(0))
    inner = theory.population_inner_product(r, t, folds, np.arange(1, out.k_max + 1), mask=mask)
    est, se = np.asarray(inner.scaled_estimate), np.asarray(inner.scaled_stderr)
    first = lambda v: int(np.flatnonzero(v < 0)[0]) + 1 if np.any(v < 0) else None
    assert out.k_max == 5 and out.band == "max-t"
    assert out.quantile >= bands.t_quantile(0.95, 3)
    assert (out.estimate, out.lower, out.upper) == (
        first(est),
        first(est - out.quantile * se),
        first(est + out.quantile * se),
    )
    with pytest.raises(ValueError, match="F >= 3"):
        theory.population_critical_k(r[:4], t[:4, :, :2], np.array([0, 1, 0, 1]))
