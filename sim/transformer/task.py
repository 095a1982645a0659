"""A verifiable task whose hard prompts look like easy ones but need another answer.

Tokens are the digits `0..M-1`, two operator tokens `PLUS` and `TWIST`, and `=`. A prompt is
`[a, b, op, =]` and its answer is two digits. The rule is to reverse the pair; `TWIST` is an alias
of `PLUS` except on a fixed random set of "exception" pairs `H`:

- easy (`op = PLUS`, or `op = TWIST` with `(a, b)` not in `H`): `y* = (b, a)`;
- hard (`op = TWIST`, `(a, b)` in `H`): `y* = e(a, b)`, a fixed random answer that differs from
  `(b, a)` in both digits.

Every prompt has exactly one correct answer, so the verifier is `r(x, y) = [y == y*(x)]` and the
per-prompt success is exactly `p(x) = pi(y*_1 | x) pi(y*_2 | x, y*_1)` (a product over the answer
tokens).

Why this shows interference. The rule is one shared mechanism (copying), learnt by every easy
prompt together, so the easy prompts' gradients add up. A hard prompt uses the same tokens as
rule-following prompts (its `PLUS` twin and the `TWIST` prompts off `H`), and after a warm start
that has seen few hard prompts the model answers it by the rule. Raising its answer means lowering
the rule's answer `(b, a)` (its current mode) through the shared copying weights, which lowers the
success of the look-alikes: hard prompts have negative agreement (SPEC section 3), easy ones
positive. Each exception has its own random answer, so the hard prompts do not reinforce one
another (an exception rule shared by all of them, such as "add one", was tried first: the hard
prompts then pulled together and their agreement stayed positive). Hard prompts also have the
smallest `p`, so pass@k ascent with large `k`, whose weights concentrate on the smallest `p`,
lowers pass@1: `I_k < 0` for `k >= k*`.

The population (the prompts of `J_1`, `J_k` and of policy-gradient fine-tuning) is every pair with
both operators (`2 M^2` prompts). The supervised warm start sees every easy prompt and a share of
the hard ones; it is stopped early, which spreads `p`: easy prompts high, hard ones seen by the
warm start low to middle, unseen hard ones near 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TaskConfig", "Task", "DigitPairVocabulary", "make_task", "correct_answer", "verify"]

PROMPT_LEN = 4
ANSWER_LEN = 2


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Sizes of the task.

    Attributes:
      modulus: `M`, the number of digits (`>= 3`).
      hard_fraction: share of pairs `(a, b)` whose `TWIST` prompt is an exception (hard).
      sft_hard_fraction: share of the hard prompts shown to the supervised warm start.
    """

    modulus: int = 11
    hard_fraction: float = 0.25
    sft_hard_fraction: float = 0.3

    def __post_init__(self):
        if isinstance(self.modulus, bool) or not isinstance(self.modulus, int) or self.modulus < 3:
            raise ValueError(f"TaskConfig.modulus must be an integer >= 3; got {self.modulus!r}")
        for name in ("hard_fraction", "sft_hard_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
                raise ValueError(f"TaskConfig.{name} must lie in (0, 1]; got {value!r}")


class DigitPairVocabulary:
    """The token layout shared by the two-operator digit-pair tasks (a mixin: no fields).

    Tokens `0..M-1` are digits, `M` and `M+1` the two operators, `M+2` is `=`; a prompt
    `[a, b, op, =]` is followed by a two-digit answer. Subclasses hold `config.modulus` and
    `prompts`.
    """

    __slots__ = ()

    @property
    def modulus(self) -> int:
        return self.config.modulus

    @property
    def equals(self) -> int:
        return self.config.modulus + 2

    @property
    def vocab_size(self) -> int:
        return self.config.modulus + 3

    @property
    def seq_len(self) -> int:
        """Length of a prompt followed by its answer."""
        return PROMPT_LEN + ANSWER_LEN

    @property
    def n_prompts(self) -> int:
        return int(self.prompts.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: identity, not value, equality
class Task(DigitPairVocabulary):
    """The concrete prompt sets of one task instance (numpy arrays, fixed by the key).

    Attributes:
      config: the :class:`TaskConfig`.
      hard_table: `(M, M)` bool, True for the exception pairs `H`.
      exception_table: `(M, M, 2)` the exception answer of each pair (used where `hard_table`).
      prompts: `(P, 4)` population prompts `[a, b, op, =]`: all `PLUS` prompts, then all `TWIST`.
      answers: `(P, 2)` the unique correct answer of each prompt.
      is_hard: `(P,)` bool, True for the exception prompts.
      twin: `(P,)` index of the prompt with the same `(a, b)` and the other operator.
      sft_index: indices into the population of the warm-start training prompts.
    """

    config: TaskConfig
    hard_table: np.ndarray
    exception_table: np.ndarray
    prompts: np.ndarray
    answers: np.ndarray
    is_hard: np.ndarray
    twin: np.ndarray
    sft_index: np.ndarray

    @property
    def plus(self) -> int:
        return self.config.modulus

    @property
    def twist(self) -> int:
        return self.config.modulus + 1

    def verifier(self, prompt, answer):
        """`r(x, y)` for this task (see :func:`verify`); traceable."""
        return verify(prompt, answer, jnp.asarray(self.hard_table), jnp.asarray(self.exception_table))


def correct_answer(prompt, hard_table, exception_table):
    """The unique correct answer `(2,)` of a prompt `(4,)` (traceable; `M = hard_table.shape[0]`)."""
    modulus = hard_table.shape[0]
    a, b, op = prompt[0], prompt[1], prompt[2]
    rule = jnp.stack([b, a]).astype(prompt.dtype)
    hard = (op == modulus + 1) & hard_table[a, b]
    return jnp.where(hard, exception_table[a, b].astype(prompt.dtype), rule)


def verify(prompt, answer, hard_table, exception_table):
    """The verifier `r(x, y) in {0, 1}`: 1 when both answer digits equal the correct ones.

    Args:
      prompt: `(4,)` tokens `[a, b, op, =]`.
      answer: `(2,)` sampled answer tokens.
      hard_table: `(M, M)` bool, True on the exception pairs.
      exception_table: `(M, M, 2)` the answers of the exception prompts.

    Returns:
      A float32 scalar reward.
    """
    return jnp.all(answer == correct_answer(prompt, hard_table, exception_table)).astype(jnp.float32)


def make_task(config: TaskConfig, *, key) -> Task:
    """Build the population and the warm-start split; the key picks the hard pairs and the split."""
    if not isinstance(config, TaskConfig):
        raise TypeError(f"config must be a TaskConfig; got {type(config).__name__}")
    m = config.modulus
    k_hard, k_sft, k_ans = jax.random.split(key, 3)
    a, b = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1)  # (M^2, 2)
    n_pairs = pairs.shape[0]
    n_hard = max(1, int(round(config.hard_fraction * n_pairs)))
    hard_pairs = np.sort(np.asarray(jax.random.permutation(k_hard, n_pairs))[:n_hard])
    hard_table = np.zeros((m, m), bool)
    hard_table[pairs[hard_pairs, 0], pairs[hard_pairs, 1]] = True
    plus, twist, eq = m, m + 1, m + 2
    column = lambda value: np.full((n_pairs, 1), value)
    prompts = np.concatenate(
        [
            np.concatenate([pairs, column(plus), column(eq)], axis=1),
            np.concatenate([pairs, column(twist), column(eq)], axis=1),
        ]
    ).astype(np.int32)  # (2 M^2, 4)
    # Each exception gets its own random answer, different in both digits from the rule's: the
    # exceptions share no rule among themselves, so their gradients do not reinforce one another.
    offsets = np.asarray(jax.random.randint(k_ans, (m, m, 2), 1, m))
    rule = np.stack([b, a], axis=-1)
    exception_table = ((rule + offsets) % m).astype(np.int32)
    answers = np.asarray(
        jax.vmap(lambda x: correct_answer(x, jnp.asarray(hard_table), jnp.asarray(exception_table)))(
            jnp.asarray(prompts)
        )
    ).astype(np.int32)
    is_hard = np.concatenate([np.zeros(n_pairs, bool), hard_table.ravel()])
    twin = np.concatenate([np.arange(n_pairs) + n_pairs, np.arange(n_pairs)]).astype(np.int32)
    hard_index = np.flatnonzero(is_hard)
    n_sft_hard = max(1, int(round(config.sft_hard_fraction * n_hard)))
    sft_hard = np.sort(hard_index[np.asarray(jax.random.permutation(k_sft, n_hard))[:n_sft_hard]])
    sft_index = np.sort(np.concatenate([np.flatnonzero(~is_hard), sft_hard])).astype(np.int32)
    return Task(config, hard_table, exception_table, prompts, answers, is_hard, twin, sft_index)
