"""The `k*` interval's coverage where `I_k` stays barely above 0 below `k*` (`sim.studies.band_coverage`):
pointwise bounds miss `k*` more often than their level says, the simultaneous band does not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from sim.studies.band_coverage import band_coverage, draw_answers, exact_inner, flat_instance


def test_flat_instance_crosses_once_at_its_k_star():
    inst = flat_instance(k_star=16)
    p, d = inst.success, inst.gradient
    mu = np.full(p.size, 1 / p.size)
    ks = np.arange(1, 32)
    direct = np.array([np.sum(mu[:, None] * mu[None, :] * (k * (1 - p) ** (k - 1))[:, None] * (d @ d.T)) for k in ks])
    exact = exact_inner(inst, ks)
    np.testing.assert_allclose(exact, direct, rtol=1e-12)
    assert np.all(exact[:15] > 0) and np.all(exact[15:] < 0)  # k* = 16, one crossing
    # barely above 0 from k = 3 on: below 2% of I_1
    assert np.all(exact[2:15] < 0.02 * exact[0])


def test_flat_instance_answers_are_unbiased_for_the_gradients():
    """`E[r_ij s_ij] = d_i`: the mean over 4000 answers per prompt within 4 standard errors."""
    inst = flat_instance(per_class=2, sigma=1.0)
    with jax.enable_x64(True):
        r, s = draw_answers(jax.random.key(0), inst._replace(gradient=jnp.asarray(inst.gradient)), 4000)
        rs = np.asarray(r)[..., None] * np.asarray(s)
    err = (rs.mean(axis=1) - inst.gradient) / (rs.std(axis=1) / np.sqrt(4000))
    assert np.all(np.abs(err) < 4), err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"easy": 1.0}, r"easy must lie in \(0, 1\); got 1.0"),
        ({"hard": 0.4}, "hard must be below middle"),
        ({"sigma": 0.0}, "sigma must be positive; got 0.0"),
        ({"k_star": 1}, "k_star"),
    ],
)
def test_flat_instance_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flat_instance(**kwargs)


@pytest.mark.slow
def test_pointwise_interval_misses_and_the_band_holds():
    """2000 runs (key 0) of `n = 32` answers per prompt, nominal 95%: the pointwise rule's
    coverage of `k*` has its Wilson upper end below 0.95; the Bonferroni band (what
    `sampled_critical_k_jax` reads) and the max-t band have Wilson lower ends at or above 0.93.
    Every miss of the pointwise rule is its upper end below `k*`."""
    out = band_coverage(key=jax.random.key(0), repeats=2000)
    summary = {
        name: (round(out[name]["quantile"], 3), out[name]["coverage"]) for name in ("pointwise", "bonferroni", "max_t")
    }
    print(f"k* = {out['k_star_exact']}, {out['repeats']} runs: {summary}")
    assert out["k_star_exact"] == 16
    t = np.array(out["t_at_k"])
    assert np.all((t[2:15] > 0) & (t[2:15] < 0.5)), t  # barely above 0, against the noise, for k = 3 .. 15
    assert out["pointwise"]["coverage"]["upper"] < 0.95
    assert out["pointwise"]["lower_above"]["value"] < 0.01
    for band in ("bonferroni", "max_t"):
        assert out[band]["coverage"]["lower"] >= 0.93, out[band]
    assert theory.bands.t_quantile(0.95) < out["max_t"]["quantile"] < out["bonferroni"]["quantile"]
