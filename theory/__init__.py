"""Closed forms for pass@k versus pass@1 (SPEC sections 2 to 8), and their estimates from sampled
answers: per-answer scores (section 10) and one number per answer and fold (section 11).

Every function takes numpy or JAX arrays and works under `jax.jit`/`vmap` where its inputs are
arrays; concrete inputs are validated (see `theory.validate`), traced ones only by shape/dtype.
"""

from theory.answers import AnswerStatistics, AnswerSums, answer_statistics, answer_sums, statistics_from_sums
from theory.bands import CriticalKInterval
from theory.critical import (
    asymptotic_conflict,
    conflict_sign_changes,
    critical_k,
    critical_k_jax,
    k_star_or_none,
    single_crossing,
    two_group_conflict_threshold,
    two_group_critical_k,
)
from theory.estimator_table import ESTIMATOR_TABLE, GradientEstimator, gradient_estimator
from theory.estimators import (
    grouped_passk_advantages,
    grpo_advantages,
    pass_at_k_unbiased,
    pass_at_k_weight_unbiased,
    pkpo_weights,
    rloo_advantages,
)
from theory.implied import IMPLIED_METHODS, implied_prompt_weight, implied_weight_unbiased
from theory.interference import (
    agreement_scores,
    conflict_inner_product,
    gradient_cosine,
    safe_cosine,
    weighted_mean_agreement,
)
from theory.population import PopulationInner, population_critical_k, population_inner_product
from theory.sampled import (
    SampledInner,
    agreement_from_statistics,
    inner_product_from_statistics,
    plugin_inner_product,
    sampled_agreement_scores,
    sampled_inner_product,
)
from theory.sampled_critical import (
    SampledCriticalK,
    critical_k_from_inner,
    critical_k_from_statistics,
    normal_quantile,
    plugin_critical_k,
    sampled_critical_k,
    sampled_critical_k_jax,
)
from theory.steps import (
    mixture_coefficient,
    pass1_decrease_window,
    passk_increase_window,
    passk_smoothness_bound,
    project_conflict,
    project_step_safe,
    safe_k,
    softmax_gradient_bound,
    softmax_smoothness_bound,
)
from theory.weights import (
    log_normalized_weights,
    log_pass_at_k_weight,
    normalized_weights,
    pass_at_k,
    pass_at_k_weight,
)

__all__ = [
    "CriticalKInterval",
    "PopulationInner",
    "population_critical_k",
    "population_inner_product",
    "AnswerStatistics",
    "AnswerSums",
    "SampledCriticalK",
    "SampledInner",
    "agreement_from_statistics",
    "answer_statistics",
    "answer_sums",
    "critical_k_from_inner",
    "critical_k_from_statistics",
    "normal_quantile",
    "inner_product_from_statistics",
    "statistics_from_sums",
    "k_star_or_none",
    "plugin_critical_k",
    "plugin_inner_product",
    "sampled_critical_k",
    "sampled_critical_k_jax",
    "sampled_inner_product",
    "ESTIMATOR_TABLE",
    "GradientEstimator",
    "gradient_estimator",
    "IMPLIED_METHODS",
    "grouped_passk_advantages",
    "grpo_advantages",
    "implied_prompt_weight",
    "implied_weight_unbiased",
    "pass_at_k_unbiased",
    "pass_at_k_weight_unbiased",
    "pkpo_weights",
    "rloo_advantages",
    "agreement_scores",
    "asymptotic_conflict",
    "conflict_inner_product",
    "conflict_sign_changes",
    "critical_k",
    "critical_k_jax",
    "gradient_cosine",
    "log_normalized_weights",
    "log_pass_at_k_weight",
    "mixture_coefficient",
    "normalized_weights",
    "pass1_decrease_window",
    "pass_at_k",
    "pass_at_k_weight",
    "passk_increase_window",
    "passk_smoothness_bound",
    "project_conflict",
    "project_step_safe",
    "safe_k",
    "sampled_agreement_scores",
    "safe_cosine",
    "single_crossing",
    "softmax_gradient_bound",
    "softmax_smoothness_bound",
    "two_group_conflict_threshold",
    "two_group_critical_k",
    "weighted_mean_agreement",
]
