"""The studies: runs of the worlds of :mod:`sim` that confirm a statement, returned as numbers.

The worlds (the bandits and the toy, the transformer and its task, the trainers and their rules,
drawing answers) are the rest of :mod:`sim`; each module here runs them at the sizes its caller
gives (`passk.presets` holds the command's quick and full ones) and returns NamedTuples or
JSON-ready dicts. Nothing here draws or writes files; the figures are :mod:`passk.plots`.

The bandit confirmations, one a module, and what runs them together:

- :mod:`~sim.studies.critical_k` (1): `theory.critical_k` against the first negative autodiff
  `<grad J_k, grad J_1>`;
- :mod:`~sim.studies.phase` (2): `k*` over the toy's `p_hard x separation`;
- :mod:`~sim.studies.one_step` (3): one step inside the windows, plain, Adam and projected, with
  :mod:`~sim.studies.first_order` (how loose the window is, what predicts Adam's step);
- :mod:`~sim.studies.dynamics` (4): training from the toy start, every rule;
- :mod:`~sim.studies.estimator_check` (5): each estimator's mean sampled update against its
  expectation;
- :mod:`~sim.studies.confirmations`: :func:`~sim.studies.confirmations.run_all` and its record;
  :mod:`~sim.studies.serialise`: the JSON form of every record.

The other studies:

- :mod:`~sim.studies.trainer_map`: which trainer's expected update conflicts with pass@1 where;
- :mod:`~sim.studies.recovery`: how well `k*` is recovered from sampled answers (the toy);
- :mod:`~sim.studies.band_coverage`: the `k*` interval's coverage where `I_k` stays barely above 0
  below `k*`, pointwise bounds against a simultaneous band;
- :mod:`~sim.studies.transformer_experiment`: the end-to-end transformer confirmation;
- :mod:`~sim.studies.transformer_recovery`: the recovery study at the transformer's warm start;
- :mod:`~sim.studies.transformer_proxy`: where the last-layer proxy errs, and a case it misses.

The modules are imported by name; this package re-exports nothing.
"""
