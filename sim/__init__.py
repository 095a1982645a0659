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
- :func:`draw_answers`, :func:`sampled_update`, :func:`sampled_updates`, :func:`scored_answers`:
  answers drawn from the policy, the score-function updates of each estimator on them, and
  answers with their exact score vectors (:mod:`sim.answers`).
- :func:`sim.probe.fold_probe`: fold gradients and one number per answer and fold for any JAX
  model (SPEC section 11).
- :func:`diagnose_model`, :func:`diagnosis_report`: is a run past `k*`, from its sampled answers
  (scores by autodiff on any JAX model, or arrays read by `passk diagnose`).
- :func:`conflict_guard`: an optax transformation that keeps a pass@k update from lowering pass@1
  in any training loop; :func:`sampled_surrogate`: a trainer's sampled update as a surrogate.
- :mod:`sim.transformer`: a small transformer on a verifiable task (a package of its own).

The studies that run these worlds to confirm a statement (the five bandit confirmations, the
trainer map, the recovery of `k*` from samples, the transformer studies) are in
:mod:`sim.studies`, off this face. Figures are drawn by :mod:`passk.plots`; `sim` only returns
numbers.
"""

from sim.answers import draw_answers, sampled_update, sampled_updates, scored_answers
from sim.bandit import DEFAULT_K_MAX, BanditDiagnostics, SoftmaxBandit
from sim.guards import GUARD_RULES, GuardState, conflict_guard, sampled_surrogate
from sim.probe import FoldProbe, fold_probe
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
    "FoldProbe",
    "fold_probe",
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
    "scored_answers",
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
