"""A small JAX transformer that confirms the pass@k / pass@1 conflict end to end.

Modules: :mod:`task` (the verifiable task), :mod:`model` (the transformer), :mod:`exact` (exact
success, objectives and agreements by JVP), :mod:`sampling` (answers from the policy),
:mod:`warm_start` (supervised warm start), :mod:`train` (policy-gradient fine-tuning with every
rule of :data:`sim.rules.RULE_TABLE`), :mod:`pg_step` (its compiled step, and many runs of it at
once), :mod:`smoothness` (a measured `L_1`), :mod:`checkpoint` (chunked loops that checkpoint and
resume), :mod:`experiment` (:func:`run_experiment`), :mod:`safe` (:func:`safe_update_study`: the
conflict-safe rules measured), :mod:`task_families` (the exception task and the rare-rule task in
one form), :mod:`ksweep` (:func:`ksweep_study`: plain SGD through the crossing at every `k`, two
task families, three warm starts each; its table in :mod:`ksweep_rows`), :mod:`proxy` (the
last-layer proxy: its errors, from samples, and :func:`hidden_conflict_case`).
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
from sim.transformer.experiment import (
    SCOPE,
    ExperimentConfig,
    RunSpec,
    choose_ks,
    experiment_config,
    run_experiment,
)
from sim.transformer.ksweep import ksweep_study
from sim.transformer.model import LAST_LAYER, ModelConfig, apply, init, param_count
from sim.transformer.proxy import hidden_conflict_case, monte_carlo_proxy, proxy_errors
from sim.transformer.safe import safe_update_study
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
    "SCOPE",
    "ExperimentConfig",
    "Interrupted",
    "ModelConfig",
    "RULES",
    "PGConfig",
    "RunSpec",
    "SFTConfig",
    "Task",
    "TaskConfig",
    "agreement_jvp",
    "agreement_pergrad",
    "apply",
    "choose_ks",
    "conflict_summary",
    "correct_answer",
    "estimate_smoothness",
    "experiment_config",
    "finetune",
    "gradient_cosines",
    "hidden_conflict_case",
    "init",
    "ksweep_study",
    "make_family_task",
    "monte_carlo_proxy",
    "make_task",
    "param_count",
    "pass_at_1",
    "pass_at_k_objective",
    "proxy_errors",
    "run_experiment",
    "safe_update_study",
    "sample_answers",
    "success",
    "supervised_warm_start",
    "verify",
]
