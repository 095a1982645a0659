"""The miniature LLM task: prompts of digits, answers of `L` digits, a verifier on the decoded string.

Tokens are the digits `0..V-1` and two marker tokens, `PLAIN = V` and `HARD = V+1`. A prompt is a
marker followed by `D` digits, `[m, x_1, ..., x_D]`, written as text like `"H:3014"`; an answer is
`L` digits, written `"341"`. The verifier reads the decoded strings: an answer passes when at
least `need` of its digits equal the prompt's target digit `d(x)`, with `need > L/2` so that two
different targets can never both be met:

- plain prompts (marker `PLAIN`): `d(x) = x_D` (copy the last digit);
- hard prompts (marker `HARD`): `d(x) = (x_D + 1 + h(x)) mod V` with the hidden rule
  `h(x) = (x_1 + 2 x_2 + ... + (D-1) x_{D-1}) mod (V-1)`, so `d(x) != x_D`.

Every prompt has `sum_{m >= need} C(L, m) (V-1)^(L-m)` correct answers (13 of 125 at `V = 5`,
`L = 3`, `need = 2`); the population has `2 V^D` distinct prompts (31250 at `V = 5`, `D = 6`).

Why the hard prompts conflict, and why a visible marker with a hidden rule. The plain rule is one
shared mechanism (repeat the current token: the last prompt digit, then the answer's own digits),
learnt by all plain prompts together. A hard prompt reads the same digits, and a policy that copies
answers it with `x_D`, which fails: raising its target lowers `x_D` through the shared copying
weights, so improving it alone lowers the plain prompts' success (negative agreement, SPEC section
3). The marker is visible, as a data set's hard subset is, so the model can in principle tell the
two apart; the hidden per-prompt rule `h` makes the hard targets differ from prompt to prompt, so
hard prompts do not reinforce one another (a shared rule such as `x_D + 1` lets them pull together,
and their agreement turns positive) and stay the prompts of smallest `p`, where pass@k weights
concentrate.

Prompts are indexed: the digit string of index `u` is `perm(u) = (a u + b) mod V^D` in base `V`
(`a` coprime to `V^D`), so indices are a shuffled enumeration. The last `n_eval` indices are the
held-out evaluation digit strings, never drawn in training; training draws an index from the rest
and a marker that is `HARD` with probability `hard_share`. The evaluation set has exactly
`round(hard_share n_eval)` hard prompts.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LMTask",
    "decode_answer",
    "decode_prompt",
    "draw_prompts",
    "eval_prompts",
    "n_correct_answers",
    "targets",
    "verify",
    "verify_string",
]

_PERM_A = 7919  # a prime; coprime to V^D whenever V is not a multiple of 7919


@dataclasses.dataclass(frozen=True)
class LMTask:
    """The task family: alphabet, lengths, the verifier's threshold and the hard share.

    Attributes:
      n_digits: `V`, the answer alphabet (digits `0..V-1`), `>= 3`.
      prompt_digits: `D`, digits per prompt, `>= 2`.
      answer_len: `L`, digits per answer, `>= 3`.
      need: matches of the target digit an answer needs, `L/2 < need <= L`.
      hard_share: the probability that a drawn prompt is hard, in `[0, 1)`.
      n_eval: prompts in the held-out evaluation set, `1 <= n_eval < V^D / 2`.
    """

    n_digits: int = 5
    prompt_digits: int = 6
    answer_len: int = 3
    need: int = 2
    hard_share: float = 0.1
    n_eval: int = 64

    def __post_init__(self):
        for name, low in (("n_digits", 3), ("prompt_digits", 2), ("answer_len", 3), ("need", 1), ("n_eval", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LMTask.{name} must be an integer >= {low}; got {value!r}")
        if not 2 * self.need > self.answer_len or self.need > self.answer_len:
            raise ValueError(
                f"LMTask.need must satisfy answer_len/2 < need <= answer_len = {self.answer_len} "
                f"(two targets must not both pass); got {self.need}"
            )
        share = self.hard_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ValueError(f"LMTask.hard_share must be a number in [0, 1); got {share!r}")
        if self.n_strings * _PERM_A >= 2**31:  # the index permutation runs in int32
            raise ValueError(f"LMTask: V^D = {self.n_strings} is too large (V^D * {_PERM_A} must stay below 2^31)")
        if math.gcd(_PERM_A, self.n_strings) != 1:
            raise ValueError(f"LMTask: V^D = {self.n_strings} shares a factor with the index permutation's {_PERM_A}")
        if 2 * self.n_eval >= self.n_strings:
            raise ValueError(f"LMTask.n_eval must be below V^D / 2 = {self.n_strings / 2}; got {self.n_eval}")

    @property
    def plain_token(self) -> int:
        return self.n_digits

    @property
    def hard_token(self) -> int:
        return self.n_digits + 1

    @property
    def vocab_size(self) -> int:
        """Digits and the two markers."""
        return self.n_digits + 2

    @property
    def prompt_len(self) -> int:
        return 1 + self.prompt_digits

    @property
    def seq_len(self) -> int:
        """Prompt and answer: the model's `max_len`."""
        return self.prompt_len + self.answer_len

    @property
    def n_strings(self) -> int:
        """`V^D` digit strings."""
        return self.n_digits**self.prompt_digits

    @property
    def n_prompts(self) -> int:
        """Distinct prompts of the population (each digit string with either marker)."""
        return 2 * self.n_strings

    @property
    def n_answers(self) -> int:
        """`V^L` answer strings."""
        return self.n_digits**self.answer_len

    @property
    def n_eval_hard(self) -> int:
        return round(self.hard_share * self.n_eval)


def _digits(task: LMTask, index):
    """The digit strings `(..., D)` of indices `(...)`: `perm(u)` written in base `V`, most significant first."""
    code = (jnp.asarray(index, jnp.int32) * _PERM_A + 1) % task.n_strings  # < 2^31 (checked)
    powers = task.n_digits ** jnp.arange(task.prompt_digits - 1, -1, -1)
    return ((code[..., None] // powers) % task.n_digits).astype(jnp.int32)


def _prompts(task: LMTask, index, hard):
    marker = jnp.where(hard, task.hard_token, task.plain_token).astype(jnp.int32)
    return jnp.concatenate([marker[..., None], _digits(task, index)], axis=-1)


def draw_prompts(task: LMTask, n: int, *, key):
    """`n` training prompts `(n, 1 + D)` drawn i.i.d. from the population, evaluation strings excluded."""
    k_index, k_hard = jax.random.split(key)
    index = jax.random.randint(k_index, (n,), 0, task.n_strings - task.n_eval)
    hard = jax.random.bernoulli(k_hard, task.hard_share, (n,))
    return _prompts(task, index, hard)


def eval_prompts(task: LMTask):
    """The held-out evaluation prompts `(n_eval, 1 + D)`: the first `n_eval_hard` are hard."""
    index = jnp.arange(task.n_strings - task.n_eval, task.n_strings)
    hard = jnp.arange(task.n_eval) < task.n_eval_hard
    return _prompts(task, index, hard)


def targets(task: LMTask, prompts):
    """The target digit `d(x)` of prompts `(..., 1 + D)`."""
    x = prompts[..., 1:]
    # h(x) = x_1 + 2 x_2 + ... + (D-1) x_{D-1}: digit x[j] (0-based) has weight j + 1, the last none
    weights = jnp.where(
        jnp.arange(task.prompt_digits) < task.prompt_digits - 1, jnp.arange(1, task.prompt_digits + 1), 0
    )
    hidden = jnp.sum(weights * x, axis=-1) % (task.n_digits - 1)
    hard_target = (x[..., -1] + 1 + hidden) % task.n_digits
    return jnp.where(prompts[..., 0] == task.hard_token, hard_target, x[..., -1])


def verify(task: LMTask, prompts, answers):
    """Rewards in `{0, 1}` (float32): answers `(..., L)` against prompts broadcasting over `(..., 1 + D)`.

    The compiled form of :func:`verify_string` (the tests check they agree on every string).
    """
    hits = jnp.sum(answers == targets(task, prompts)[..., None], axis=-1)
    return (hits >= task.need).astype(jnp.float32)


def decode_prompt(task: LMTask, prompt) -> str:
    """`"P:3014..."` (plain) or `"H:..."` (hard)."""
    prompt = np.asarray(prompt)
    marker = {task.plain_token: "P", task.hard_token: "H"}[int(prompt[0])]
    return marker + ":" + "".join(str(int(d)) for d in prompt[1:])


def decode_answer(answer) -> str:
    return "".join(str(int(d)) for d in np.asarray(answer))


def verify_string(task: LMTask, prompt_text: str, answer_text: str) -> int:
    """The verifier on decoded strings: 1 when at least `need` answer digits equal the target digit.

    An answer that is not `L` digits of the alphabet fails.
    """
    marker, digits = prompt_text.split(":")
    x = [int(c) for c in digits]
    if marker == "H":
        hidden = sum((j + 1) * x[j] for j in range(len(x) - 1)) % (task.n_digits - 1)
        target = (x[-1] + 1 + hidden) % task.n_digits
    else:
        target = x[-1]
    if len(answer_text) != task.answer_len or any(c not in "0123456789"[: task.n_digits] for c in answer_text):
        return 0
    return int(sum(int(c) == target for c in answer_text) >= task.need)


def n_correct_answers(task: LMTask) -> int:
    """`sum_{m >= need} C(L, m) (V-1)^(L-m)`: correct answers per prompt."""
    return sum(
        math.comb(task.answer_len, m) * (task.n_digits - 1) ** (task.answer_len - m)
        for m in range(task.need, task.answer_len + 1)
    )
