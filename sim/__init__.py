"""Simulated softmax-policy bandits where pass@k optimisation rotates away from pass@1.

- :class:`SoftmaxBandit`: exact `p`, `J_k`, per-prompt gradients, agreements (one reverse and one
  forward pass) and conflict diagnostics in one compiled call.
- :func:`toy_bandit`: the easy/hard toy with a documented start; :func:`toy_diagnostics` for one
  regime.
- :func:`train`, :func:`train_sweep`: gradient ascent on pass@1, pass@k or conflict-safe updates,
  exact or with the sampled estimators trainers use, in `lax.scan`: one unbatched core
  (:mod:`sim.train`; :class:`TrainConfig` in :mod:`sim.train_config`) under `jit`, or vmapped
  over rules, `k` and seeds and laid out over regimes and devices (:mod:`sim.sweep`).
- :data:`RULE_TABLE` (:mod:`sim.rules`): every update rule, on the direction before the optimiser
  or on the step after it, read by both trainers and :func:`conflict_guard`;
  :class:`Records`, :data:`RECORD_NAMES` (:mod:`sim.records`): one vocabulary of records for the
  bandits, the transformer, the JSON and the plots.
- :func:`draw_answers`, :func:`sampled_update`, :func:`sampled_updates`: answers drawn from the
  policy and the score-function updates of each estimator on them (:mod:`sim.answers`).
- :mod:`sim.experiments`: the numbers of the five confirmations (:func:`~sim.experiments.run_all`);
  :mod:`sim.experiments_json`: their JSON form. Both are modules of their own, not on this face.
- :func:`diagnose_model`, :func:`diagnosis_report`: is a run past `k*`, from its sampled answers
  (scores by autodiff on any JAX model, or arrays read by `passk diagnose`).
- :func:`conflict_guard`: an optax transformation that keeps a pass@k update from lowering pass@1
  in any training loop; :func:`sampled_surrogate`: a trainer's sampled update as a surrogate.
- :mod:`sim.trainer_map`: which trainer's expected update conflicts with pass@1 where (a module
  of its own, like the experiments).

Figures are drawn by :mod:`passk.plots.bandit`; `sim` only returns numbers.
"""

from sim.answers import draw_answers, sampled_update, sampled_updates
from sim.bandit import DEFAULT_K_MAX, BanditDiagnostics, SoftmaxBandit
from sim.guards import GUARD_RULES, GuardState, conflict_guard, sampled_surrogate
from sim.records import RECORD_NAMES, Records
from sim.rules import RULE_TABLE, UpdateRule
from sim.sweep import sweep_map
from sim.toy import TOY_DEFAULTS, hard_mask, toy_bandit, toy_diagnostics, toy_start
from sim.train import (
    ESTIMATORS,
    RULES,
    TrainConfig,
    train,
    train_sweep,
)

__all__ = [
    "BanditDiagnostics",
    "GUARD_RULES",
    "GuardState",
    "conflict_guard",
    "sampled_surrogate",

    "DEFAULT_K_MAX",
    "ESTIMATORS",
    "RECORD_NAMES",
    "RULES",
    "RULE_TABLE",
    "Records",
    "SoftmaxBandit",
    "TOY_DEFAULTS",
    "TrainConfig",
    "UpdateRule",
    "diagnose_model",
    "diagnosis_report",
    "draw_answers",
    "hard_mask",
    "sampled_update",
    "sampled_updates",
    "score_sums",
    "sketch_scores",
    "sweep_map",
    "toy_bandit",
    "toy_diagnostics",
    "toy_start",
    "train",
    "train_sweep",
]

from sim.diagnose import diagnose_model, diagnosis_report, score_sums, sketch_scores
