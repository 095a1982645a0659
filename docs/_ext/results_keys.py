"""Where each experiment's numbers sit in figures/results.json: the one table of paths.

The docs quote a number as {result}`NAME.rest.of.path|FORMAT`; ``NAME`` is a key of ``SECTIONS``
and the rest is read inside that section. When a part of ``passk reproduce`` renames or moves a
record, the entry here is the line to change (keys that are record names of their own, such as the
transformer's per-``k`` curves, get an entry each).
"""

SECTIONS = {
    # theory part
    "weights": "theory.results.weights",
    "concentration": "theory.results.concentration",
    "two_group": "theory.results.two_group",
    # bandit part
    "toy": "bandit.results.toy",
    "critical_k": "bandit.results.critical_k",
    "phase": "bandit.results.phase_diagram",
    "one_step": "bandit.results.one_step",
    "looseness": "bandit.results.one_step.window_looseness",
    "adam_predictors": "bandit.results.one_step.adam_predictors",
    "dynamics": "bandit.results.dynamics",
    "estimators": "bandit.results.estimators",
    "bandit_headline": "bandit.results.headline",
    # transformer part
    "transformer": "transformer.results",
    "tf_warm_start": "transformer.results.warm_start",
    "tf_proxy": "transformer.results.last_layer_proxy",
    "tf_runs": "transformer.results.runs",
    "tf_inner": "transformer.results.inner",
    "tf_mean_agreement": "transformer.results.mean_agreement",
    "tf_cos": "transformer.results.cos",
    # k sweep part
    "ksweep": "ksweep.results",
    # sampled part
    "sampled_toy": "sampled.results.toy",
    "band": "sampled.results.band",
    "sampled_tf": "sampled.results.transformer",
    "sampled_headline": "sampled.results.headline",
    # trainers part
    "trainers": "trainers.results",
    "trainers_headline": "trainers.results.headline",
    # safe part (groups are listed by estimator, optimiser, rule and k; these are the k = 10 ones quoted)
    "safe": "safe.results",
    "safe_sgd_passk": "safe.results.groups.7",
    "safe_sgd_project": "safe.results.groups.8",
    "safe_sgd_project_safe": "safe.results.groups.9",
    "safe_sgd_mixture_1": "safe.results.groups.12",
    "safe_sgd_pass2": "safe.results.groups.0",
    "safe_adam_passk": "safe.results.groups.35",
    "safe_adam_project_safe": "safe.results.groups.37",
    "safe_sampled_passk": "safe.results.groups.21",
    "safe_sampled_project_safe": "safe.results.groups.23",
    "safe_sampled_adam_passk": "safe.results.groups.49",
    "safe_sampled_adam_project_safe": "safe.results.groups.51",
    # lm part (the miniature LLM run)
    "lm": "lm.results",
    "lm_diagnosis": "lm.results.diagnosis",
    # forecast part (per horizon, scores by forecast: logistic, base_rate, rule, naive, shuffled)
    "forecast": "forecast.results",
    "forecast_T5": "forecast.results.horizons.5",
    "forecast_T10": "forecast.results.horizons.10",
    "forecast_T20": "forecast.results.horizons.20",
    "forecast_headline": "forecast.results.headline",
    # seconds each part took in the run that wrote the file
    "seconds": "",
}
