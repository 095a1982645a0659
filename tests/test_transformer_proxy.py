"""The last-layer proxy studies (`sim.studies.transformer_proxy`): where it errs, from samples, and a case it misses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_transformer import make_tiny

from sim.studies import transformer_proxy as proxy
from sim.transformer import exact, model
from sim.transformer import task as task_mod


def test_hidden_conflict_case_is_invisible_to_the_last_layer():
    case = proxy.hidden_conflict_case()
    kernel, kernel_proxy = np.asarray(case["kernel"]), np.asarray(case["kernel_proxy"])
    assert abs(case["hidden_inner"]) < 1e-15  # orthogonal final hidden states
    assert abs(kernel_proxy[0, 1]) < 1e-15 and kernel[0, 1] < -1e-3  # the conflict is below the head
    assert min(case["agreement_proxy"]) > 0 and case["agreement"][0] < 0
    assert case["k_star_proxy"] is None and case["k_star"] is not None
    # the k* read off the agreements is the first k at which autodiff's <grad J_k, grad J_1> < 0
    first = next(k for k, v in zip(case["ks"], case["inner"]) if v < 0)
    assert first == case["k_star"]
    assert all(v > 0 for k, v in zip(case["ks"], case["inner"]) if k < first)


def test_hidden_conflict_case_head_kernel_closed_form():
    """Output-head kernel `<u_i, u_j> <h_i, h_j>`, `u(x) = sum_y pi(y|x) (r_y - p) e_y`, written out."""
    case = proxy.hidden_conflict_case(mu_hard=0.3)
    p = np.asarray(case["p"])
    w = np.array([[-1.0, 2.5], [1.5, -0.5], [0.0, 0.0]])
    pis = [np.exp(w[:, i]) / np.exp(w[:, i]).sum() for i in range(2)]  # hidden states are e_0, e_1
    r = np.array([1.0, 0.0, 0.0])
    u = [pi * (r - pi @ r) for pi in pis]
    np.testing.assert_allclose(p, [pi @ r for pi in pis], rtol=1e-12)
    expected = np.array([[u[i] @ u[j] * float(i == j) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(case["kernel_proxy"], expected, rtol=1e-10, atol=1e-16)


def test_proxy_errors_bins_and_weights():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.05, 10), rng.uniform(0.05, 0.95, 20), [1.0, 0.97]])
    a = rng.normal(size=p.size)
    b = np.where(rng.uniform(size=p.size) < 0.3, -a, a)
    hard = p < 0.05
    out = proxy.proxy_errors(p, a, b, hard, [1, 4])
    wrong = np.sign(a) != np.sign(b)
    assert out["sign_right"]["value"] == pytest.approx(1 - wrong.mean())
    assert sum(bin_["wrong"]["n"] for bin_ in out["wrong_by_p"] if bin_["wrong"]) == p.size  # a partition
    assert out["wrong_hard"]["n"] == hard.sum()
    for row in out["weight_on_wrong"]:
        k = row["k"]
        w = k * (1 - p) ** (k - 1)  # w_k(p), written out
        assert row["share"] == pytest.approx(w[wrong].sum() / w.sum(), rel=1e-6)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def test_head_scores_are_output_head_gradients_of_log_success(tiny):
    """The Monte Carlo proxy's scores equal `grad_U log p` of `exact.per_prompt_gradients` (an
    independent `vmap(grad)`) at the correct answers."""
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts[:6]), jnp.asarray(t.answers[:6])
    scores = proxy._head_scores(params, prompts, answers[:, None, :], cfg)[:, 0]
    ref = exact.per_prompt_gradients(params, prompts, answers, cfg, subset=model.LAST_LAYER, log=True)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_monte_carlo_proxy_runs_and_is_reproducible(tiny):
    t, cfg, params = tiny
    prompts, answers = jnp.asarray(t.prompts), jnp.asarray(t.answers)
    a, _, _ = exact.agreement_jvp(params, prompts, answers, cfg)
    a_ll, _, _ = exact.agreement_jvp(params, prompts, answers, cfg, subset=model.LAST_LAYER)
    run = lambda: proxy.monte_carlo_proxy(
        params,
        prompts,
        cfg,
        task_mod.verify,
        (t.hard_table, t.exception_table),
        key=jax.random.key(3),
        n=8,
        agreement=a,
        agreement_proxy=a_ll,
    )
    first, second = run(), run()
    assert first == second
    assert first["sign_right_vs_exact"]["n"] == prompts.shape[0] and first["k_star"]["k_max"] == 7


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: proxy.hidden_conflict_case(mu_hard=1.0), "mu_hard must lie in"),
        (lambda: proxy.proxy_errors(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3, bool), [1]), "share one"),
        (
            lambda: proxy.monte_carlo_proxy(
                None, None, None, None, (), key=None, n=2, agreement=None, agreement_proxy=None
            ),
            "n must be an integer >= 3",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
