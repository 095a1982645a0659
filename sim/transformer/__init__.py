"""A small JAX transformer on a verifiable task: the world the transformer studies run.

Modules: :mod:`task` (the verifiable task), :mod:`task_families` (the exception task and the
rare-rule task in one form), :mod:`model` (the transformer), :mod:`exact` (exact success,
objectives and agreements by JVP), :mod:`train` (warm start, policy-gradient fine-tuning,
sampling, training rules), :mod:`checkpoint` (chunked loops that checkpoint and resume).

The studies that run it are in :mod:`sim.studies`: the end-to-end confirmation
(:mod:`sim.studies.transformer_experiment`, :func:`~sim.studies.transformer_experiment.run_experiment`),
the recovery of `k*` from sampled answers (:mod:`sim.studies.transformer_recovery`) and the
last-layer proxy (:mod:`sim.studies.transformer_proxy`). Two more live here as modules, off this
face: :mod:`safe` (the conflict-safe rules measured) and :mod:`ksweep` (plain SGD through the
crossing at every `k`, two task families, three warm starts each).
"""

from sim.transformer.exact import (
    agreement_jvp,
    agreement_pergrad,
    conflict_summary,
    gradient_cosines,
    pass_at_1,
    pass_at_k_objective,
    success,
)
from sim.transformer.model import LAST_LAYER, ModelConfig, apply, init, param_count
from sim.transformer.task_families import FAMILIES, make_family_task
from sim.transformer.task import Task, TaskConfig, correct_answer, make_task, verify
from sim.transformer.train import (
    RULES,
    Interrupted,
    PGConfig,
    SFTConfig,
    estimate_smoothness,
    finetune,
    sample_answers,
    supervised_warm_start,
)

__all__ = [
    "FAMILIES",
    "LAST_LAYER",
    "Interrupted",
    "ModelConfig",
    "RULES",
    "PGConfig",
    "SFTConfig",
    "Task",
    "TaskConfig",
    "agreement_jvp",
    "agreement_pergrad",
    "apply",
    "conflict_summary",
    "correct_answer",
    "estimate_smoothness",
    "finetune",
    "gradient_cosines",
    "init",
    "make_family_task",
    "make_task",
    "param_count",
    "pass_at_1",
    "pass_at_k_objective",
    "sample_answers",
    "success",
    "supervised_warm_start",
    "verify",
]
