"""A small JAX transformer on a verifiable task: the world the transformer studies run.

Modules: :mod:`task` (the verifiable task), :mod:`task_families` (the exception task and the
rare-rule task in one form), :mod:`model` (the transformer), :mod:`exact` (exact success,
objectives and agreements by JVP), :mod:`sampling` (answers from the policy), :mod:`warm_start`
(supervised warm start), :mod:`train` (policy-gradient fine-tuning with every rule of
:data:`sim.rules.RULE_TABLE`), :mod:`pg_step` (its compiled step, and many runs of it at once),
:mod:`smoothness` (a measured `L_1`), :mod:`checkpoint` (chunked loops that checkpoint and resume).

The studies that run it are in :mod:`sim.studies`: the end-to-end confirmation
(:mod:`sim.studies.transformer_experiment`), the recovery of `k*` from sampled answers
(:mod:`sim.studies.transformer_recovery`), the last-layer proxy
(:mod:`sim.studies.transformer_proxy`), the conflict-safe rules measured
(:mod:`sim.studies.transformer_safe`) and plain SGD through the crossing at every `k`
(:mod:`sim.studies.transformer_ksweep`, its table in :mod:`sim.studies.transformer_ksweep_rows`).
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
from sim.transformer.task import Task, TaskConfig, correct_answer, make_task, verify
from sim.transformer.task_families import FAMILIES, make_family_task
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
