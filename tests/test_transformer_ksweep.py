"""The transformer's k sweep (`sim.studies.transformer_ksweep`) and the rare-rule task family.

The rare-rule verifier and exact success are checked by enumerating every answer; the sweep's
sampling shortcut (rewards drawn from the exact `p`) against sampled answers scored by the
verifier; its exact runs against `I_k`; padding against the unpadded population; the quick
preset's table for its keys, types and sign rules, its repeatability and its figure; bad input for
named errors.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from passk.presets import QUICK
from sim.studies import transformer_ksweep as ksweep
from sim.studies import transformer_ksweep_rows as ksweep_rows
from sim.transformer import exact, model, pg_step, task_families, train

ROW_KEYS = {"task", "warm_start", "k_star", "k", "seeds", "pass1_change", "predicted_sign", "observed_sign"}
INTERVAL_KEYS = {"value", "lower", "upper", "n", "sd"}


def _tiny_rare_rule(steps=30):
    """A rare-rule task at `M = 4` and a tiny model after a short warm start (float32)."""
    t = task_families.make_family_task(
        "rare-rule", modulus=4, hard_fraction=0.25, sft_hard_fraction=0.5, key=jax.random.key(0)
    )
    cfg = model.ModelConfig(vocab_size=t.vocab_size, max_len=t.seq_len, d_model=16, n_heads=2, n_layers=1, d_mlp=32)
    params = model.init(jax.random.key(1), cfg)
    params, _ = train.supervised_warm_start(
        params,
        t.prompts[t.sft_index],
        t.answers[t.sft_index],
        cfg,
        train.SFTConfig(steps=steps, batch_size=16, learning_rate=1e-2, checkpoint_every=steps),
        key=jax.random.key(2),
    )
    return t, cfg, params


@pytest.fixture(scope="module")
def tiny():
    return _tiny_rare_rule()


@pytest.fixture(scope="module")
def quick():
    return ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0))


# ------------------------------------------------------------------------------------------------
# The rare-rule family


def test_rare_rule_population_and_answers():
    cfg = task_families.RareRuleConfig(modulus=5, rule_fraction=0.2, sft_rule_fraction=0.4)
    t = task_families.make_rare_rule_task(cfg, key=jax.random.key(3))
    m = t.modulus
    n_keep = round(0.2 * m * m)
    assert t.n_prompts == m * m + n_keep and t.is_hard.sum() == n_keep
    swap, keep = t.prompts[~t.is_hard], t.prompts[t.is_hard]
    assert np.all(swap[:, 2] == t.swap) and np.all(keep[:, 2] == t.keep) and np.all(t.prompts[:, 3] == t.equals)
    np.testing.assert_array_equal(t.answers[~t.is_hard], swap[:, [1, 0]])  # SWAP reverses the pair
    np.testing.assert_array_equal(t.answers[t.is_hard], keep[:, :2])  # KEEP keeps it
    assert np.all(keep[:, 0] != keep[:, 1])  # a KEEP prompt always differs from its SWAP twin's answer
    assert set(np.flatnonzero(~t.is_hard)) <= set(t.sft_index)
    assert len(set(t.sft_index) & set(np.flatnonzero(t.is_hard))) == round(0.4 * n_keep)
    # The same key gives the same population for another warm-start share.
    other = task_families.make_rare_rule_task(
        task_families.RareRuleConfig(modulus=5, rule_fraction=0.2, sft_rule_fraction=1.0), key=jax.random.key(3)
    )
    np.testing.assert_array_equal(other.prompts, t.prompts)
    assert set(t.sft_index) <= set(other.sft_index)


def test_rare_rule_verifier_and_exact_success_by_enumeration(tiny):
    """For every prompt exactly one of the `V^2` answers is correct, it is the task's answer, and
    `sum_y pi(y|x) r(x, y)` over all answers equals `exact.success`."""
    t, cfg, params = tiny
    v = t.vocab_size
    every = np.stack(np.meshgrid(np.arange(v), np.arange(v), indexing="ij"), axis=-1).reshape(-1, 2)  # (V^2, 2)
    prompts = jnp.asarray(t.prompts)
    every = jnp.asarray(np.broadcast_to(every, (t.n_prompts,) + every.shape).astype(np.int32))  # (P, V^2, 2)
    verify = jax.vmap(jax.vmap(t.verify, in_axes=(None, 0)))
    rewards = np.asarray(verify(prompts, every))  # (P, V^2)
    np.testing.assert_array_equal(rewards.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.asarray(every)[np.arange(t.n_prompts), rewards.argmax(axis=1)], t.answers)
    probs = np.exp(np.asarray(train.answer_log_probs(params, prompts, every, cfg), np.float64))  # (P, V^2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    p = np.asarray(exact.success(params, prompts, jnp.asarray(t.answers), cfg), np.float64)
    np.testing.assert_allclose((probs * rewards).sum(axis=1), p, rtol=1e-5, atol=1e-7)
    assert 0.05 < p.mean() < 0.95  # a warm start between the extremes, so the check is not vacuous


def test_rare_rule_success_matches_sampled_answers(tiny):
    """The share of correct sampled answers (scored by the verifier through `finetune`'s calling
    convention) is within 4 standard errors of `exact.success` on every prompt."""
    t, cfg, params = tiny
    n = 2000
    prompts = jnp.asarray(t.prompts)
    samples = train.sample_answers(params, prompts, jax.random.key(5), cfg, 2, n)
    verify = jax.vmap(jax.vmap(lambda x, y: t.verifier(x, y, *t.verifier_args), in_axes=(None, 0)))
    share = np.asarray(verify(prompts, samples)).mean(axis=1)
    p = np.asarray(exact.success(params, prompts, jnp.asarray(t.answers), cfg), np.float64)
    se = np.sqrt(np.maximum(p * (1 - p), 1e-4) / n)
    assert np.all(np.abs(share - p) < 4 * se), np.max(np.abs(share - p) / se)


def test_family_tasks_share_the_model_shapes():
    kwargs = dict(modulus=6, hard_fraction=0.2, sft_hard_fraction=0.5, key=jax.random.key(0))
    a = task_families.make_family_task("exceptions", **kwargs)
    b = task_families.make_family_task("rare-rule", **kwargs)
    assert a.vocab_size == b.vocab_size and a.seq_len == b.seq_len
    for t in (a, b):
        check = jax.vmap(t.verify)
        np.testing.assert_array_equal(np.asarray(check(jnp.asarray(t.prompts), jnp.asarray(t.answers))), 1.0)


# ------------------------------------------------------------------------------------------------
# The runs


def test_count_route_equals_sampled_answers(tiny):
    """Given the rewards of sampled answers, the trainer's unique-answer update
    `sum_i mu_i (sum_j s_ij r_ij) grad log p_i` (`pg_step.unique_state`'s pullback, the table's
    "pkpo-loo-1" coefficients) equals PKPO's update over the answers themselves,
    `sum_ij mu_i s_ij grad log pi(y_ij | x_i)`."""
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    mu = jnp.full((t.n_prompts,), 1.0 / t.n_prompts, jnp.float32)
    n, k = 6, 3
    samples = train.sample_answers(params, prompts, jax.random.key(7), cfg, 2, n)  # (P, n, 2)
    rewards = jax.vmap(jax.vmap(t.verify, in_axes=(None, 0)))(prompts, samples)  # (P, n)
    assert 0 < float(rewards.mean()) < 1
    weights = theory.gradient_estimator(ksweep.ESTIMATOR).coefficients(rewards, k)
    surrogate = lambda th: jnp.sum(mu[:, None] * weights * train.answer_log_probs(th, prompts, samples, cfg))
    reference = jax.grad(surrogate)(params)
    _, pullback, _, _ = pg_step.unique_state(params, prompts, answers, cfg, mu)
    ours = pullback(mu * jnp.sum(weights * rewards, axis=-1))
    for a, b in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(ours)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)


def test_unique_answer_runs_refuse_what_they_cannot_draw(tiny):
    t, cfg, params = tiny
    keys = jax.random.split(jax.random.key(0), 2)
    for fields, match in (
        (dict(estimator="rloo", k=1), "wrong answers"),
        (dict(estimator="pkpo-loo-1", k=2, rule="project-step"), "rule 'project-step'"),
        (dict(estimator="pkpo-loo-1", k=2, checkpoint_every=1), "checkpoint_every"),
    ):
        pg = train.PGConfig(**{"steps": 2, "checkpoint_every": 2, **fields})
        with pytest.raises(ValueError, match=match):
            pg_step.policy_gradient_runs(params, t.prompts, t.answers, cfg, pg, ks=[1, 1], keys=keys)


def test_exact_runs_step_along_grad_j_k(tiny):
    """An exact run's first update has `<g_1, u> = eta I_k` with `I_k = sum_i mu_i w_k(p_i) a_i`
    (JVP agreements), and starts from the warm start's `p`."""
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    a, p, _ = exact.agreement_jvp(params, prompts, answers, cfg)
    ks = np.array([1, 2, 5])
    keys = jax.random.split(jax.random.key(0), 3)
    out = ksweep.sweep_runs(
        params, t.prompts, t.answers, cfg, ks, keys, np.ones(3, bool), learning_rate=0.5, n_samples=6, steps=2
    )
    assert out["p"].shape == (3, 3, t.n_prompts) and out["update_inner"].shape == (3, 2)
    np.testing.assert_allclose(out["p"][:, 0], np.broadcast_to(np.asarray(p), (3, t.n_prompts)), rtol=1e-5)
    np.testing.assert_allclose(out["agreement"][0, 0], np.asarray(a), rtol=1e-3, atol=1e-7)
    i_k = np.asarray(theory.conflict_inner_product(np.asarray(p, np.float64), np.asarray(a, np.float64), ks))
    np.testing.assert_allclose(out["update_inner"][:, 0], 0.5 * i_k, rtol=1e-3)


def test_sampled_runs_are_unbiased_for_the_exact_step(tiny):
    """Over many seeds the sampled first step's `<g_1, u>` averages to the exact step's, `eta I_k`
    (PKPO with the `k-1` baseline is unbiased for `grad J_k`): within 4 standard errors."""
    t, cfg, params = tiny
    runs = 64
    ks = np.full(runs, 3)
    exact_run = np.arange(runs) == 0
    out = ksweep.sweep_runs(
        params,
        t.prompts,
        t.answers,
        cfg,
        ks,
        jax.random.split(jax.random.key(9), runs),
        exact_run,
        learning_rate=0.5,
        n_samples=4,
        steps=1,
    )
    sampled = out["update_inner"][1:, 0]
    se = sampled.std(ddof=1) / np.sqrt(sampled.size)
    assert abs(sampled.mean() - out["update_inner"][0, 0]) < 4 * se, (sampled.mean(), out["update_inner"][0, 0], se)
    assert se < 0.5 * abs(out["update_inner"][0, 0])  # the check has power


def test_runs_repeat_with_their_keys_and_differ_across_keys(tiny):
    t, cfg, params = tiny
    ks = np.array([2, 2, 2])  # the shapes of the test above: its compiled program serves
    run = lambda keys: ksweep.sweep_runs(
        params, t.prompts, t.answers, cfg, ks, keys, np.zeros(3, bool), learning_rate=0.5, n_samples=6, steps=2
    )
    keys = jnp.stack([jax.random.key(1), jax.random.key(2), jax.random.key(1)])
    first, again = run(keys), run(keys)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["p"][0], first["p"][1])  # two seeds are two draws
    np.testing.assert_array_equal(first["p"][0], first["p"][2])  # a run depends on its own key only


@pytest.mark.slow
def test_padding_changes_nothing(tiny):
    """Weight-0 copies appended to the population leave `k*`, `I_k` and the runs unchanged."""
    t, cfg, params = tiny
    prompts, answers, mu = ksweep._pad(t, t.n_prompts + 5)
    assert prompts.shape[0] == t.n_prompts + 5 and mu[t.n_prompts :].sum() == 0
    a, p, _ = exact.agreement_jvp(params, jnp.asarray(prompts), jnp.asarray(answers), cfg, jnp.asarray(mu, jnp.float32))
    a0, p0, _ = exact.agreement_jvp(params, jnp.asarray(t.prompts), jnp.asarray(t.answers), cfg)
    np.testing.assert_allclose(np.asarray(a)[: t.n_prompts], np.asarray(a0), rtol=1e-4, atol=1e-8)
    ks = (1, 2, 4, 8)
    padded = exact.conflict_summary(np.asarray(p, np.float64), np.asarray(a, np.float64), ks, mu)
    plain = exact.conflict_summary(np.asarray(p0, np.float64), np.asarray(a0, np.float64), ks)
    assert padded["k_star"] == plain["k_star"]
    np.testing.assert_allclose(padded["inner"], plain["inner"], rtol=1e-4)
    keys = jax.random.split(jax.random.key(0), 3)
    ks = np.array([1, 4, 4])
    runs = np.array([True, True, False])
    one = ksweep.sweep_runs(
        params, prompts, answers, cfg, ks, keys, runs, learning_rate=0.5, n_samples=6, steps=2, mu=mu
    )
    two = ksweep.sweep_runs(params, t.prompts, t.answers, cfg, ks, keys, runs, learning_rate=0.5, n_samples=6, steps=2)
    np.testing.assert_allclose(one["p"][:, :, : t.n_prompts], two["p"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(one["update_inner"], two["update_inner"], rtol=1e-3)


def test_signs_and_verdicts():
    assert [ksweep.predicted_sign(k, 4) for k in (1, 3, 4, 9)] == [1, 1, -1, -1]
    assert [ksweep.predicted_sign(k, None) for k in (1, 50)] == [1, 1]
    assert ksweep.observed_sign({"lower": -0.1, "upper": 0.2}) == 0
    assert ksweep.observed_sign({"lower": 0.01, "upper": 0.2}) == 1
    assert ksweep.observed_sign({"lower": -0.3, "upper": -0.2}) == -1
    assert ksweep.observed_sign({"lower": 0.0, "upper": 0.2}) == 0  # an interval touching 0 contains it


def test_explanations_read_the_records():
    """One run per class: `I_k` turned (k* moved), the update pointed the other way (sampling),
    both kept the predicted sign (step too large)."""
    base = {"k_star": [5, 3, 3, 3]}
    moved = {
        **base,
        "j1": np.array([0.5, 0.51, 0.49, 0.40]),
        "mean_agreement": np.array([0.1, -0.2, -0.2, -0.2]),
        "update_inner": np.array([0.01, -0.02, -0.03]),
    }
    sampled = {
        **base,
        "j1": np.array([0.5, 0.40, 0.41, 0.42]),
        "mean_agreement": np.array([0.1, 0.1, 0.1, 0.1]),
        "update_inner": np.array([-0.05, 0.01, 0.01]),
    }
    large = {
        **base,
        "j1": np.array([0.5, 0.40, 0.41, 0.42]),
        "mean_agreement": np.array([0.1, 0.1, 0.1, 0.1]),
        "update_inner": np.array([0.05, 0.01, 0.01]),
    }
    assert "k* moved" in ksweep_rows.explain(1, -1, 4, -0.1, [moved])
    assert "at step 2" in ksweep_rows.explain(1, -1, 4, -0.1, [moved])
    assert "sampled update" in ksweep_rows.explain(1, -1, 4, -0.1, [sampled])
    assert "too large" in ksweep_rows.explain(1, -1, 4, -0.1, [large])
    mixed = ksweep_rows.explain(1, -1, 4, -0.1, [moved, large, large], exact_agrees=True)
    assert "[33% of runs]" in mixed and "[67% of runs]" in mixed and "exact-gradient run" in mixed


def test_bad_input_raises_named_errors(tiny):
    with pytest.raises(TypeError, match="config must be a KSweepConfig"):
        ksweep.ksweep_study(config="quick", key=jax.random.key(0))
    with pytest.raises(ValueError, match="families.*'reverse'"):
        ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0), families=("exceptions", "reverse"))
    with pytest.raises(TypeError, match="families"):
        ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0), families="exceptions")
    with pytest.raises(ValueError, match="families"):
        ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0), families=("rare-rule", "rare-rule"))
    with pytest.raises(TypeError, match="key"):
        ksweep.ksweep_study(config=QUICK.ksweep, key=0)
    with pytest.raises(TypeError, match="progress"):
        ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0), progress="print")
    with pytest.raises(ValueError, match="family.*'twist'"):
        task_families.make_family_task(
            "twist", modulus=5, hard_fraction=0.2, sft_hard_fraction=0.5, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="rule_fraction"):
        task_families.RareRuleConfig(rule_fraction=0.0)
    with pytest.raises(ValueError, match="rule_fraction"):
        task_families.RareRuleConfig(modulus=3, rule_fraction=1.0)  # more KEEP prompts than pairs a != b
    with pytest.raises(ValueError, match="modulus"):
        task_families.RareRuleConfig(modulus=2)
    with pytest.raises(ValueError, match="k must"):
        ksweep.predicted_sign(0, 3)
    with pytest.raises(ValueError, match="k_star"):
        ksweep.predicted_sign(2, 0)
    t, cfg, params = tiny
    with pytest.raises(ValueError, match="ks"):
        ksweep.sweep_runs(
            params,
            t.prompts,
            t.answers,
            cfg,
            np.array([7]),
            jax.random.split(jax.random.key(0), 1),
            np.zeros(1, bool),
            learning_rate=0.5,
            n_samples=6,
            steps=1,
        )
    with pytest.raises(ValueError, match="learning_rate"):
        ksweep.sweep_runs(
            params,
            t.prompts,
            t.answers,
            cfg,
            np.array([2]),
            jax.random.split(jax.random.key(0), 1),
            np.zeros(1, bool),
            learning_rate=0.0,
            n_samples=6,
            steps=1,
        )


# ------------------------------------------------------------------------------------------------
# The quick preset


@pytest.mark.slow
def test_quick_table_keys_types_and_sign_rules(quick):
    rows = quick["k_sweep"]
    cfg = QUICK.ksweep
    assert json.loads(json.dumps(quick, allow_nan=False)) == quick  # JSON numbers only, no NaN
    assert {r["task"] for r in rows} == set(task_families.FAMILIES)
    assert len(quick["warm_starts"]) == sum(len(s.warm_start_steps) for s in cfg.families)
    for family in task_families.FAMILIES:
        stars = [w["k_star"] for w in quick["warm_starts"] if w["task"] == family]
        assert len(stars) >= 3
    n_ks = len(quick["ks"])
    assert quick["ks"] == list(range(1, n_ks + 1)) and len(rows) == n_ks * len(quick["warm_starts"])
    assert (
        quick["n_samples"]
        >= 2
        * max([w["k_star"] for w in quick["warm_starts"] if w["k_covers_2k_star"] and w["k_star"] is not None] + [0])
        + 1
    )
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert isinstance(row["task"], str) and isinstance(row["warm_start"], str)
        assert row["k_star"] is None or (isinstance(row["k_star"], int) and row["k_star"] >= 1)
        assert isinstance(row["k"], int) and row["k"] >= 1
        assert row["seeds"] == list(range(cfg.seeds))
        assert set(row["pass1_change"]) == INTERVAL_KEYS and row["pass1_change"]["n"] == cfg.seeds
        lo, mid, hi = (row["pass1_change"][x] for x in ("lower", "value", "upper"))
        assert lo <= mid <= hi
        assert row["predicted_sign"] == (-1 if row["k_star"] is not None and row["k"] >= row["k_star"] else 1)
        assert row["observed_sign"] == (0 if lo <= 0 <= hi else int(np.sign(mid)))
        assert row["verdict"] == (
            "inconclusive"
            if row["observed_sign"] == 0
            else "agree"
            if row["observed_sign"] == row["predicted_sign"]
            else "disagree"
        )
        assert (row["explanation"] is None) == (row["verdict"] == "agree")
        np.testing.assert_allclose(np.mean(row["pass1_change_per_seed"]), mid, rtol=1e-12, atol=1e-15)
        assert len(row["k_star_after"]) == cfg.seeds and len(row["pass1_mean"]) == cfg.steps + 1
    counts = quick["summary"]["counts"]
    assert counts["agree"] + counts["disagree"] + counts["inconclusive"] == counts["rows"] == len(rows)
    assert len(quick["summary"]["disagreements"]) == counts["disagree"]
    assert quick["runtime_s"] > 0


@pytest.mark.slow
def test_quick_warm_starts_match_their_rows(quick):
    """Each warm start's k* is that of `conflict_summary` on its p and agreements, and the rows
    carry it; the first row's exact change is positive (k = 1 is pass@1 ascent: I_1 > 0)."""
    for warm in quick["warm_starts"]:
        rows = [r for r in quick["k_sweep"] if r["task"] == warm["task"] and r["warm_start"] == warm["warm_start"]]
        assert {r["k_star"] for r in rows} == {warm["k_star"]}
        a_k = np.asarray(warm["mean_agreement"])
        assert a_k[0] > 0
        if warm["k_star"] is not None and warm["k_star"] <= len(a_k):
            assert np.all(a_k[: warm["k_star"] - 1] > 0) and a_k[warm["k_star"] - 1] < 0
        hist = warm["p_histogram"]
        assert len(hist["edges"]) == len(hist["hard"]) + 1 == len(hist["easy"]) + 1
        family = quick["families"][warm["task"]]
        assert sum(hist["hard"]) == family["n_hard"] and sum(hist["hard"]) + sum(hist["easy"]) == family["n_prompts"]


@pytest.mark.slow
def test_quick_same_key_same_numbers(quick):
    again = ksweep.ksweep_study(config=QUICK.ksweep, key=jax.random.key(0))
    strip = lambda r: {k: v for k, v in r.items() if k != "runtime_s"}
    assert strip(again) == strip(quick)


@pytest.mark.slow
def test_quick_figure(quick, tmp_path):
    from passk.plots import ksweep as plots

    paths = plots.draw(quick, tmp_path)
    assert sorted(p.name for p in paths) == ["transformer_k_sweep.pdf", "transformer_k_sweep.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="k_sweep"):
        plots.draw({"warm_starts": [], "settings": {}}, tmp_path)
