"""Task families for the transformer: the exceptions task of :mod:`sim.transformer.task` and a
rare second rule, behind one interface.

Both families share the tokens (digits `0..M-1`, two operators, `=`), the prompt `[a, b, op, =]`
and two-digit answers, so one model configuration serves both. They differ in *what makes a prompt
hard*:

- `"exceptions"` (:mod:`sim.transformer.task`): `op = TWIST` on a random quarter of the pairs has
  its own random answer. Hard prompts look exactly like rule-following ones and share nothing
  among themselves: each is a separate fact to memorise.
- `"rare-rule"` (this module): a second rule that only part of the population follows. `op =
  SWAP` asks for the pair reversed, `y* = (b, a)`; `op = KEEP` asks for it in order, `y* = (a, b)`.
  Every pair has a `SWAP` prompt; only a small random share `q` of the pairs with `a != b` has a
  `KEEP` prompt (on `a = b` the two rules agree, so such a prompt would not be hard). The hard
  prompts are marked by their own operator and share one rule, so they are learnt together.

Each prompt of either family has exactly one correct answer, so the verifier is
`r(x, y) = [y == y*(x)]` and `p(x) = pi(y*_1 | x) pi(y*_2 | x, y*_1)` is exact
(:func:`sim.transformer.exact.success`).

Why `"rare-rule"` shows interference (and when it does not). The agreement of a `KEEP` prompt
`i` is `a_i = sum_j mu_j kappa(x_i, x_j)`. Its partners are of two kinds: the other `KEEP`
prompts, whose answers come from the same in-order copy and whose gradients therefore point the
same way (`kappa > 0`), and the `SWAP` prompts, which use the same digit tokens and the same
answer positions but copy the other digit first. After a warm start that saw few `KEEP` prompts
the model answers them by the dominant rule, `(b, a)`; raising `pi((a, b) | [a, b, KEEP, =])`
moves the shared copying weights towards in-order copying and lowers the `SWAP` prompts' success
(`kappa < 0`). Writing `q` for the `KEEP` share, `a_i ~ q kappa_within + (1 - q) kappa_across`:
the rule's own pull grows with `q`, the conflict with the majority with `1 - q`. When the rule is
rare enough the conflict wins, `KEEP` prompts have negative agreement and the smallest `p`, and
pass@k ascent with large `k` lowers pass@1. When it is common enough, or the warm start has seen
enough of it, the `KEEP` prompts pull one another up and there is no conflict at any `k` (the
note in :mod:`sim.transformer.task` records the same for a shared exception rule). Unlike the
exceptions task, the difficulty is visible in the prompt (its operator) and is a matter of
frequency, not of memorising unrelated facts. Measured at `M = 11`, `q = 0.1` with 30% of the `KEEP`
prompts in the warm start (the full preset of the k sweep, `passk.presets`): after 20 supervised
steps every `KEEP` prompt has negative agreement and `k* = 4`; after 30 steps 7 of 12 and `k* = 9`;
after 70 steps 5 of 12 and no conflict. At `q = 0.15` (same sizes, one key, 40 supervised steps
seeing 20%, 30% or 50% of the `KEEP` prompts) none of the three warm starts conflicted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim.transformer import task as _task

__all__ = [
    "FAMILIES",
    "FamilyTask",
    "RareRuleConfig",
    "RareRuleTask",
    "make_family_task",
    "make_rare_rule_task",
    "rare_rule_answer",
    "rare_rule_verify",
]

#: The task families, by name.
FAMILIES = ("exceptions", "rare-rule")


def _share(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{owner}.{name} must lie in (0, 1]; got {value!r}")


@dataclasses.dataclass(frozen=True)
class RareRuleConfig:
    """Sizes of the rare-rule task.

    Attributes:
      modulus: `M`, the number of digits (`>= 3`).
      rule_fraction: `q`, the share of all `M^2` pairs that get a `KEEP` prompt (drawn among the
        pairs with `a != b`; at least one).
      sft_rule_fraction: share of the `KEEP` prompts shown to the supervised warm start.
    """

    modulus: int = 11
    rule_fraction: float = 0.1
    sft_rule_fraction: float = 0.3

    def __post_init__(self):
        if isinstance(self.modulus, bool) or not isinstance(self.modulus, int) or self.modulus < 3:
            raise ValueError(f"RareRuleConfig.modulus must be an integer >= 3; got {self.modulus!r}")
        _share("RareRuleConfig", "rule_fraction", self.rule_fraction)
        _share("RareRuleConfig", "sft_rule_fraction", self.sft_rule_fraction)
        m = self.modulus
        if round(self.rule_fraction * m * m) > m * (m - 1):
            raise ValueError(
                f"RareRuleConfig.rule_fraction ({self.rule_fraction!r}) asks for more KEEP prompts than the "
                f"{m * (m - 1)} pairs with a != b"
            )


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: identity, not value, equality
class RareRuleTask(_task.DigitPairVocabulary):
    """The prompt sets of one rare-rule task (numpy arrays, fixed by the key).

    Attributes:
      config: the :class:`RareRuleConfig`.
      keep_table: `(M, M)` bool, True for the pairs that have a `KEEP` prompt.
      prompts: `(P, 4)` prompts `[a, b, op, =]`: all `M^2` `SWAP` prompts, then the `KEEP` ones.
      answers: `(P, 2)` the unique correct answer of each prompt.
      is_hard: `(P,)` bool, True for the `KEEP` prompts.
      sft_index: indices into the population of the warm-start training prompts.
    """

    config: RareRuleConfig
    keep_table: np.ndarray
    prompts: np.ndarray
    answers: np.ndarray
    is_hard: np.ndarray
    sft_index: np.ndarray

    @property
    def swap(self) -> int:
        return self.config.modulus

    @property
    def keep(self) -> int:
        return self.config.modulus + 1

    def verifier(self, prompt, answer):
        """`r(x, y)` for this task (see :func:`rare_rule_verify`); traceable."""
        return rare_rule_verify(prompt, answer, jnp.asarray(self.modulus))


def rare_rule_answer(prompt, modulus):
    """The unique correct answer `(2,)` of a prompt `[a, b, op, =]` (traceable).

    `(a, b)` when `op = KEEP` (token `M + 1`), else `(b, a)`.
    """
    a, b, op = prompt[0], prompt[1], prompt[2]
    keep = op == modulus + 1
    return jnp.where(keep, jnp.stack([a, b]), jnp.stack([b, a])).astype(prompt.dtype)


def rare_rule_verify(prompt, answer, modulus):
    """The verifier `r(x, y) in {0, 1}`: 1 when both answer digits equal the correct ones.

    Args:
      prompt: `(4,)` tokens `[a, b, op, =]`.
      answer: `(2,)` sampled answer tokens.
      modulus: `M`, the number of digits (a scalar; `KEEP` is token `M + 1`).

    Returns:
      A float32 scalar reward.
    """
    return jnp.all(answer == rare_rule_answer(prompt, modulus)).astype(jnp.float32)


def make_rare_rule_task(config: RareRuleConfig, *, key) -> RareRuleTask:
    """Build the population and the warm-start split; the key picks the `KEEP` pairs and the split.

    The same key and modulus give the same population for every `sft_rule_fraction`; the
    warm-start shares are nested (a larger share adds prompts to a smaller one's).
    """
    if not isinstance(config, RareRuleConfig):
        raise TypeError(f"config must be a RareRuleConfig; got {type(config).__name__}")
    m = config.modulus
    k_rule, k_sft = jax.random.split(key)
    a, b = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    a, b = a.ravel(), b.ravel()
    n_pairs = m * m
    distinct = np.flatnonzero(a != b)
    n_keep = max(1, int(round(config.rule_fraction * n_pairs)))
    chosen = np.sort(distinct[np.asarray(jax.random.permutation(k_rule, distinct.size))[:n_keep]])
    keep_table = np.zeros((m, m), bool)
    keep_table[a[chosen], b[chosen]] = True
    swap, keep, eq = m, m + 1, m + 2
    prompts = np.concatenate(
        [
            np.stack([a, b, np.full(n_pairs, swap), np.full(n_pairs, eq)], axis=1),
            np.stack([a[chosen], b[chosen], np.full(n_keep, keep), np.full(n_keep, eq)], axis=1),
        ]
    ).astype(np.int32)  # (M^2 + n_keep, 4)
    answers = np.concatenate([np.stack([b, a], axis=1), np.stack([a[chosen], b[chosen]], axis=1)]).astype(np.int32)
    is_hard = np.concatenate([np.zeros(n_pairs, bool), np.ones(n_keep, bool)])
    hard_index = np.flatnonzero(is_hard)
    n_sft = max(1, int(round(config.sft_rule_fraction * n_keep)))
    sft_hard = np.sort(hard_index[np.asarray(jax.random.permutation(k_sft, n_keep))[:n_sft]])
    sft_index = np.concatenate([np.arange(n_pairs), sft_hard]).astype(np.int32)
    return RareRuleTask(config, keep_table, prompts, answers, is_hard, sft_index)


class FamilyTask(NamedTuple):
    """One task instance of any family, in the form the studies use.

    Attributes:
      family: the family's name (one of :data:`FAMILIES`).
      task: the family's own task object (:class:`sim.transformer.task.Task` or
        :class:`RareRuleTask`).
      prompts, answers, is_hard, sft_index: as in the task object.
      vocab_size, seq_len: the model's vocabulary and sequence length.
      verifier: `verifier(prompt, answer, *verifier_args) -> {0, 1}`, a module-level function (as
        :func:`sim.transformer.train.finetune` wants it).
      verifier_args: the verifier's array arguments.
    """

    family: str
    task: object
    prompts: np.ndarray
    answers: np.ndarray
    is_hard: np.ndarray
    sft_index: np.ndarray
    vocab_size: int
    seq_len: int
    verifier: Callable
    verifier_args: tuple

    @property
    def n_prompts(self) -> int:
        return int(self.prompts.shape[0])

    def verify(self, prompt, answer):
        """`r(x, y)` for this task: the family's verifier with its arguments (traceable)."""
        return self.verifier(prompt, answer, *(jnp.asarray(a) for a in self.verifier_args))


def make_family_task(family: str, *, modulus: int, hard_fraction: float, sft_hard_fraction: float, key) -> FamilyTask:
    """A task of the named family.

    Args:
      family: one of :data:`FAMILIES`.
      modulus: `M`, the number of digits.
      hard_fraction: the share of pairs with a hard prompt (exceptions: `TWIST` exceptions;
        rare rule: `KEEP` prompts).
      sft_hard_fraction: the share of the hard prompts the warm start sees.
      key: a `jax.random` key; it fixes the population (the same key gives the same population for
        every `sft_hard_fraction`).

    Returns:
      A :class:`FamilyTask`.
    """
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    if family == "exceptions":
        t = _task.make_task(
            _task.TaskConfig(modulus=modulus, hard_fraction=hard_fraction, sft_hard_fraction=sft_hard_fraction), key=key
        )
        return FamilyTask(
            family,
            t,
            t.prompts,
            t.answers,
            t.is_hard,
            t.sft_index,
            t.vocab_size,
            t.seq_len,
            _task.verify,
            (t.hard_table, t.exception_table),
        )
    t = make_rare_rule_task(
        RareRuleConfig(modulus=modulus, rule_fraction=hard_fraction, sft_rule_fraction=sft_hard_fraction), key=key
    )
    return FamilyTask(
        family,
        t,
        t.prompts,
        t.answers,
        t.is_hard,
        t.sft_index,
        t.vocab_size,
        t.seq_len,
        rare_rule_verify,
        (np.asarray(modulus, np.int32),),
    )
