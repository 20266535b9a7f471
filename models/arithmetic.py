"""A synthetic reasoning task with exact answers: chains of single-digit operations mod 10.

A problem is a start digit and ``k`` operations ``(op, d)`` with ``op`` in
``+ - *`` and ``d`` a digit; its solution applies them in turn modulo 10. The
text the language model sees (one character per token)::

    prompt:    <bos>3+4*2-5?
    solution:  3+4=7;7*2=4;4-5=9;#9<eos>

Every reasoning step is the fixed-width line ``a op b = c`` ended by the step
delimiter ``;``; the answer line starts with the answer delimiter ``#``. The
solution of a problem is unique, so a generated prefix is correct exactly when
it is a prefix of the solution: the checker compares tokens, in NumPy
(``check``) or in JAX (``prefix_correct``, usable as an exact oracle PRM
inside a compiled search).

Training traces (``corrupted_solution``) replace the result of a step by a
wrong digit with a given probability and continue the chain from the wrong
value, so that a model trained on them makes mistakes that search can fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks

PAD, BOS, EOS = 0, 1, 2
CHARS = "0123456789+-*=;#?"
VOCAB_SIZE = 3 + len(CHARS)
_ID = {c: 3 + i for i, c in enumerate(CHARS)}
STEP_ID = _ID[";"]
ANSWER_ID = _ID["#"]
QUESTION_ID = _ID["?"]
DIGIT_IDS = np.arange(3, 13, dtype=np.int32)
OPS = "+-*"
STEP_LEN = 6  # "a+b=c;"
ANSWER_LEN = 3  # "#d<eos>"
MIN_OPS, MAX_OPS = 2, 7


def encode(text: str, bos: bool = False, eos: bool = False) -> np.ndarray:
    """Token ids of ``text`` (int32), with optional BOS / EOS.

    Raises:
        ValueError: for a character outside the vocabulary.
    """
    bad = sorted(set(text) - set(CHARS))
    if bad:
        raise ValueError(f"text: expected characters from {CHARS!r}, got {bad}")
    ids = [_ID[c] for c in text]
    return np.asarray(([BOS] if bos else []) + ids + ([EOS] if eos else []), np.int32)


def decode(ids) -> str:
    """Text of token ids; stops at EOS, skips PAD/BOS."""
    out = []
    for t in np.asarray(ids).tolist():
        if t == EOS:
            break
        if t >= 3:
            out.append(CHARS[t - 3])
    return "".join(out)


def _apply(a: int, op: str, d: int) -> int:
    return (a + d) % 10 if op == "+" else (a - d) % 10 if op == "-" else (a * d) % 10


@dataclasses.dataclass(frozen=True)
class Problem:
    """A chain problem: ``start`` then ``ops`` (tuples ``(op, digit)``)."""

    start: int
    ops: tuple

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def values(self) -> list[int]:
        """The running value after each operation (the correct step results)."""
        out, a = [], self.start
        for op, d in self.ops:
            a = _apply(a, op, d)
            out.append(a)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def prompt_text(self) -> str:
        return str(self.start) + "".join(f"{op}{d}" for op, d in self.ops) + "?"

    def solution_text(self) -> str:
        return corrupted_solution_text(self, [None] * self.num_ops)


def corrupted_solution_text(problem: Problem, wrong: list) -> str:
    """The solution with step ``i``'s result replaced by ``wrong[i]`` when not None.

    Later steps start from the (wrong) value written, so the chain stays
    locally consistent after a mistake, as a model's own errors do.
    """
    a, lines = problem.start, []
    for (op, d), w in zip(problem.ops, wrong, strict=True):
        c = _apply(a, op, d) if w is None else int(w)
        lines.append(f"{a}{op}{d}={c};")
        a = c
    return "".join(lines) + f"#{a}"


def random_problem(rng: np.random.Generator, num_ops: int) -> Problem:
    """A problem with ``num_ops`` operations drawn uniformly."""
    num_ops = _checks.positive_int(num_ops, "num_ops")
    start = int(rng.integers(10))
    ops = tuple((OPS[int(rng.integers(3))], int(rng.integers(10))) for _ in range(num_ops))
    return Problem(start, ops)


def split(name: str, num_ops: int, size: int, seed: int = 0) -> list[Problem]:
    """A fixed split: ``"train"`` or ``"test"`` problems with ``num_ops`` operations.

    The two splits are drawn from disjoint seeds and the test split has every
    problem that also occurs in train removed, so held-out means unseen.
    """
    if name not in ("train", "test"):
        raise ValueError(f"name: expected 'train' or 'test', got {name!r}")
    num_ops = _checks.positive_int(num_ops, "num_ops")
    size = _checks.positive_int(size, "size")
    if not MIN_OPS <= num_ops <= MAX_OPS:
        raise ValueError(f"num_ops: expected {MIN_OPS} <= num_ops <= {MAX_OPS}, got {num_ops}")
    rng = np.random.default_rng([seed, num_ops, 0 if name == "train" else 1])
    if name == "train":
        return [random_problem(rng, num_ops) for _ in range(size)]
    seen = set(split("train", num_ops, 4096, seed)) if num_ops <= 4 else set()
    out: list[Problem] = []
    while len(out) < size:
        p = random_problem(rng, num_ops)
        if p not in seen:
            out.append(p)
    return out


def prompt_length(num_ops: int) -> int:
    """Tokens in a prompt: BOS, start digit, 2 per operation, '?'."""
    return 3 + 2 * num_ops


def solution_length(num_ops: int) -> int:
    """Tokens in a solution including EOS."""
    return STEP_LEN * num_ops + ANSWER_LEN


def sequence_length(num_ops: int) -> int:
    """Room for a whole example: the prompt, the solution, and two slack tokens."""
    return prompt_length(num_ops) + solution_length(num_ops) + 2


def prompts(problems: list[Problem]) -> np.ndarray:
    """Left-padded prompt tokens ``[B, P]`` (PAD = 0 on the left)."""
    enc = [encode(p.prompt_text(), bos=True) for p in problems]
    width = max(len(e) for e in enc)
    out = np.zeros((len(enc), width), np.int32)
    for i, e in enumerate(enc):
        out[i, width - len(e) :] = e
    return out


def solutions(problems: list[Problem], length: int) -> np.ndarray:
    """Right-padded correct solution tokens ``[B, length]`` (with EOS)."""
    out = np.zeros((len(problems), length), np.int32)
    for i, p in enumerate(problems):
        e = encode(p.solution_text(), eos=True)
        if len(e) > length:
            raise ValueError(f"length: expected >= {len(e)} for a {p.num_ops}-op problem")
        out[i, : len(e)] = e
    return out


def training_sequences(
    problems: list[Problem], rng: np.random.Generator, p_wrong: float, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt + (possibly corrupted) solution per problem, right-padded to ``length``.

    Returns ``(tokens [B, length], loss_mask [B, length])``: the mask is 1 on
    the positions whose *next* token is part of the solution (the LM is not
    trained to predict the prompt).
    """
    p_wrong = _checks.unit_interval(p_wrong, "p_wrong")
    toks = np.zeros((len(problems), length), np.int32)
    mask = np.zeros((len(problems), length), np.float32)
    for i, p in enumerate(problems):
        wrong = []
        for c in p.values():
            bad = rng.random() < p_wrong
            wrong.append(int((c + rng.integers(1, 10)) % 10) if bad else None)
        pr = encode(p.prompt_text(), bos=True)
        so = encode(corrupted_solution_text(p, wrong), eos=True)
        seq = np.concatenate([pr, so])
        if len(seq) > length:
            raise ValueError(f"length: expected >= {len(seq)}, got {length}")
        toks[i, : len(seq)] = seq
        mask[i, len(pr) - 1 : len(seq) - 1] = 1.0
    return toks, mask


def extract_answer(generated: np.ndarray | jax.Array) -> np.ndarray:
    """The canonical answer of each generated row: the digit after '#', else -1.

    Args:
        generated: ``[N, T]`` generated tokens (NumPy or JAX).

    Returns:
        ``[N]`` answers (digits 0-9, or -1 where no digit follows a '#').
    """
    return np.asarray(extract_answer_jax(jnp.asarray(generated)))


def extract_answer_jax(generated: jax.Array) -> jax.Array:
    """``extract_answer`` in JAX (``[N, T] -> [N]`` int32, -1 when there is no answer)."""
    is_ans = generated == ANSWER_ID
    has = jnp.any(is_ans, axis=-1)
    pos = jnp.argmax(is_ans, axis=-1)
    nxt = jnp.take_along_axis(jnp.pad(generated, ((0, 0), (0, 1))), (pos + 1)[:, None], axis=-1)[
        :, 0
    ]
    digit = (nxt >= 3) & (nxt < 13)
    return jnp.where(has & digit, nxt - 3, -1).astype(jnp.int32)


def prefix_correct(generated: jax.Array, length: jax.Array, solution: jax.Array) -> jax.Array:
    """Whether each generated prefix is a prefix of its solution (the exact step checker).

    Args:
        generated: ``[N, T]`` generated tokens.
        length: ``[N]`` number of valid generated tokens per row.
        solution: ``[N, S]`` correct solution tokens (right-padded).

    Returns:
        ``[N]`` bool: every token before ``length`` matches the solution.
    """
    t = generated.shape[-1]
    s = solution.shape[-1]
    sol = solution[:, :t] if s >= t else jnp.pad(solution, ((0, 0), (0, t - s)), constant_values=-1)
    pos = jnp.arange(t)[None, :]
    ok = (generated == sol) | (pos >= length[:, None])
    return jnp.all(ok, axis=-1)


def check(problem: Problem, generated) -> dict:
    """Exact check of one generated trace (NumPy): every step and the answer.

    Returns:
        ``{"steps": [bool per written step], "answer": int | None,
            "answer_correct": bool, "all_correct": bool}``; a step is correct when
            its line equals the solution's line at that position.
    """
    text = decode(generated)
    sol = problem.solution_text()
    body, _, ans = text.partition("#")
    lines = [s for s in body.split(";")]
    if lines and lines[-1] == "":
        lines = lines[:-1]
    truth = sol.partition("#")[0].split(";")[:-1]
    steps = [i < len(truth) and line == truth[i] for i, line in enumerate(lines)]
    answer = int(ans[0]) if ans[:1].isdigit() else None
    return {
        "steps": steps,
        "answer": answer,
        "answer_correct": answer == problem.answer,
        "all_correct": text == sol,
    }


# ---------------------------------------------------------------- search constraints
# Example constraints for the step-level LM searches (``inferax.search.lm.steer``):
# a logits hook and a step potential over a decoding state (duck-typed: ``tokens``
# [R, T] and ``num_tokens`` [R]).


def _format_table(vocab_size: int, eos_id: int) -> np.ndarray:
    """``allowed[line kind, column, token]``: kind 0 a step line, 1 an answer line."""
    digits = DIGIT_IDS
    ops = np.asarray([encode(c)[0] for c in OPS])
    eq = encode("=")[0]
    t = np.zeros((2, STEP_LEN + 1, vocab_size), bool)
    t[:, 0, digits] = True
    t[:, 0, ANSWER_ID] = True
    t[0, 1, ops] = True
    t[0, 2, digits] = True
    t[0, 3, eq] = True
    t[0, 4, digits] = True
    t[0, 5, STEP_ID] = True
    t[1, 1, digits] = True
    t[1, 2:, eos_id] = True
    t[0, 6:, eos_id] = True
    return t


def _line_start(state: Any, step_id: int) -> jax.Array:
    t = state.tokens.shape[1]
    pos = jnp.arange(t)[None]
    delim = (state.tokens == step_id) & (pos < state.num_tokens[:, None])
    return jnp.max(jnp.where(delim, pos + 1, 0), axis=1)


def arithmetic_format_hook(
    vocab_size: int = VOCAB_SIZE, eos_id: int = EOS
) -> Callable[[jax.Array, Any], jax.Array]:
    """A format constraint for the arithmetic task: a logits hook that allows, at
    each column of the current line, only the tokens of ``d op d = d ;`` (a step)
    or ``# d <eos>`` (the answer): digits at columns 0, 2, 4, an operator at 1,
    ``=`` at 3, ``;`` at 5; ``#`` may open a line, then a digit, then EOS."""
    table = jnp.asarray(_format_table(vocab_size, eos_id))

    def hook(logits: jax.Array, state: Any) -> jax.Array:
        start = _line_start(state, STEP_ID)
        col = state.num_tokens - start
        first = jnp.take_along_axis(
            state.tokens, jnp.minimum(start, state.tokens.shape[1] - 1)[:, None], axis=1
        )[:, 0]
        kind = ((col > 0) & (first == ANSWER_ID)).astype(jnp.int32)
        allowed = table[kind, jnp.clip(col, 0, table.shape[1] - 1)]
        return jnp.where(allowed, logits, -jnp.inf)

    return hook


def no_repeated_result(step_id: int = STEP_ID) -> Callable[[Any, jax.Array], jax.Array]:
    """A "no digit repeated" condition for the arithmetic task: the step results
    (the digit right before each ``;``) must be pairwise distinct. Returns the
    potential ``0`` while they are, ``-inf`` once one repeats."""

    def potential(state: Any, prompt_index: jax.Array) -> jax.Array:
        tok = state.tokens
        t = tok.shape[1]
        nxt = jnp.concatenate([tok[:, 1:], jnp.full_like(tok[:, :1], -1)], axis=1)
        pos = jnp.arange(t)[None]
        digit = (tok >= DIGIT_IDS[0]) & (tok <= DIGIT_IDS[-1])
        result = digit & (nxt == step_id) & (pos + 1 < state.num_tokens[:, None])
        counts = jnp.sum(jax.nn.one_hot(tok - DIGIT_IDS[0], 10) * result[..., None], axis=1)
        return jnp.where(jnp.any(counts > 1, axis=1), -jnp.inf, 0.0)

    return potential
