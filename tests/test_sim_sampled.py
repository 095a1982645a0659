"""Sampled answers with exact scores (`sim.answers`) and the recovery studies (`sim.studies.recovery`,
`sim.studies.transformer_recovery`), and intervals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import theory
from sim import toy_bandit
from sim.answers import scored_answers
from sim.intervals import mean_interval, quantile_interval, wilson_interval
from sim.studies import transformer_recovery as tsampled
from sim.studies.recovery import interval_covers, k_star_covered, toy_recovery
from sim.transformer import model as tmodel
from sim.transformer import task as ttask
from sim.transformer.exact import log_success, per_prompt_gradients, success


@pytest.fixture(scope="module")
def toy():
    bandit, theta = toy_bandit(jax.random.key(3), n_prompts=32, dtype=jnp.float64)
    return bandit, theta


def test_scored_answers_match_autodiff_of_the_log_policy(toy):
    bandit, theta = toy
    draw = scored_answers(bandit, theta, 5, key=jax.random.key(0))
    logp = lambda th: jax.nn.log_softmax(bandit.features @ th.T, axis=-1)  # independent of sim
    jac = jax.jacrev(logp)(theta).reshape(32, bandit.n_actions, -1)  # (P, A, A*d)
    want = np.take_along_axis(np.asarray(jac), np.asarray(draw.answers)[..., None], axis=1)
    np.testing.assert_allclose(draw.scores, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(
        draw.rewards, np.take_along_axis(np.asarray(bandit.rewards), np.asarray(draw.answers), 1)
    )
    again = scored_answers(bandit, theta, 5, key=jax.random.key(0))
    np.testing.assert_array_equal(draw.answers, again.answers)
    batch = jax.vmap(lambda k: scored_answers(bandit, theta, 5, key=k).scores)(jax.random.split(jax.random.key(1), 3))
    assert batch.shape == (3, 32, 5, bandit.n_actions * 2)


def test_scored_answers_rejects_a_bad_n(toy):
    with pytest.raises(ValueError, match="n .* must be a positive integer; got 0"):
        scored_answers(*toy, 0, key=jax.random.key(0))


@pytest.mark.slow
def test_recovery_study_on_the_toy():
    """Exact k* agrees with the bandit's diagnostics; counts add up; I_k_hat unbiased (z-score)."""
    result = toy_recovery(key=jax.random.key(0), ns=(16,), repeats=50, n_prompts=64)
    bandit, theta = toy_bandit(jax.random.fold_in(jax.random.key(0), 0), n_prompts=64, dtype=jnp.float64)
    assert result["k_star_exact"] == int(bandit.diagnostics(theta, jnp.arange(1, 3)).k_star)
    entry = result["by_n"][0]
    for side in ("unbiased", "plugin"):
        assert sum(entry[side]["histogram"].values()) == 50
    for kind in ("prompts", "answers"):
        assert entry["unbiased"][kind]["coverage"]["n"] == 50
    for row in entry["inner"]:
        assert abs(row["unbiased_bias_z"]) < 4
        assert row["unbiased"]["lower"] <= row["unbiased"]["value"] <= row["unbiased"]["upper"]


def test_k_star_covered_reads_both_ends_of_the_interval():
    """Hand-built intervals on the sentinel scale (`k_max = 10`, 11 meaning none)."""
    lower = np.array([3, 3, 3, 3, 11, 11, 4, 5])
    upper = np.array([5, 5, 5, 11, 11, 11, 4, 7])
    truth = np.array([4, 6, 2, 9, 4, 11, 4, 11])
    want = [True, False, False, True, False, True, True, False]
    got = [bool(k_star_covered(lo, hi, t, 10)) for lo, hi, t in zip(lower, upper, truth)]
    assert got == want
    # the runs' form: one truth, arrays of ends; a k* above an established upper end is missed
    np.testing.assert_array_equal(
        k_star_covered(np.array([1, 2, 3, 7]), np.array([3, 5, 8, 11]), 6, 10), [False, False, True, False]
    )


def test_interval_covers_is_the_two_sided_interval():
    est, se = np.array([1.0, 1.0, 1.0, 1.0, -2.0]), np.array([1.0, 1.0, 1.0, 1.0, 0.5])
    exact = 3.5  # 2.5 se above the first four estimates: outside at 1.96, inside a doubled interval
    np.testing.assert_array_equal(interval_covers(est, se, exact, 1.96), [False] * 5)
    np.testing.assert_array_equal(interval_covers(est, se, 2.9, 1.96), [True, True, True, True, False])
    np.testing.assert_array_equal(interval_covers(est, se, -1.0, 1.96), [False, False, False, False, False])
    np.testing.assert_array_equal(interval_covers(est, se, -1.1, 1.96), [False, False, False, False, True])


@pytest.mark.slow
def test_recovery_study_coverage_counts_match_a_recount():
    """The study's coverage counts equal a recount from each run's intervals, recomputed by
    `theory.sampled_critical_k` (the same Bonferroni band) and `theory.sampled_inner_product` on
    the same draws. At level 0.5 the `I_k` intervals are narrow, so some runs fall between the
    interval and its double (checked): a count that widens it differs. The `k*` ends rarely miss
    on this toy; :func:`test_k_star_covered_reads_both_ends_of_the_interval` checks them."""
    key, n, repeats, level = jax.random.key(0), 8, 40, 0.5
    result = toy_recovery(key=key, ns=(n,), repeats=repeats, n_prompts=16, level=level)
    bandit, theta = toy_bandit(jax.random.fold_in(key, 0), n_prompts=16, dtype=jnp.float64)
    mu = np.asarray(bandit.prompt_weights)
    p, a = np.asarray(bandit.success(theta)), np.asarray(bandit.agreement_scores(theta))
    k_star = theory.critical_k(p, a, mu)
    assert result["k_star_exact"] == k_star and k_star <= n - 1
    entry = result["by_n"][0]
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, 1), n), repeats)
    z = theory.normal_quantile(level)
    exact = np.asarray(theory.conflict_inner_product(p, a, np.array([k_star - 1, k_star]), mu))
    covered, inner_hits, widened = 0, np.zeros(2, int), 0
    with jax.enable_x64(True):
        for run_key in keys:
            draw = scored_answers(bandit, theta, n, key=run_key)
            crit = theory.sampled_critical_k(draw.rewards, draw.scores, mu=mu, level=level)
            lo = crit.lower if crit.lower is not None else n
            hi = crit.upper if crit.upper is not None else math.inf
            covered += lo <= k_star <= hi
            inner = theory.sampled_inner_product(draw.rewards, draw.scores, np.array([k_star - 1, k_star]), mu=mu)
            gap = np.abs(np.asarray(inner.estimate) - exact)
            inner_hits += gap <= z * np.asarray(inner.stderr)
            widened += int(np.sum((gap > z * np.asarray(inner.stderr)) & (gap <= 2 * z * np.asarray(inner.stderr))))
    assert widened > 0  # the recount can tell a doubled I_k interval apart
    assert entry["unbiased"]["prompts"]["coverage"]["value"] * repeats == pytest.approx(covered)
    assert [row["stderr"]["prompts"]["coverage"]["value"] * repeats for row in entry["inner"]] == pytest.approx(
        list(inner_hits)
    )


# ---------------------------------------------------------------------------------------------
# The transformer: counts and correct-answer scores are what sampled answers give


@pytest.fixture(scope="module")
def tiny_transformer():
    with jax.enable_x64(True):
        task = ttask.make_task(ttask.TaskConfig(modulus=3), key=jax.random.key(0))
        cfg = tmodel.ModelConfig(
            vocab_size=task.vocab_size, max_len=task.seq_len, d_model=8, n_heads=2, n_layers=1, d_mlp=16
        )
        params = tmodel.init(jax.random.key(1), cfg, dtype=jnp.float64)
    return task, cfg, params


@pytest.mark.slow
def test_sampled_answers_have_the_correct_answer_scores(tiny_transformer):
    """Answers scored by autodiff one by one give the statistics the study builds from counts and
    the per-prompt scores `grad log p_i` (the task's correct answers are unique). The answers are
    the correct one or a random token pair, each with probability 1/2 (any answers would do: the
    identity holds answer by answer)."""
    task, cfg, params = tiny_transformer
    n = 4
    with jax.enable_x64(True):
        prompts, answers = jnp.asarray(task.prompts), jnp.asarray(task.answers)
        k_pick, k_tokens = jax.random.split(jax.random.key(2))
        random = jax.random.randint(k_tokens, (prompts.shape[0], n, answers.shape[1]), 0, task.vocab_size)
        pick = jax.random.bernoulli(k_pick, 0.5, (prompts.shape[0], n))
        sampled = jnp.where(pick[..., None], answers[:, None, :], random).astype(answers.dtype)
        rewards = jnp.all(sampled == answers[:, None, :], axis=-1).astype(jnp.float64)
        assert 0 < float(rewards.mean()) < 1

        def score(prompt, answer):  # grad log pi(answer | prompt), flattened
            g = jax.grad(lambda th: log_success(th, prompt, answer, cfg))(params)
            return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g)])

        scores = jax.jit(jax.vmap(jax.vmap(score, in_axes=(None, 0))))(prompts, sampled)  # (P, n, D)
        direct = theory.answer_statistics(rewards, scores)
        star = per_prompt_gradients(params, prompts, answers, cfg, log=True)
        c = rewards.sum(axis=1)
        counted = theory.statistics_from_sums(c, c[:, None] * star, c * jnp.sum(star**2, axis=1), n=n)
        np.testing.assert_allclose(counted.mean_score, direct.mean_score, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(counted.pair, direct.pair, rtol=1e-10, atol=1e-13)
        factor = tsampled.gram_factor(star)
        via_factor = theory.statistics_from_sums(c, c[:, None] * factor, c * jnp.sum(factor**2, axis=1), n=n)
        ks = np.arange(1, n)
        np.testing.assert_allclose(
            theory.inner_product_from_statistics(via_factor, ks).estimate,
            theory.inner_product_from_statistics(direct, ks).estimate,
            rtol=1e-8,
            atol=1e-14,
        )
        p = success(params, prompts, answers, cfg)
        np.testing.assert_allclose(p, jnp.exp(jax.vmap(lambda x, y: log_success(params, x, y, cfg))(prompts, answers)))


def test_count_statistics_sketch_is_unbiased_for_inner_products():
    """`Z L` with Gaussian `Z`, entries N(0, 1/m): E <Z L_i, Z L_j> = <L_i, L_j> (z-test over draws)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        factor = jnp.asarray(np.pad(rng.normal(size=(4, 3)), ((0, 0), (0, 5))))  # width m = 8
        p = jnp.asarray([0.3, 0.5, 0.7, 0.9])
        stats = lambda k, sketch: theory.answer_statistics(
            *tsampled._count_draw(k, 4, (p, factor, jnp.asarray(sketch)))
        )
        draws = jax.vmap(lambda k: stats(k, True).mean_score)(jax.random.split(jax.random.key(0), 4000))
        counts = jax.vmap(lambda k: stats(k, False).correct)(jax.random.split(jax.random.key(0), 4000))
        # the counts are Binomial(4, p)
        np.testing.assert_allclose(counts.mean(0), 4 * p, atol=4 * np.sqrt(4 * 0.25 / 4000))
        # g_i = (c_i / n) Z L_i; <g_0, g_1> is unbiased for E[c_0 c_1] / n^2 <L_0, L_1>
        dots = np.einsum("rd,rd->r", draws[:, 0], draws[:, 1])
        want = float(p[0] * p[1] * (factor[0] @ factor[1]))
        assert abs(dots.mean() - want) < 4 * dots.std() / np.sqrt(len(dots))


def test_gram_factor_reproduces_the_gram_matrix():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(5, 40))
    scores[4] = scores[0] + scores[1]  # rank 4
    factor = tsampled.gram_factor(scores)
    assert factor.shape == (5, 4)
    np.testing.assert_allclose(factor @ factor.T, scores @ scores.T, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Intervals


def test_wilson_interval_closed_form_at_zero_successes():
    """At `s = 0` the Wilson upper end is `z^2 / (n + z^2)`."""
    z = 1.959963984540054
    got = wilson_interval(0, 10)
    assert got["value"] == 0.0 and got["lower"] == 0.0 and got["n"] == 10
    assert math.isclose(got["upper"], z * z / (10 + z * z), rel_tol=1e-12)


def test_wilson_interval_coverage_by_exact_enumeration():
    """Average exact coverage over `p` in [0.05, 0.95] is within a point of nominal at n = 50."""
    n = 50
    intervals = [wilson_interval(s, n) for s in range(n + 1)]
    coverage = []
    for p in np.linspace(0.05, 0.95, 91):
        pmf = np.array([math.comb(n, s) * p**s * (1 - p) ** (n - s) for s in range(n + 1)])
        inside = np.array([iv["lower"] <= p <= iv["upper"] for iv in intervals])
        coverage.append(pmf @ inside)
    assert 0.94 <= np.mean(coverage) <= 0.96, np.mean(coverage)
    assert min(coverage) >= 0.9


@given(n=st.integers(1, 400), share=st.floats(0.0, 1.0), level=st.sampled_from([0.8, 0.95, 0.99]))
def test_wilson_interval_ends_are_the_score_test_boundaries(n, share, level):
    """The Wilson interval is `{p : n (p_hat - p)^2 <= z^2 p (1 - p)}`: each end is a root of the
    quadratic (or 0 at `s = 0`, 1 at `s = n`) and the share lies between them."""
    s = round(share * n)
    iv = wilson_interval(s, n, level)
    z = theory.normal_quantile(level)
    p_hat = s / n
    assert iv["value"] == p_hat and iv["n"] == n
    assert iv["lower"] <= p_hat <= iv["upper"]
    boundary = lambda p: n * (p_hat - p) ** 2 - z * z * p * (1 - p)  # zero at a Wilson end
    for end, solved in ((iv["lower"], s == 0), (iv["upper"], s == n)):
        if solved:
            assert end == p_hat
        else:
            assert abs(boundary(end)) <= 1e-12 * (n + z * z)
    # just inside an end the score test accepts, just outside it rejects
    eps = 1e-6 * (iv["upper"] - iv["lower"])
    assert boundary(iv["lower"] + eps) < 0 and boundary(iv["upper"] - eps) < 0
    if s > 0:
        assert boundary(iv["lower"] - eps) > 0
    if s < n:
        assert boundary(iv["upper"] + eps) > 0


@pytest.mark.parametrize("s, n", [(0, 0), (3, 2), (-1, 4), (1.5, 4)])
def test_wilson_interval_rejects_bad_counts(s, n):
    with pytest.raises(ValueError, match="need integers 0 <= successes <= n with n >= 1"):
        wilson_interval(s, n)


def test_mean_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    iv = mean_interval(x)
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t quantile, 3 degrees of freedom
    assert math.isclose(iv["lower"], 2.5 - half) and math.isclose(iv["upper"], 2.5 + half) and iv["n"] == 4
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, np.nan])
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


@pytest.mark.parametrize("n", [3, 6, 30])
def test_mean_interval_coverage_over_few_seeds(n):
    """Measured coverage of the 95% mean interval for normal repeats is 95% even at 3 seeds."""
    rng = np.random.default_rng(n)
    draws = rng.normal(1.0, 2.0, size=(4000, n))
    covered = [(iv := mean_interval(x))["lower"] <= 1.0 <= iv["upper"] for x in draws]
    assert 0.935 <= np.mean(covered) <= 0.965, np.mean(covered)


@pytest.mark.parametrize("n, q", [(20, 0.5), (60, 0.25), (200, 0.75)])
def test_quantile_interval_coverage(n, q):
    """Measured coverage of the order-statistic interval of a quantile is at least nominal (and
    not far above it) for a skewed continuous distribution."""
    rng = np.random.default_rng(n)
    truth = -np.log(1 - q)  # exponential quantile
    draws = rng.exponential(size=(3000, n))
    covered = [(iv := quantile_interval(x, q))["lower"] <= truth <= iv["upper"] for x in draws]
    assert 0.94 <= np.mean(covered) <= 0.985, np.mean(covered)


def test_quantile_interval_censored_draws_and_small_n():
    x = np.array([3.0, 1.0, np.inf, 2.0, 5.0, 4.0, np.inf, 0.5, 6.0, 7.0])
    iv = quantile_interval(x, 0.5)
    assert iv["n"] == 10 and iv["lower"] <= iv["value"] <= iv["upper"]
    assert iv["lower"] == 1.0  # x_(2) of 10: P(B <= 1) = 11/1024 <= 0.025 < P(B <= 2)
    tiny = quantile_interval([2.0, 1.0], 0.5)  # too few draws: the sample's range
    assert (tiny["lower"], tiny["upper"]) == (1.0, 2.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: quantile_interval([], 0.5), "values must be a non-empty array"),
        (lambda: quantile_interval([1.0, np.nan], 0.5), "values must be a non-empty array without NaN"),
        (lambda: quantile_interval([1.0, 2.0], 1.0), "q must lie in"),
        (lambda: mean_interval([1.0, 2.0], level=1.5), "level must lie in"),
        (lambda: mean_interval([1.0, np.inf]), "values must be a non-empty array of finite numbers"),
    ],
)
def test_interval_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
