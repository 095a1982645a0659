"""The miniature LLM run: the verifier, exact success against brute force, the sampler, the trainer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
from sim.lm import policy as P
from sim.lm import run as R
from sim.lm import task as T
from sim.lm import train as TR
from sim.transformer import model as M

SMALL = T.LMTask(n_digits=3, prompt_digits=3, answer_len=3, need=2, hard_share=0.25, n_eval=8)
SMALL_MODEL = P.model_config(SMALL, d_model=8, n_heads=2, n_layers=1, d_mlp=16)


def _params(seed=0, dtype=jnp.float64, scale=1.0):
    params = M.init(jax.random.key(seed), SMALL_MODEL, dtype=dtype)
    return jax.tree_util.tree_map(lambda x: x * scale, params)


def test_population_and_held_out_set():
    task = T.LMTask()
    assert task.n_prompts >= 10**4
    ev = np.asarray(T.eval_prompts(task))
    assert len({tuple(r) for r in ev}) == task.n_eval
    assert (ev[:, 0] == task.hard_token).sum() == task.n_eval_hard
    drawn = np.asarray(T.draw_prompts(task, 20000, key=jax.random.key(3)))
    eval_strings = {tuple(r[1:]) for r in ev}
    assert not any(tuple(r[1:]) in eval_strings for r in drawn)
    assert abs((drawn[:, 0] == task.hard_token).mean() - task.hard_share) < 0.02
    # the index permutation is a bijection: every digit string appears once
    codes = np.asarray(T._digits(task, jnp.arange(task.n_strings)))
    assert len({tuple(r) for r in codes}) == task.n_strings


@pytest.mark.parametrize("task", [SMALL, T.LMTask()])
def test_compiled_verifier_is_the_string_verifier(task):
    answers = np.asarray(P.all_answers(task))
    prompts = np.concatenate(
        [np.asarray(T.eval_prompts(task)), np.asarray(T.draw_prompts(task, 6, key=jax.random.key(1)))]
    )
    rewards = np.asarray(T.verify(task, jnp.asarray(prompts)[:, None, :], jnp.asarray(answers)[None]))
    for i, prompt in enumerate(prompts):
        text = T.decode_prompt(task, prompt)
        expect = [T.verify_string(task, text, T.decode_answer(a)) for a in answers]
        np.testing.assert_array_equal(rewards[i], expect)
        assert rewards[i].sum() == T.n_correct_answers(task) > 1
    hard = prompts[prompts[:, 0] == task.hard_token]
    assert np.all(np.asarray(T.targets(task, jnp.asarray(hard))) != hard[:, -1])  # hard targets never copy x_D
    assert T.verify_string(task, "P:" + "0" * task.prompt_digits, "0" * (task.answer_len + 1)) == 0


def _brute_force_success(params, prompts, task, config):
    """`p_i` by a sum over every full answer string, each scored by teacher forcing."""
    answers = P.all_answers(task)

    def one(prompt):
        logp = P.answer_log_prob(params, prompt[None], answers[None], config, task)[0]
        return jnp.sum(jnp.exp(logp) * T.verify(task, prompt, answers))

    return jax.vmap(one)(prompts)


@jax.jit
def _reference(params, prompts):
    """Brute-force `p` and the flattened per-prompt gradients `grad p_i` (vmap(grad))."""
    p = _brute_force_success(params, prompts, SMALL, SMALL_MODEL)
    grads = jax.vmap(
        jax.grad(lambda th, x: _brute_force_success(th, x[None], SMALL, SMALL_MODEL)[0]), in_axes=(None, 0)
    )(params, prompts)
    return p, jnp.concatenate([x.reshape(prompts.shape[0], -1) for x in jax.tree_util.tree_leaves(grads)], axis=1)


_exact = jax.jit(lambda params, prompts: P.exact_eval(params, prompts, SMALL_MODEL, SMALL, 3, curve=6, k_max=1000))
_strings = jax.jit(lambda params, prompt: P.string_log_probs(params, prompt, SMALL_MODEL, SMALL))


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 1.0, 3.0]))
def test_exact_success_and_agreements_against_brute_force(seed, scale):
    params = _params(seed, scale=scale)
    prompts = T.eval_prompts(SMALL)
    # the string log-probabilities along the prefix tree sum to one and match teacher forcing
    strings = _strings(params, prompts[0])
    np.testing.assert_allclose(jnp.sum(jnp.exp(strings)), 1.0, rtol=1e-12)
    forced = P.answer_log_prob(params, prompts[:1], P.all_answers(SMALL)[None], SMALL_MODEL, SMALL)[0]
    np.testing.assert_allclose(strings, forced, rtol=1e-10, atol=1e-12)
    p_brute, g = _reference(params, prompts)
    ev = _exact(params, prompts)
    np.testing.assert_allclose(ev.p, p_brute, rtol=1e-10, atol=1e-14)
    a_ref = g @ g.mean(axis=0)
    scale_a = float(jnp.max(jnp.abs(a_ref)))
    np.testing.assert_allclose(ev.agreement, a_ref, rtol=1e-8, atol=1e-8 * scale_a)
    gk = theory.normalized_weights(p_brute, 3) @ g
    cos = float(gk @ g.mean(axis=0) / jnp.linalg.norm(gk) / jnp.linalg.norm(g.mean(axis=0)))
    np.testing.assert_allclose(ev.cos, cos, rtol=1e-8, atol=1e-12)
    i_ref = np.array([np.mean(k * (1 - np.asarray(p_brute)) ** (k - 1) * np.asarray(a_ref)) for k in range(1, 7)])
    np.testing.assert_allclose(ev.inner_curve, i_ref, rtol=1e-8, atol=1e-8 * scale_a)
    np.testing.assert_allclose(ev.inner, i_ref[2], rtol=1e-8, atol=1e-8 * scale_a)
    np.testing.assert_allclose(ev.jk, np.mean(1 - (1 - np.asarray(p_brute)) ** 3), rtol=1e-10)
    expect = theory.critical_k(np.asarray(p_brute), np.asarray(a_ref), k_max=1000)
    assert int(ev.k_star) == (1001 if expect is None else expect)


def test_sampler_draws_the_policy():
    params = _params(1)
    prompts = T.eval_prompts(SMALL)[:2]
    answers, logps = P.sample_answers(params, prompts, 6000, SMALL_MODEL, SMALL, key=jax.random.key(0))
    again, _ = P.sample_answers(params, prompts, 6000, SMALL_MODEL, SMALL, key=jax.random.key(0))
    np.testing.assert_array_equal(answers, again)  # the key decides everything
    np.testing.assert_allclose(
        jnp.sum(logps, -1), P.answer_log_prob(params, prompts, answers, SMALL_MODEL, SMALL), rtol=1e-10
    )
    index = np.asarray(answers) @ (SMALL.n_digits ** np.arange(SMALL.answer_len - 1, -1, -1))
    for i in range(2):
        exact = np.exp(np.asarray(P.string_log_probs(params, prompts[i], SMALL_MODEL, SMALL)))
        freq = np.bincount(index[i], minlength=SMALL.n_answers) / index.shape[1]
        se = np.sqrt(exact * (1 - exact) / index.shape[1])
        assert np.all(np.abs(freq - exact) < 5 * se + 1e-3)


def _config(**kw):
    base = {
        "estimator": "grpo",
        "k": 2,
        "model": P.model_config(SMALL, d_model=8, n_heads=2, n_layers=1, d_mlp=16),
        "batch_prompts": 4,
        "n_answers": 4,
        "epochs": 2,
        "n_folds": 2,
    }
    return TR.RunConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"estimator": "ppo"}, "method must be one of"),
        ({"estimator": "pkpo-loo", "k": 4}, "k must be <= n-1"),
        ({"batch_prompts": 5}, "multiple of n_folds"),
        ({"aggregation": "words"}, "aggregation"),
        ({"clip": 0.0}, "clip"),
        ({"kl": -1.0}, "kl"),
        ({"k": 0}, "RunConfig.k"),
    ],
)
def test_config_rejects_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "pkpo-loo-1", "grouped-passk"])
@pytest.mark.parametrize("aggregation", TR.AGGREGATIONS)
def test_surrogate_gradient_at_old_policy_is_the_estimator_update(estimator, aggregation):
    config = _config(estimator=estimator, aggregation=aggregation, k=2)
    params = _params(2)
    prompts = T.draw_prompts(SMALL, 4, key=jax.random.key(5))
    answers, old = P.sample_answers(params, prompts, 4, SMALL_MODEL, SMALL, key=jax.random.key(6))
    rewards = T.verify(SMALL, prompts[:, None, :], answers).astype(jnp.float64)
    coef = theory.gradient_estimator(estimator).coefficients(rewards, 2)
    batch = TR.Batch(prompts, answers, rewards)
    grad, _ = jax.grad(TR._surrogate, has_aux=True)(params, old, params, batch, coef, SMALL, config)
    direct = jax.grad(
        lambda th: jnp.mean(jnp.sum(coef * P.answer_log_prob(th, prompts, answers, SMALL_MODEL, SMALL), axis=1))
    )(params)
    factor = SMALL.answer_len if aggregation == "token" else 1
    for x, y in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direct)):
        np.testing.assert_allclose(-factor * x, y, rtol=1e-8, atol=1e-12)


def _small_run(tmp_path, steps, progress=None, **kw):
    return R.train_run(
        SMALL, _config(**kw), key=jax.random.key(11), steps=steps, out=tmp_path, checkpoint_every=2, progress=progress
    )


@pytest.mark.slow  # about a minute: `pytest -m slow`
def test_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    full = _small_run(tmp_path / "full", 6, kl=0.1, aggregation="sequence")

    class Stop(Exception):
        pass

    def stop_at_3(t, row):
        if t == 3:
            raise Stop

    with pytest.raises(Stop):
        _small_run(tmp_path / "cut", 6, progress=stop_at_3, kl=0.1, aggregation="sequence")
    resumed = _small_run(tmp_path / "cut", 6, kl=0.1, aggregation="sequence")
    assert resumed["records"] == full["records"]
    for x, y in zip(jax.tree_util.tree_leaves(resumed["params"]), jax.tree_util.tree_leaves(full["params"])):
        np.testing.assert_array_equal(x, y)
    for t in range(6):
        assert (tmp_path / "cut" / f"{t}.jsonl").read_text() == (tmp_path / "full" / f"{t}.jsonl").read_text()
    with pytest.raises(ValueError, match="different run"):
        _small_run(tmp_path / "full", 6, kl=0.2, aggregation="sequence")


def test_dumps_read_by_the_verl_reader(tmp_path):
    from passk.frameworks import Options, list_steps, read_step

    result = _small_run(tmp_path, 2)
    steps = list_steps(tmp_path)
    assert [(s, f) for s, _, f in steps] == [(0, "verl"), (1, "verl")]
    data = read_step(steps[0][1], "verl", 0, Options())
    lines = [json.loads(x) for x in (tmp_path / "0.jsonl").read_text().splitlines()]
    assert set(lines[0]) >= {"input", "output", "gts", "score", "step", "uid", "fold", "alignment"}
    assert data.success.shape == (4, 4) and data.alignments.shape == (4, 4, 2)
    assert sorted(data.folds.tolist()) == [0, 0, 1, 1]
    for line in lines:
        assert line["score"] == T.verify_string(SMALL, line["input"], line["output"])
    assert np.asarray(data.success).mean() == pytest.approx(result["records"][0]["reward"])


def test_sketched_scores_are_unbiased_projections_and_read_by_the_verl_reader(tmp_path):
    from passk.frameworks import Options, read_step

    config = _config()
    params = TR.init_params(SMALL, config, key=jax.random.key(0))
    prompts = T.draw_prompts(SMALL, 4, key=jax.random.key(1))
    answers, _ = P.sample_answers(params, prompts, 4, config.model, SMALL, key=jax.random.key(2))
    batch = TR.Batch(prompts, answers, T.verify(SMALL, prompts[:, None, :], answers))
    dim = 4096
    sketched = TR.make_sketch(SMALL, config, params, dim, key=jax.random.key(3))(params, batch)  # (4, 4, dim)
    grads = [
        jax.grad(
            lambda th, i=i, j=j: P.answer_log_prob(
                th, prompts[i : i + 1], answers[i : i + 1, j : j + 1], config.model, SMALL
            )[0, 0]
        )(params)
        for i, j in ((0, 0), (1, 2))
    ]
    flat = [jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g)]) for g in grads]
    exact = float(flat[0] @ flat[1])
    approx = float(sketched[0, 0] @ sketched[1, 2])
    # Gaussian sketch: the error of an inner product has sd about |a||b| / sqrt(dim)
    assert abs(approx - exact) < 5 * float(jnp.linalg.norm(flat[0]) * jnp.linalg.norm(flat[1])) / np.sqrt(dim)
    R.train_run(SMALL, config, key=jax.random.key(11), steps=1, out=tmp_path, sketch_dim=8)
    line = json.loads((tmp_path / "0.jsonl").read_text().splitlines()[0])
    assert len(line["score"]) == 8 and line["acc"] in (0, 1)
    data = read_step(tmp_path / "0.jsonl", "verl", 0, Options(reward_field="acc"))
    assert data.score_sum.shape == (4, 8) and data.alignments.shape == (4, 4, 2)
