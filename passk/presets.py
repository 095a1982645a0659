"""The sizes of `passk`'s two presets: `--quick` (what the tests run) and the full run (the figures).

The library takes sizes and configurations; which ones a run uses is the command's choice, made
here and read by `passk reproduce` and `passk transformer`. One :class:`Preset` per choice:
:data:`QUICK` and :data:`FULL`, picked by :func:`preset`. (The benchmarks keep their sizes in
:mod:`passk.benchmarks`.)
"""

from __future__ import annotations

import dataclasses

from sim.studies.recovery import SAMPLE_SIZES
from sim.studies.transformer_experiment import ExperimentConfig, RunSpec
from sim.studies.transformer_ksweep import FamilySetting, KSweepConfig
from sim.studies.transformer_safe import SafeStudyConfig

__all__ = ["Preset", "QUICK", "FULL", "preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """The sizes of every part of one preset.

    Attributes:
      name: `"quick"` or `"full"` (also the transformer checkpoints' folder).
      bandit: keyword arguments per bandit confirmation (:func:`sim.studies.confirmations.run_all`).
      trainer_map: the toy grid of :func:`sim.studies.trainer_map.trainer_map`.
      sampled_ns: answers per prompt of the recovery studies.
      sampled_repeats: runs of `n` answers per prompt drawn for each `n`.
      band_repeats: runs of the band-coverage instance
        (:func:`sim.studies.band_coverage.band_coverage`).
      transformer: the transformer confirmation
        (:class:`~sim.studies.transformer_experiment.ExperimentConfig`); the `sampled` part
        studies its warm start.
      safe: the conflict-safe rules on the transformer
        (:class:`~sim.studies.transformer_safe.SafeStudyConfig`).
      ksweep: the k sweep (:class:`~sim.studies.transformer_ksweep.KSweepConfig`).
    """

    name: str
    bandit: dict
    trainer_map: dict
    sampled_ns: tuple
    sampled_repeats: int
    band_repeats: int
    transformer: ExperimentConfig
    safe: SafeStudyConfig
    ksweep: KSweepConfig


#: Small sizes (about two minutes for every part on 2 CPU cores; what the tests run).
QUICK = Preset(
    name="quick",
    bandit={
        "critical_k": dict(
            p_hards=(0.1, 0.3), separations=(0.5, 2.0), start_logits=(2.5,), n_seeds=2, n_prompts=32, k_grid=64
        ),
        "phase": dict(n_p_hard=12, n_separation=12, n_seeds=2, n_prompts=64),
        "one_step": dict(n_instances=256),
        "dynamics": dict(steps=40, n_seeds=2, n_samples=40, sampled=("pkpo-loo/sgd",)),
        "estimators": dict(n_draws=2000, n_prompts=32),
    },
    trainer_map=dict(n_p_hard=6, n_separation=6, n_seeds=2),
    sampled_ns=(8, 32),
    sampled_repeats=40,
    band_repeats=40,
    # The full preset's task and warm start (so the same k*), fewer and shorter runs.
    transformer=ExperimentConfig(
        runs=(
            RunSpec("exact", "low", "sgd"),
            RunSpec("exact", "high", "sgd"),
            RunSpec("pkpo-loo-1", "high", "sgd"),
        ),
        sgd_learning_rate=1.0,
        sgd_steps=10,
        adam_learning_rate=1e-3,
        adam_steps=10,
        checkpoint_every=5,
    ),
    # every rule and seed, only k above k*, SGD, three steps
    safe=SafeStudyConfig(
        k_roles=("high",),
        optimizers=("sgd",),
        estimators=("exact", "pkpo-loo-1"),
        seeds=(0, 1, 2),
        exact_steps=3,
        sampled_steps=3,
    ),
    # M = 7, one layer of width 32, T = 3 steps at eta = 0.3, 3 seeds. Exceptions: half of the hard
    # prompts seen, warm starts of 40, 80, 100 steps; rare rule: q = 0.2, 30% seen, warm starts of
    # 30, 50, 70 steps (in calls of 10).
    ksweep=KSweepConfig(
        families=(
            FamilySetting("exceptions", 0.25, 0.5, 20, (40, 80, 100)),
            FamilySetting("rare-rule", 0.2, 0.3, 10, (30, 50, 70)),
        ),
        modulus=7,
        d_model=32,
        n_heads=2,
        n_layers=1,
        d_mlp=64,
        sft_batch_size=64,
        sft_learning_rate=3e-3,
        learning_rate=0.3,
        steps=3,
        seeds=3,
        max_k=16,
    ),
)

_SEEDS = (0, 1, 2)
#: The figures' sizes.
FULL = Preset(
    name="full",
    bandit={
        "critical_k": dict(
            p_hards=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
            separations=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
            start_logits=(1.5, 2.5, 3.5),
            n_seeds=2,
            n_prompts=64,
            k_grid=256,
        ),
        "phase": dict(n_p_hard=40, n_separation=40, n_seeds=8, n_prompts=256),
        "one_step": dict(n_instances=4096),
        "dynamics": dict(steps=200, n_seeds=6, n_samples=40),
        "estimators": dict(n_draws=20000, n_prompts=64),
    },
    trainer_map=dict(n_p_hard=12, n_separation=12, n_seeds=8),
    sampled_ns=SAMPLE_SIZES,
    sampled_repeats=200,
    band_repeats=2000,
    # k = 1, PKPO below k*, pass@1 by RLOO, three seeds for each sampled estimator, 100-step Adam
    # runs (about 3 minutes on 2 CPU cores).
    transformer=ExperimentConfig(
        runs=(
            RunSpec("exact", "one", "sgd"),
            RunSpec("exact", "low", "sgd"),
            RunSpec("exact", "high", "sgd"),
            RunSpec("pkpo-loo-1", "low", "sgd", _SEEDS),
            RunSpec("pkpo-loo-1", "high", "sgd", _SEEDS),
            RunSpec("rloo", "one", "sgd", _SEEDS),
            RunSpec("exact", "one", "adam"),
            RunSpec("exact", "low", "adam"),
            RunSpec("exact", "high", "adam"),
            RunSpec("pkpo-loo-1", "high", "adam"),
        ),
        sgd_learning_rate=1.0,
        sgd_steps=40,
        adam_learning_rate=1e-3,
        adam_steps=100,
        checkpoint_every=20,
    ),
    # k below and above k*, SGD and Adam, exact (20 steps) and PKPO (8 steps, seeds 0-2)
    safe=SafeStudyConfig(
        k_roles=("low", "high"),
        optimizers=("sgd", "adam"),
        estimators=("exact", "pkpo-loo-1"),
        seeds=(0, 1, 2),
        exact_steps=20,
        sampled_steps=8,
    ),
    # The confirmation's model and task size (M = 11, width 64, two layers) and warm-start recipe
    # (Adam, batch 64, step 3e-3), T = 4 steps of SGD at eta = 1, 5 seeds. Exceptions: a quarter of
    # the pairs hard, 20% of them seen, warm starts of 20, 40, 60 steps. Rare rule: q = 0.1, 30% of
    # the KEEP prompts seen, warm starts of 20, 30, 70 steps (in calls of 10). The warm starts'
    # lengths were chosen, for the key jax.random.key(0), so that k* differs between them and their
    # gradients have not vanished.
    ksweep=KSweepConfig(
        families=(
            FamilySetting("exceptions", 0.25, 0.2, 20, (20, 40, 60)),
            FamilySetting("rare-rule", 0.1, 0.3, 10, (20, 30, 70)),
        ),
        modulus=11,
        d_model=64,
        n_heads=4,
        n_layers=2,
        d_mlp=128,
        sft_batch_size=64,
        sft_learning_rate=3e-3,
        learning_rate=1.0,
        steps=4,
        seeds=5,
    ),
)


def preset(quick: bool) -> Preset:
    """:data:`QUICK` or :data:`FULL`."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool; got {quick!r}")
    return QUICK if quick else FULL
