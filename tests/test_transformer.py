"""Checks of the transformer confirmation (`sim.transformer`) at small sizes.

The identities (JVP agreements = per-prompt agreements, the small-step sign of pass@1) are checked
in float64 on a tiny model; exact success against sampled answers by a Monte Carlo bound; the
checkpoints by interrupting and resuming runs and comparing every number with an uninterrupted run.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_transformer import TINY_TASK, make_tiny, tiny_model_config

import theory
from sim.studies import transformer_experiment as experiment
from sim.transformer import exact, model, task, train


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def _f64(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


# ------------------------------------------------------------------------------------------------
# Task and model


def test_task_has_unique_answers_and_verifier():
    t = task.make_task(TINY_TASK, key=jax.random.key(3))
    m = t.modulus
    assert t.n_prompts == 2 * m * m and t.is_hard.sum() == round(0.25 * m * m)
    tables = (jnp.asarray(t.hard_table), jnp.asarray(t.exception_table))
    verify = jax.jit(jax.vmap(lambda x, y: task.verify(x, y, *tables)))
    x, y, hard = t.prompts, t.answers, t.is_hard
    np.testing.assert_array_equal(np.asarray(verify(x, y)), 1.0)
    wrong = y.copy()
    wrong[:, 0] = (wrong[:, 0] + 1) % m
    np.testing.assert_array_equal(np.asarray(verify(x, wrong)), 0.0)
    np.testing.assert_array_equal(y[~hard], x[~hard][:, [1, 0]])  # the rule reverses the pair
    assert np.all(y[hard][:, 0] != x[hard][:, 1]) and np.all(y[hard][:, 1] != x[hard][:, 0])
    # Every hard prompt has a PLUS twin with the same digits and the rule's answer.
    for i in np.flatnonzero(t.is_hard):
        j = t.twin[i]
        assert (t.prompts[j, :2] == t.prompts[i, :2]).all() and t.prompts[j, 2] == t.plus
    assert set(np.flatnonzero(~t.is_hard)) <= set(t.sft_index)


@pytest.mark.slow
def test_model_shapes_size_and_causality():
    t = task.make_task(task.TaskConfig(), key=jax.random.key(0))
    cfg = model.ModelConfig(vocab_size=t.vocab_size, max_len=t.seq_len)
    params = model.init(jax.random.key(0), cfg)
    # embeddings, final norm and unembedding, then per layer two norms, attention and the MLP
    v, d, f, n_pos = cfg.vocab_size, cfg.d_model, cfg.d_mlp, cfg.max_len
    per_layer = 2 * 2 * d + 3 * d * d + d * d + d * f + f + f * d + d
    assert model.param_count(params) == v * d + n_pos * d + 2 * d + d * v + cfg.n_layers * per_layer
    assert model.param_count(params) == 68_736  # the size the README states
    tokens = jnp.asarray(np.concatenate([t.prompts[0], t.answers[0]]))
    apply = jax.jit(model.apply, static_argnums=2)
    logits = apply(params, tokens, cfg)
    assert logits.shape == (t.seq_len, t.vocab_size)
    changed = apply(params, tokens.at[-1].set((tokens[-1] + 1) % t.modulus), cfg)
    np.testing.assert_array_equal(np.asarray(logits[:-1]), np.asarray(changed[:-1]))  # causal


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="d_model"):
        model.ModelConfig(vocab_size=5, max_len=6, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="modulus"):
        task.TaskConfig(modulus=2)
    with pytest.raises(ValueError, match="hard_fraction"):
        task.TaskConfig(hard_fraction=0.0)
    with pytest.raises(ValueError, match="estimator"):
        train.PGConfig(estimator="ppo", k=2)
    with pytest.raises(ValueError, match="k must be 1"):
        train.PGConfig(estimator="rloo", k=2)
    with pytest.raises(ValueError, match="n_samples"):
        train.PGConfig(estimator="pkpo", k=9, n_samples=8)
    with pytest.raises(ValueError, match="k must be a positive"):
        train.PGConfig(estimator="exact", k=0)
    with pytest.raises(ValueError, match="multiple of checkpoint_every"):
        t = task.make_task(TINY_TASK, key=jax.random.key(0))
        cfg = tiny_model_config(t)
        train.finetune(
            model.init(jax.random.key(0), cfg),
            t.prompts,
            t.answers,
            cfg,
            train.PGConfig(estimator="exact", k=2, steps=5, checkpoint_every=2),
            key=jax.random.key(0),
            verifier=task.verify,
        )
    with pytest.raises(TypeError, match="config must be an ExperimentConfig"):
        experiment.run_experiment(config=True, key=jax.random.key(0))


# ------------------------------------------------------------------------------------------------
# The identities


@pytest.fixture(scope="module")
def pergrad_reference(tiny):
    """Per-prompt-gradient agreements (all parameters, last layer) and success, float64: computed
    once for every chunking of the JVP test."""
    t, cfg, params = tiny
    with jax.enable_x64(True):
        params64 = _f64(params)
        prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
        mu = np.random.default_rng(0).dirichlet(np.ones(t.n_prompts))
        pergrad = jax.jit(exact.agreement_pergrad, static_argnums=3, static_argnames="subset")
        a_ref = {
            subset: np.asarray(pergrad(params64, prompts, answers, cfg, mu, subset=subset))
            for subset in (None, model.LAST_LAYER)
        }
        p_ref = np.asarray(exact.success(params64, prompts, answers, cfg))
    return mu, a_ref, p_ref


@pytest.mark.parametrize("chunk_size", [1, 5, 7, None, "default"])
def test_jvp_agreements_equal_per_prompt_gradient_agreements(tiny, pergrad_reference, chunk_size):
    """All parameters and the last-layer proxy; chunks that divide P, that do not (padded last
    chunk), one pass, and the default."""
    t, cfg, params = tiny
    mu, a_ref, p_ref = pergrad_reference
    with jax.enable_x64(True):
        params64 = _f64(params)
        prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
        jvp = jax.jit(exact.agreement_jvp, static_argnums=3, static_argnames=("subset", "chunk_size"))
        chunking = {} if chunk_size == "default" else {"chunk_size": chunk_size}
        for subset in (None, model.LAST_LAYER):
            a, p, g1_sq = jvp(params64, prompts, answers, cfg, mu, subset=subset, **chunking)
            assert a.dtype == jnp.float64 and a.shape == p.shape == (t.n_prompts,)
            np.testing.assert_allclose(np.asarray(a), a_ref[subset], rtol=1e-9, atol=1e-14 * float(g1_sq))
            np.testing.assert_allclose(np.asarray(p), p_ref, rtol=1e-12)
            # sum_i mu_i a_i = ||grad J_1||^2 (SPEC section 3)
            np.testing.assert_allclose(float(np.dot(mu, a)), float(g1_sq), rtol=1e-10)


@pytest.mark.slow
def test_gradient_cosines_from_passes_equal_per_prompt_gradients(tiny):
    """cos_k from reverse passes equals theory.gradient_cosine on per-prompt gradients."""
    t, cfg, params = tiny
    with jax.enable_x64(True):
        params64 = _f64(params)
        prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
        mu = np.random.default_rng(0).dirichlet(np.ones(t.n_prompts))
        p = exact.success(params64, prompts, answers, cfg)
        ks = (1, 2, 5, 50)
        per = jax.jit(
            jax.vmap(jax.grad(lambda th, x, y: jnp.exp(exact.log_success(th, x, y, cfg))), in_axes=(None, 0, 0))
        )(params64, prompts, answers)
        flat = jnp.concatenate([g.reshape(t.n_prompts, -1) for g in jax.tree_util.tree_leaves(per)], axis=1)
        np.testing.assert_allclose(
            np.asarray(jax.jit(exact.gradient_cosines, static_argnums=(3, 4))(params64, prompts, answers, cfg, ks, mu)),
            np.asarray(theory.gradient_cosine(flat, p, jnp.asarray(ks), mu)),
            rtol=1e-9,
            atol=1e-12,
        )


def test_agreement_chunk_size_must_be_a_positive_int(tiny):
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    with pytest.raises(ValueError, match="chunk_size.*0"):
        exact.agreement_jvp(params, prompts, answers, cfg, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size.*2.5"):
        exact.agreement_jvp(params, prompts, answers, cfg, chunk_size=2.5)


@pytest.mark.slow
def test_exact_success_equals_monte_carlo_success_rate(tiny):
    t, cfg, params = tiny
    n = 4000
    prompts = jnp.asarray(t.prompts)
    p = np.asarray(exact.success(params, prompts, jnp.asarray(t.answers), cfg))
    samples = jax.jit(train.sample_answers, static_argnums=(3, 4, 5))(
        params, prompts, jax.random.key(7), cfg, 2, n
    )  # (P, n, 2)
    tables = (jnp.asarray(t.hard_table), jnp.asarray(t.exception_table))
    rewards = jax.vmap(lambda x, ys: jax.vmap(lambda y: task.verify(x, y, *tables))(ys))(prompts, samples)
    rate = np.asarray(rewards.mean(axis=1))
    assert 0.05 < p.max() and p.min() < 0.5  # a spread of p, so the comparison means something
    sigma = np.sqrt(p * (1 - p) / n) + 1.0 / n
    assert np.all(np.abs(rate - p) <= 5 * sigma), np.max(np.abs(rate - p) / sigma)
    # The whole answer distribution, not only the correct answer: first tokens match their marginal.
    logits = jax.vmap(lambda x: model.apply(params, x, cfg)[-1])(prompts)
    first = np.asarray(jax.nn.softmax(logits, axis=-1))[:, : t.modulus]
    counts = np.stack([(np.asarray(samples[:, :, 0]) == d).mean(axis=1) for d in range(t.modulus)], axis=1)
    assert np.max(np.abs(counts - first) / (np.sqrt(first * (1 - first) / n) + 1.0 / n)) < 5


@pytest.mark.slow
def test_small_plain_step_changes_pass1_with_the_sign_of_I_k(tiny):
    """SPEC section 5: a small plain step along grad J_k moves J_1 by eta I_k to first order."""
    t, cfg, params = tiny
    with jax.enable_x64(True):
        params64 = _f64(params)
        prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
        a, p, _ = jax.jit(exact.agreement_jvp, static_argnums=3)(params64, prompts, answers, cfg)
        ks = np.array([1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128])
        summary = exact.conflict_summary(np.asarray(p), np.asarray(a), ks)
        signs = np.sign(summary["mean_agreement"])
        assert (signs < 0).any() and (signs > 0).any(), summary  # the instance has a conflict regime
        pass1 = jax.jit(exact.pass_at_1, static_argnums=3)
        grad_k = jax.jit(jax.grad(exact.pass_at_k_objective), static_argnums=3)
        j1 = pass1(params64, prompts, answers, cfg)
        for k, i_k, a_k in zip(ks, summary["inner"], summary["mean_agreement"]):
            g = grad_k(params64, prompts, answers, cfg, jnp.asarray(k))
            eta = 1e-4 / np.sqrt(float(exact.tree_dot(g, g)))
            moved = jax.tree_util.tree_map(lambda x, d: x + eta * d, params64, g)
            dj1 = float(pass1(moved, prompts, answers, cfg) - j1)
            assert np.sign(dj1) == np.sign(a_k), (k, dj1, a_k)
            # and the first-order size: dJ_1 = eta I_k + O(eta^2)
            np.testing.assert_allclose(dj1, eta * i_k, rtol=2e-2)


# ------------------------------------------------------------------------------------------------
# Training, estimators, checkpoints


def _projection_z_scores(updates, expected, key, n_random=4):
    """z-scores of the mean sampled update against its expectation, along directions.

    `updates`: pytree of `(R, ...)` leaves (R independent updates); `expected`: the same pytree
    without the leading axis. Directions: `expected` itself, each leaf's part of it (a coordinate
    group), and `n_random` Gaussian directions; for each, `(mean <u, d> - <E u, d>) / stderr`.
    A wrong scale of the update moves the first ones, a wrong direction the others.
    """
    u = np.concatenate(
        [np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree_util.tree_leaves(updates)], 1
    )
    sizes = [x.size for x in jax.tree_util.tree_leaves(expected)]
    e = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(expected)])
    directions = {"expected": e}
    for i, (start, size) in enumerate(zip(np.cumsum([0] + sizes[:-1]), sizes)):
        part = np.zeros_like(e)
        part[start : start + size] = e[start : start + size]
        if np.linalg.norm(part) > 1e-3 * np.linalg.norm(e):  # leaves the update barely moves add nothing
            directions[f"leaf {i}"] = part
    for i, d in enumerate(np.random.default_rng(key).normal(size=(n_random, e.size))):
        directions[f"random {i}"] = d
    z = {}
    for name, d in directions.items():
        proj = u @ d
        z[name] = (proj.mean() - e @ d) / (proj.std(ddof=1) / np.sqrt(len(proj)))
    return z


@pytest.mark.slow
def test_sampled_estimators_are_unbiased_for_exact_gradients(tiny):
    """The PKPO k-1-baseline and RLOO updates average to grad J_k and grad J_1.

    The mean of 256 sampled updates against the exact gradient (autodiff of `1 - (1 - p)^k`
    written here, `p = pi(y*|x)`), by z-scores of projections (`_projection_z_scores`). The
    standard error of the projection on the gradient is about 1% of its size, so a wrong
    coefficient (a missing `1/n`, a baseline that includes the sample: the mean scaled by 8 or
    7/8) gives |z| above 10.
    """
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    mu = jnp.full((t.n_prompts,), 1.0 / t.n_prompts)
    tables = (jnp.asarray(t.hard_table), jnp.asarray(t.exception_table))
    verify = lambda x, y: task.verify(x, y, *tables)
    for estimator, k in (("pkpo", 3), ("rloo", 1)):
        pg = train.PGConfig(estimator=estimator, k=k, n_samples=8)

        def objective(th, k=k):
            p = jnp.exp(jax.vmap(lambda x, y: exact.log_success(th, x, y, cfg))(prompts, answers))
            return jnp.sum(mu * (1 - (1 - p) ** k))

        exact_g = jax.grad(objective)(params)
        grad_fn = jax.jit(
            jax.vmap(
                jax.grad(lambda th, key: train.pg_surrogate(th, prompts, answers, cfg, pg, key, verify, mu)[0]),
                in_axes=(None, 0),
            )
        )
        keys = jax.random.split(jax.random.key(11), 256)
        z = _projection_z_scores(grad_fn(params, keys), exact_g, key=k)
        assert len(z) >= 8, z  # the gradient, several parameter groups, random directions
        assert max(abs(v) for v in z.values()) < 5, (estimator, z)


def _interrupt_after(n_checkpoints):
    seen = []

    def progress(line):
        seen.append(line)
        if "checkpoint written" in line and sum("checkpoint written" in s for s in seen) >= n_checkpoints:
            raise train.Interrupted(line)

    return progress, seen


@pytest.mark.slow
def test_finetune_killed_and_resumed_ends_with_the_same_numbers(tiny, tmp_path):
    t, cfg, params = tiny
    pg = train.PGConfig(
        estimator="pkpo",
        k=2,
        n_samples=4,
        optimizer="adam",
        learning_rate=1e-2,
        steps=6,
        checkpoint_every=2,
        track_ks=(1, 2),
    )
    args = (params, t.prompts, t.answers, cfg, pg)
    kwargs = dict(key=jax.random.key(5), verifier=task.verify, verifier_args=(t.hard_table, t.exception_table))
    ref_params, ref_traj = train.finetune(*args, **kwargs)
    path = tmp_path / "run.pkl"
    progress, seen = _interrupt_after(1)
    with pytest.raises(train.Interrupted):
        train.finetune(*args, **kwargs, checkpoint_path=path, progress=progress)
    assert path.exists()
    lines = []
    new_params, new_traj = train.finetune(*args, **kwargs, checkpoint_path=path, progress=lines.append)
    assert any("resumed at step 2/6" in line for line in lines)
    for a, b in zip(jax.tree_util.tree_leaves(ref_params), jax.tree_util.tree_leaves(new_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in ref_traj:
        np.testing.assert_array_equal(ref_traj[name], new_traj[name])
    # A checkpoint of another run is refused, not silently used.
    other = train.PGConfig(estimator="pkpo", k=3, n_samples=4, steps=6, checkpoint_every=2)
    with pytest.raises(ValueError, match="different run"):
        train.finetune(params, t.prompts, t.answers, cfg, other, **kwargs, checkpoint_path=path)


def _tiny_experiment_config():
    return experiment.ExperimentConfig(
        task=TINY_TASK,
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_mlp=32,
        sft=train.SFTConfig(steps=30, batch_size=16, learning_rate=1e-2, checkpoint_every=10),
        ks=(1, 2, 4, 8, 16),
        runs=(
            experiment.RunSpec("exact", "high", "sgd"),
            experiment.RunSpec("pkpo", "low", "adam", (0, 1)),
        ),
        min_samples=4,
        sgd_learning_rate=1.0,
        sgd_steps=4,
        adam_learning_rate=1e-2,
        adam_steps=4,
        checkpoint_every=2,
        sign_step=1e-3,
        first_steps=2,
    )


@pytest.mark.slow  # run_experiment end to end three times (about 35 s on 2 cores)
def test_run_experiment_interface_resume_and_figures(tmp_path):
    """run_experiment at a tiny size: JSON-ready keys; a run interrupted mid-way and restarted
    ends with exactly the numbers of an uninterrupted run; the figures are written."""
    config = _tiny_experiment_config()
    ref = experiment.run_experiment(config=config, key=jax.random.key(0))
    json.dumps(ref, allow_nan=False)
    for name in (
        "k_star_predicted",
        "agreement_jvp_vs_pergrad_max_abs_err",
        "last_layer_sign_agreement",
        "inner",
        "cos",
        "sign_test",
        "scope",
    ):
        assert name in ref
    assert ref["agreement_jvp_vs_pergrad_max_abs_err"] < 1e-4
    warm = ref["warm_start"]
    right = ref["last_layer_sign_agreement"]  # the share its fields give, with its Wilson interval
    assert right["value"] == np.mean(np.sign(warm["agreement_last_layer"]) == np.sign(warm["agreement"]))
    assert right["n"] == len(warm["agreement"]) and right["lower"] <= right["value"] <= right["upper"]
    proxy = ref["last_layer_proxy"]
    wrong = sum(round(b["wrong"]["value"] * b["wrong"]["n"]) for b in proxy["errors"]["wrong_by_p"] if b["wrong"])
    assert wrong == right["n"] - round(right["value"] * right["n"])  # the p bins partition the prompts
    assert proxy["monte_carlo"]["sign_right_vs_exact"]["n"] == right["n"]
    assert len(ref["runs"]) == 3
    for run in ref["runs"]:
        for name in ("pass1_before", "pass1_after", "passk_before", "passk_after"):
            assert isinstance(run[name], float)
        assert len(run["pass1"]) == run["steps"] + 1

    progress, _ = _interrupt_after(4)  # the warm start's 3 checkpoints, then half-way through run 1
    with pytest.raises(train.Interrupted):
        experiment.run_experiment(config=config, key=jax.random.key(0), checkpoint_dir=tmp_path, progress=progress)
    lines = []
    resumed = experiment.run_experiment(
        config=config, key=jax.random.key(0), checkpoint_dir=tmp_path, progress=lines.append
    )
    assert any("warm start: resumed at step 30/30" in line for line in lines)
    assert any("resumed at step 2/4" in line for line in lines)
    ref.pop("runtime_s"), resumed.pop("runtime_s")
    assert resumed == ref

    from passk.plots import transformer as plots

    paths = plots.draw(ref, tmp_path / "figs")
    assert {p.suffix for p in paths} == {".png", ".pdf"} and len(paths) == 6
    assert all(p.stat().st_size > 1000 for p in paths)
