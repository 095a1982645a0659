"""The transformer confirmation's set-up, for the studies of this package that share its warm start.

The confirmation is :mod:`sim.studies.transformer_experiment`; :mod:`sim.transformer.safe` reads
its task, model and warm start through :func:`experiment_config`, :func:`warm_start` and
:func:`choose_ks` here.
"""

from __future__ import annotations

from sim.studies.transformer_experiment import ExperimentConfig, choose_ks, warm_start

__all__ = ["ExperimentConfig", "choose_ks", "experiment_config", "warm_start"]


def experiment_config(quick: bool) -> ExperimentConfig:
    """The set-up both of `passk`'s presets share (task, model, warm start, `min_samples`).

    The presets differ only in their fine-tuning runs (`passk.presets`), so both give
    `ExperimentConfig()`, the set-up without runs.
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool; got {quick!r}")
    return ExperimentConfig()
