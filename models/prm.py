"""Reward models for the arithmetic task: a learned process reward model (PRM), the exact
oracle PRM, and an outcome reward model (ORM).

A reward model scores a generated trace at every generated position; the
positions that count are the step delimiters and EOS (``scored_positions``).

- The learned model is a causal ``Transformer`` with two output channels:
  channel 0 is the PRM, P(prefix still correct) at each step delimiter and at
  EOS, trained on the LM's own sampled traces labelled by the exact checker
  (Lightman et al. 2023, "Let's verify step by step"; Wang et al. 2024,
  Math-Shepherd, label prefixes automatically); channel 1 is the ORM,
  P(final answer correct), trained at EOS only.
- The oracle PRM (``oracle_scores``) is the checker itself: 1 on a correct
  prefix, 0 after the first wrong token; the oracle ORM is 1 when the
  extracted answer is right.

All scorers return ``[N, T]`` probabilities aligned with the generated tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inferax.models import arithmetic as ar
from inferax.models.transformer import Transformer

PROCESS, OUTCOME = 0, 1


def reward_model(num_layers: int = 2, d_model: int = 64, num_heads: int = 4, max_len: int = 64):
    """The learned reward model: a causal transformer with a PRM and an ORM channel."""
    return Transformer(
        ar.VOCAB_SIZE,
        num_layers=num_layers,
        d_model=d_model,
        num_heads=num_heads,
        max_len=max_len,
        out_dim=2,
    )


def scored_positions(tokens: jax.Array, num_tokens: jax.Array) -> jax.Array:
    """``[N, T]`` bool: generated positions that end a step (delimiter or EOS)."""
    real = jnp.arange(tokens.shape[1])[None] < num_tokens[:, None]
    return real & ((tokens == ar.STEP_ID) | (tokens == ar.EOS))


def full_sequence(prompts, prompt_mask, tokens, num_tokens):
    """Prompt + generated tokens ``[N, P + T]`` with their mask."""
    gen_mask = jnp.arange(tokens.shape[1])[None] < num_tokens[:, None]
    seq = jnp.concatenate([prompts, tokens], axis=1)
    return seq, jnp.concatenate([prompt_mask.astype(bool), gen_mask], axis=1)


def learned_scores(
    model: Transformer, params: Any, prompts, prompt_mask, tokens, num_tokens, channel: int
) -> jax.Array:
    """The learned model's probabilities ``[N, T]`` at every generated position.

    One forward pass over prompt + trace (the PRM sees whole prefixes: its
    causal attention makes position ``t``'s score a function of the prefix).
    """
    seq, mask = full_sequence(prompts, prompt_mask, tokens, num_tokens)
    out = model.apply(params, seq, mask)[:, prompts.shape[1] :, channel]
    return jax.nn.sigmoid(out)


def oracle_scores(tokens: jax.Array, num_tokens: jax.Array, solutions: jax.Array) -> jax.Array:
    """The exact PRM: ``[N, T]`` 1.0 where the prefix up to and including ``t`` is correct.

    Args:
        tokens: ``[N, T]`` generated tokens.
        num_tokens: ``[N]`` valid tokens per row.
        solutions: ``[N, S]`` the correct solutions (with EOS, right-padded).
    """
    t = tokens.shape[1]
    s = solutions.shape[1]
    sol = (
        solutions[:, :t] if s >= t else jnp.pad(solutions, ((0, 0), (0, t - s)), constant_values=-1)
    )
    match = (tokens == sol) | (jnp.arange(t)[None] >= num_tokens[:, None])
    return jnp.cumprod(match.astype(jnp.float32), axis=1)


def oracle_outcome(tokens: jax.Array, answers: jax.Array) -> jax.Array:
    """The exact ORM: ``[N]`` 1.0 when the extracted answer equals ``answers``."""
    return (ar.extract_answer_jax(tokens) == answers).astype(jnp.float32)


def labels(tokens: np.ndarray, num_tokens: np.ndarray, solutions: np.ndarray, answers: np.ndarray):
    """Training labels for the reward model from the exact checker.

    Returns:
        ``(labels [N, T, 2], label_mask [N, T, 2])``: the PRM channel is
        labelled at every step delimiter and EOS with prefix correctness; the
        ORM channel at the last generated token with answer correctness.
    """
    tokens, num_tokens = jnp.asarray(tokens), jnp.asarray(num_tokens)
    proc = oracle_scores(tokens, num_tokens, jnp.asarray(solutions))
    scored = scored_positions(tokens, num_tokens)
    outc = oracle_outcome(tokens, jnp.asarray(answers))
    last = jnp.arange(tokens.shape[1])[None] == (num_tokens - 1)[:, None]
    lab = jnp.stack([proc, jnp.broadcast_to(outc[:, None], proc.shape)], -1)
    msk = jnp.stack([scored, last & (num_tokens > 0)[:, None]], -1).astype(jnp.float32)
    return np.asarray(lab), np.asarray(msk)


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count 1/2); NaN with one class only."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    ranks_sorted = np.arange(1, len(allv) + 1, dtype=np.float64)
    # average ranks over ties
    _, start, counts = np.unique(allv, return_index=True, return_counts=True)
    for st, c in zip(start, counts, strict=True):
        ranks_sorted[st : st + c] = st + (c + 1) / 2
    ranks[order] = ranks_sorted
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def last_step_score(scores: jax.Array, tokens: jax.Array, num_tokens: jax.Array) -> jax.Array:
    """``[N]`` the score at each row's last scored position (its last step delimiter or
    EOS); 1.0 for a row with no completed step yet (nothing is wrong so far)."""
    scored = scored_positions(tokens, num_tokens)
    pos = jnp.arange(tokens.shape[1])[None]
    last = jnp.max(jnp.where(scored, pos, -1), axis=1)
    got = jnp.take_along_axis(scores, jnp.maximum(last, 0)[:, None], axis=1)[:, 0]
    return jnp.where(last >= 0, got, 1.0).astype(jnp.float32)


def learned_prm_fn(model: Transformer, params: Any, prompts, prompt_mask=None):
    """The learned PRM as a step-search ``prm_fn(state, prompt_index) -> [R]``.

    Scores each row's whole prefix (prompt ``prompt_index[r]`` + generated tokens) with
    one forward pass and returns the PRM channel at its last completed step.

    Args:
        model, params: the reward model (``reward_model``) and its parameters.
        prompts: ``[B, P]`` the prompts the rows continue (left-padded).
        prompt_mask: ``[B, P]`` (default: ``prompts != PAD``).
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    mask = prompts != ar.PAD if prompt_mask is None else jnp.asarray(prompt_mask, bool)

    def prm_fn(state, prompt_index):
        s = learned_scores(model, params, prompts[prompt_index], mask[prompt_index],
                           state.tokens, state.num_tokens, PROCESS)  # fmt: skip
        return last_step_score(s, state.tokens, state.num_tokens)

    return prm_fn


def oracle_prm_fn(solutions):
    """The exact PRM as a step-search ``prm_fn``: 1.0 while the prefix matches the
    solution of its prompt (``solutions [B, S]``, with EOS, right-padded), else 0.0."""
    solutions = jnp.asarray(solutions, jnp.int32)

    def prm_fn(state, prompt_index):
        s = oracle_scores(state.tokens, state.num_tokens, solutions[prompt_index])
        return last_step_score(s, state.tokens, state.num_tokens)

    return prm_fn
