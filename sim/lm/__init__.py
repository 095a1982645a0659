"""An LLM-style RL run in miniature: multi-token answers, a verifier on strings, GRPO-family training.

Modules: :mod:`task` (prompts, the verifier, the held-out evaluation set), :mod:`policy` (the
transformer's answer distribution, the compiled sampler, exact success and agreements by the
prefix tree), :mod:`train` (the trainer: clipped surrogate, KL to the reference, Adam, checkpoints)
and :mod:`dumps` (verl-schema rollout files with the section 11 fields).
"""

from sim.lm.policy import ExactEval, exact_eval, model_config, sample_answers, success
from sim.lm.task import LMTask, draw_prompts, eval_prompts, verify, verify_string

__all__ = [
    "ExactEval",
    "LMTask",
    "draw_prompts",
    "eval_prompts",
    "exact_eval",
    "model_config",
    "sample_answers",
    "success",
    "verify",
    "verify_string",
]
