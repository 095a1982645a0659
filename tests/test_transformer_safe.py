"""Training rules of the transformer's fine-tuning (`PGConfig.rule`) and the `safe` study.

`"passk"` is the fine-tuning of before the rules, bit for bit (against a frozen copy of that step);
a guarded exact run's `<g_1, u>` is never negative; `"project-safe-step"` with the measured smoothness
keeps exact pass@1 from falling where plain pass@k ascent lowers it; the study's JSON keys; and
bad rules or combinations raise ValueError naming the argument.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_transformer import make_tiny

from passk.presets import QUICK
from sim.records import RECORD_NAMES as R
from sim.studies import transformer_safe as safe
from sim.transformer import checkpoint, exact, pg_step, task, train

STEPS = 10


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def _finetune(tiny, checkpoint_path=None, **fields):
    t, cfg, params = tiny
    pg = train.PGConfig(
        **{
            "estimator": "exact",
            "k": 8,
            "learning_rate": 1.0,
            "steps": STEPS,
            "checkpoint_every": STEPS,
            "track_ks": (8,),
            **fields,
        }
    )
    return train.finetune(
        params,
        t.prompts,
        t.answers,
        cfg,
        pg,
        key=jax.random.key(4),
        verifier=task.verify,
        verifier_args=(t.hard_table, t.exception_table),
        checkpoint_path=checkpoint_path,
    )


# A frozen copy of the fine-tuning step as it was before training rules existed (commit b1ab911).
@functools.partial(jax.jit, static_argnames=("config", "pg", "verifier"))
def _old_chunk(carry, start, key, prompts, answers, mu, verifier_args, *, config, pg, verifier):
    opt = optax.sgd(pg.learning_rate) if pg.optimizer == "sgd" else optax.adam(pg.learning_rate)
    track = jnp.asarray(pg.track_ks)
    verify = lambda x, y: verifier(x, y, *verifier_args)

    def step(carry, inputs):
        theta, opt_state = carry
        _, step_key = inputs
        (_, mean_reward), grads = jax.value_and_grad(
            lambda th: train.pg_surrogate(th, prompts, answers, config, pg, step_key, verify, mu), has_aux=True
        )(theta)
        g1 = exact.grad_pass_at_1(theta, prompts, answers, config, mu)
        neg = jax.tree_util.tree_map(jnp.negative, grads)
        updates, opt_state = opt.update(neg, opt_state, theta)
        j1, jk = pg_step.evaluate(theta, prompts, answers, mu, track, config)
        metrics = {R.j1: j1, R.jk: jk, R.update_inner: exact.tree_dot(g1, updates), "mean_reward": mean_reward}
        return (optax.apply_updates(theta, updates), opt_state), metrics

    return jax.lax.scan(step, carry, checkpoint.step_keys(key, start, pg.checkpoint_every))


@pytest.mark.slow
def test_passk_rule_is_the_old_finetune_bit_for_bit(tiny):
    t, cfg, params = tiny
    assert train.PGConfig(estimator="exact", k=2).rule == "passk"  # the default
    new_params, traj = _finetune(tiny)
    pg = train.PGConfig(estimator="exact", k=8, learning_rate=1.0, steps=STEPS, checkpoint_every=STEPS, track_ks=(8,))
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    mu = jnp.full((t.n_prompts,), 1.0 / t.n_prompts, jnp.float32)
    args = tuple(jnp.asarray(x) for x in (t.hard_table, t.exception_table))
    (old_params, _), metrics = _old_chunk(
        (params, optax.sgd(1.0).init(params)),
        jnp.asarray(0, jnp.int32),
        jax.random.key(4),
        prompts,
        answers,
        mu,
        args,
        config=cfg,
        pg=pg,
        verifier=task.verify,
    )
    np.testing.assert_array_equal(traj[R.j1][:-1], np.asarray(metrics[R.j1]))
    np.testing.assert_array_equal(traj[R.update_inner], np.asarray(metrics[R.update_inner]))
    for a, b in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(old_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(traj["k_used"], np.full(STEPS, 8))


@pytest.mark.slow
def test_project_safe_keeps_exact_pass1_from_falling_where_passk_ascent_lowers_it(tiny, tmp_path):
    # One guarded exact run serves both checks: <g_1, u> >= 0 at every step (here > 0: the
    # step-safe guard asks <g_1, u> >= (L_1 / 2) |u|^2), and pass@1 never falls.
    t, cfg, params = tiny
    sm = train.estimate_smoothness(params, t.prompts, t.answers, cfg, key=jax.random.key(3))
    assert sm["smoothness"] == pytest.approx(2.0 * max(sm["curvatures"] + [sm["power_iteration"]]))
    _, plain = _finetune(tiny)
    ckpt = tmp_path / "project_safe.pkl"
    _, guarded = _finetune(tiny, ckpt, rule="project-safe-step", smoothness=sm["smoothness"])
    assert np.any(np.diff(plain[R.j1]) < -1e-4)  # plain pass@8 ascent lowers pass@1 here
    assert np.any(plain[R.update_inner] < 0)
    assert np.all(guarded[R.update_inner] >= 0), guarded[R.update_inner]
    assert np.all(np.diff(guarded[R.j1]) >= -safe.FALL_TOL), np.diff(guarded[R.j1])
    assert guarded[R.jk][-1, 0] > guarded[R.jk][0, 0]  # pass@8 still rises
    # The rule is part of the run's fingerprint: the checkpoint resumes its own run (here at its
    # end, with the same records) and is refused by the plain pass@k run.
    _, again = _finetune(tiny, ckpt, rule="project-safe-step", smoothness=sm["smoothness"])
    for name in (R.j1, R.update_inner, R.k_used):
        np.testing.assert_array_equal(again[name], guarded[name])
    with pytest.raises(ValueError, match="different run"):
        _finetune(tiny, ckpt)
    # The direction rule of the same formula is another run: its fingerprint differs.
    with pytest.raises(ValueError, match="different run"):
        _finetune(tiny, ckpt, rule="project-safe", smoothness=sm["smoothness"])


@pytest.mark.slow
def test_study_returns_the_documented_keys(tiny, monkeypatch):
    t, cfg, params = tiny

    def fake_finetune(params, prompts, answers, mcfg, pg, *, key, **kwargs):
        seed = int(jax.random.randint(key, (), 0, 1000))
        j1 = 0.5 + 0.01 * np.arange(pg.steps + 1) + 1e-3 * seed
        jk = np.stack([j1 + 0.1, j1 + 0.2], axis=1)
        return params, {
            R.j1: j1,
            R.jk: jk,
            R.update_inner: np.ones(pg.steps),
            "mean_reward": np.zeros(pg.steps),
            R.k_used: np.full(pg.steps, pg.k),
        }

    monkeypatch.setattr(safe._experiment, "warm_start", lambda *a, **k: (t, cfg, params, np.zeros(1)))
    monkeypatch.setattr(safe._train, "finetune", fake_finetune)
    monkeypatch.setattr(safe._train, "estimate_smoothness", lambda *a, **k: {"smoothness": 1.0})
    out = safe.safe_update_study(config=QUICK.safe, key=jax.random.key(0))
    for name in (
        "k_star",
        "k_roles",
        "n_samples",
        "pass1_warm_start",
        "smoothness",
        "fall_tol",
        "rules",
        "settings",
        "groups",
        "runtime_s",
    ):
        assert name in out
    labels = {g["label"] for g in out["groups"]}
    assert labels == set(out["rules"]) >= {"passk", "project-step", "project-safe-step", "safe-k", "pass1"}
    for g in out["groups"]:
        for name in ("final_pass1", "final_passk", "final_pass_at_k_high", "auc_pass1", "auc_passk"):
            assert set(g[name]) == {"value", "lower", "upper", "n", "sd"}
            assert g[name]["n"] == (1 if g["estimator"] == "exact" else 3)
        assert g["pass1_fall_steps"] == [0] * len(g["seeds"]) and g["pass1_fell"] is False
        assert len(g["pass1_curve"]) == g["steps"] + 1


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(rule="bogus"), "rule"),
        (dict(rule="project", estimator="rloo", k=1), "rule"),
        (dict(rule="project-step", estimator="rloo", k=1), "rule"),
        (dict(rule="mixture-step", mixture_weight=-1.0), "mixture_weight"),
        (dict(rule="project-safe-step"), "smoothness"),
        (dict(rule="passk", mixture_weight=1.0), "mixture_weight"),
        (dict(rule="mixture", mixture_weight=-1.0), "mixture_weight"),
        (dict(rule="project-safe"), "smoothness"),
        (dict(rule="project-safe", smoothness=0.0), "smoothness"),
        (dict(rule="project", smoothness=1.0), "smoothness"),
        (dict(rule="safe-k", safe_k_every=0), "safe_k_every"),
    ],
)
def test_bad_rules_and_combinations_raise_naming_the_argument(fields, name):
    with pytest.raises(ValueError, match=name):
        train.PGConfig(**{"estimator": "exact", "k": 4, **fields})


def test_study_rejects_a_config_of_another_type():
    with pytest.raises(TypeError, match="config must be a SafeStudyConfig"):
        safe.safe_update_study(config="quick", key=jax.random.key(0))
