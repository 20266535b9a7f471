"""Step-level plumbing shared by the language-model searches (beam, DVTS, particle
filtering, particle Gibbs, SMC steering, MCTS).

A *step* is the text up to and including the step delimiter (or EOS). Every
step-level search repeats: extend each live row of a population by one step
(``extend``), score each row's whole prefix with a process reward model, and
select / resample / expand rows. This module holds the parts they share:

- ``StepConfig``: the static decoding settings (hashable, so a search can be a
  static ``jit`` argument);
- the PRM protocol: ``prm_fn(state, prompt_index) -> [R]`` scores in ``[0, 1]``
  of each row's current prefix (the prompt is known to the closure through
  ``prompt_index``, the prompt each row continues; rows keep their prompt under
  resampling because selection never crosses prompts). Scores are never
  clipped into range: a concrete score outside ``[0, 1]`` is a ValueError; under
  ``jit`` (every search's round loop) it is counted (``Ledger.num_bad``, the
  searches' ``trace["num_bad_scores"]``) and treated as NaN. A NaN score is
  counted (``trace["num_nan_scores"]``) and is the worst score: never chosen by
  a best-of / beam selection, resampling weight 0;
- ``start`` (prefill each prompt once, copy its cache to its rows) and
  ``extend`` (one step for every live row, then one PRM call per row that
  moved), with the spent tokens / PRM calls counted;
- ``LMSearchInfo`` and ``LMSearchResult``, the return types of every search;
- ``group_take``: gather rows within prompt groups (the population of prompt
  ``b`` lives at rows ``b * n .. b * n + n - 1``) with one ``particles.take``
  over tokens, logits and the KV cache.

Budgets are counted as the papers count them: sequences (rows), generated
tokens, PRM calls (one per row scored per step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, particles
from inferax.search import core
from inferax.search.lm import decoding as dec

PRMFn = Callable[[dec.DecodeState, jax.Array], jax.Array]

if not hasattr(core.Budget, "__inferax_static__"):
    # A Budget rides in LMSearchInfo (returned from jit): a static pytree node, no leaves.
    jax.tree_util.register_static(core.Budget)
    core.Budget.__inferax_static__ = True


class StepConfig(NamedTuple):
    """Static decoding settings of a step-level search.

    Attributes:
        eos_id: end-of-sequence token (a row that emits it is finished).
        step_id: the step delimiter.
        max_new_tokens: capacity of generated tokens per row.
        max_steps: the most steps (search rounds) a search runs.
        temperature: the LM's sampling temperature (0: greedy).
        top_k: keep the ``top_k`` most likely tokens (None: all).
        top_p: nucleus mass (None: 1).
        logits_hook: ``hook(logits [R, V], state) -> logits`` (constraints).
        pad_id: written in unused positions.
        runtime_checks: turn what can only be seen at run time into ``checkify``
            errors (the caller runs the search under
            ``jax.experimental.checkify.checkify`` and calls ``err.throw()``):
            out-of-range ids of prompts traced under ``jit`` (always counted in
            ``LMSearchInfo.bad_prompt_tokens``) and rows with non-finite
            next-token logits (always counted in ``trace["num_non_finite_logits"]``)
            in every search driven by ``driver.run``; in the SMC-based ones
            (particle filter and Gibbs, steering) also a group whose log-weights are
            all invalid (``smc.build(runtime_checks=)``). MCTS refuses it (checkify
            cannot transform its vmapped decode loops). False adds nothing to the
            program.
    """

    eos_id: int
    step_id: int
    max_new_tokens: int
    max_steps: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    logits_hook: Callable | None = None
    pad_id: int = 0
    runtime_checks: bool = False

    def checked(self) -> StepConfig:
        """Validated copy (ValueError / TypeError naming the field)."""
        if not isinstance(self.runtime_checks, bool):
            raise TypeError(
                f"config.runtime_checks: expected a Python bool, got {self.runtime_checks!r}"
            )
        _checks.positive_int(self.max_new_tokens, "max_new_tokens")
        _checks.positive_int(self.max_steps, "max_steps")
        for name in ("eos_id", "step_id", "pad_id"):
            _checks.non_negative_int(getattr(self, name), name)
        if self.eos_id == self.step_id:
            raise ValueError(f"step_id: expected a token other than eos_id, got {self.step_id}")
        return self

    def checked_for(self, lm: Any) -> StepConfig:
        """``checked()`` plus the token ids against the vocabulary ``[0, lm.vocab_size)``
        (an EOS or step delimiter outside it can never be drawn)."""
        self.checked()
        vocab = dec._check_lm(lm)
        for name in ("eos_id", "step_id", "pad_id"):
            dec.check_token_id(getattr(self, name), name, vocab)
        return self


class LMSearchInfo(NamedTuple):
    """What a language-model search spent, and a per-round trace.

    Attributes:
        sequences: rows the search ran (its population, over all prompts; int).
        generated_tokens: int32, tokens generated over all rows.
        prm_calls: int32, rows scored by the PRM (one per row per step).
        decode_steps: int32, batched ``decode_step`` calls.
        prompt_tokens: int32, prompt tokens prefilled.
        num_rounds: int32, search rounds (reasoning steps) run.
        trace: dict of per-round arrays ``[max_steps, B]`` (rounds after
            ``num_rounds`` hold their last value), documented by each search.
        tokens_per_prompt: ``[B]`` int32 generated tokens per prompt (None
            where a search does not count per prompt).
        prm_calls_per_prompt: ``[B]`` int32 PRM calls per prompt.
        budget: the ``core.Budget`` the search ran under (per prompt), or None.
        simulations_per_prompt: ``[B]`` int32 tree-search simulations (MCTS).
        bad_prompt_tokens: int32 prompt ids outside ``[0, lm.vocab_size)`` at
            unmasked positions (``decoding.start``). Concrete prompts with such ids
            are refused before tracing; prompts traced under ``jit`` are counted
            here (the model's output for them is garbage), and
            ``config.runtime_checks`` makes them a ``checkify`` error.
    """

    sequences: int
    generated_tokens: jax.Array
    prm_calls: jax.Array
    decode_steps: jax.Array
    prompt_tokens: jax.Array
    num_rounds: jax.Array
    trace: dict
    tokens_per_prompt: jax.Array | None = None
    prm_calls_per_prompt: jax.Array | None = None
    budget: Any = None
    simulations_per_prompt: jax.Array | None = None
    bad_prompt_tokens: jax.Array | None = None

    def spent(self) -> dict[str, jax.Array]:
        """Per-prompt spending ``[B]`` int32 in every unit counted: ``"sequences"``,
        ``"tokens"``, ``"prm_calls"`` (and ``"simulations"`` where counted).

        Raises:
            ValueError: if the search did not count per prompt.
        """
        if self.tokens_per_prompt is None or self.prm_calls_per_prompt is None:
            raise ValueError("info: expected per-prompt counters (tokens_per_prompt), got None")
        b = self.tokens_per_prompt.shape[0]
        out = {
            "sequences": jnp.full((b,), self.sequences // b, jnp.int32),
            "tokens": self.tokens_per_prompt,
            "prm_calls": self.prm_calls_per_prompt,
        }
        if self.simulations_per_prompt is not None:
            out["simulations"] = self.simulations_per_prompt
        return out


class LMSearchResult(NamedTuple):
    """The candidates a search ends with, per prompt, and its choice.

    Attributes:
        tokens: ``[B, K, T]`` generated tokens of the ``K`` final candidates.
        num_tokens: ``[B, K]``.
        finished: ``[B, K]`` bool (EOS generated).
        scores: ``[B, K]`` the candidates' final PRM scores.
        weights: ``[B, K]`` normalised weights (uniform for deterministic
            searches), for weighted voting.
        choice: ``[B]`` int32 index of the chosen candidate.
    """

    tokens: jax.Array
    num_tokens: jax.Array
    finished: jax.Array
    scores: jax.Array
    weights: jax.Array
    choice: jax.Array

    def chosen_tokens(self) -> jax.Array:
        """``[B, T]`` the chosen candidate of every prompt."""
        return jnp.take_along_axis(self.tokens, self.choice[:, None, None], axis=1)[:, 0]


def check_budget(
    budget: Any, method: str, *, config: Any, sequences_per_row: int = 1
) -> tuple[core.Budget, int]:
    """The shared budget check of every LM search (budgets are per prompt).

    Args:
        budget: a ``core.Budget`` or a positive int (read as ``sequences``).
        method: the search's name (for messages).
        config: the search's ``StepConfig`` (checked here).
        sequences_per_row: sequences one population row costs over the whole
            run (e.g. particle Gibbs' iterations): the population per prompt is
            ``budget.sequences // sequences_per_row``.

    Returns:
        ``(budget, population per prompt)``.

    Raises:
        TypeError: naming ``config`` (not a ``StepConfig``) or ``budget`` (not a
            budget or an int).
        ValueError: naming ``budget`` (no sequences, or fewer than
            ``sequences_per_row``) or a ``config`` field out of range.
    """
    if not isinstance(config, StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    config.checked()
    budget = core.as_budget(budget, "sequences")
    seqs = budget.require("sequences", method)
    n = seqs // sequences_per_row
    if n < 1:
        raise ValueError(
            f"budget: {method} needs budget.sequences >= {sequences_per_row} (one row per "
            f"iteration), got {seqs}"
        )
    return budget, n


def plan(
    budget: Any,
    method: str,
    *,
    config: StepConfig,
    sequences_per_row: int = 1,
    rows_per_sequence: int = 1,
    **_options,
) -> dict[str, int]:
    """What a budget buys an LM search (static): its population per prompt and the most it
    can spend per prompt in every unit.

    A row decoding round ``r`` already holds at least ``r`` tokens (each earlier step
    took one or more), so ``rows`` rows generate at most
    ``rows * sum_r max(max_new_tokens - r, 0)`` tokens over ``max_steps`` rounds —
    ``rows * max_new_tokens`` is no bound once resampling or selection copies a longer
    row over a shorter one — and make at most ``rows * max_steps`` PRM calls; both are
    capped by the budget.

    Args:
        budget: ``core.Budget`` or an int (sequences).
        method: the search's name, for messages.
        config: the ``StepConfig``.
        sequences_per_row: sequences one population row stands for (particle Gibbs'
            sweeps).
        rows_per_sequence: rows decoded per sequence each round (steering's expansion).
    """
    budget, n = check_budget(budget, method, config=config, sequences_per_row=sequences_per_row)
    rows = n * sequences_per_row
    decoded = rows * rows_per_sequence
    cap, t = config.max_new_tokens, config.max_steps
    tok = decoded * sum(max(cap - r, 0) for r in range(t))
    prm = decoded * t
    return {
        "population": n,
        "sequences": rows,
        "tokens": tok if budget.tokens is None else min(tok, budget.tokens),
        "prm_calls": prm if budget.prm_calls is None else min(prm, budget.prm_calls),
    }


UNCAPPED = 2**30


class Ledger(NamedTuple):
    """Run-time counters of an LM search, per prompt (what the budget caps).

    Attributes:
        tokens: ``[B]`` int32 generated tokens.
        prm_calls: ``[B]`` int32 PRM calls (rows scored).
        decode_steps: int32 batched ``decode_step`` calls.
        num_nan: int32 scores that were NaN.
        out_of_budget: ``[B]`` int32 rows stopped because a cap was reached.
        num_bad: int32 scores outside ``[0, 1]`` (not NaN), treated as NaN. A ledger
            built with five fields (a search that scores rows itself) has it 0.
        non_finite_logits: ``[B]`` int32 rows whose next-token logits held a NaN/inf
            after a step (``non_finite_logits``), summed over the steps; the round
            driver reports it per round (``trace["num_non_finite_logits"]``). None
            in a ledger built without it (then nothing is counted).
    """

    tokens: jax.Array
    prm_calls: jax.Array
    decode_steps: jax.Array
    num_nan: jax.Array
    out_of_budget: jax.Array
    num_bad: jax.Array = np.zeros((), np.int32)
    non_finite_logits: jax.Array | None = None

    @staticmethod
    def zeros(num_prompts: int) -> Ledger:
        """A ledger of zeros for ``num_prompts`` prompts (every counter present)."""
        z = jnp.zeros((num_prompts,), jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        return Ledger(z, z, zero, zero, z, zero, z)

    def left(self, budget: core.Budget | None) -> tuple[jax.Array, jax.Array]:
        """``[B]`` tokens and PRM calls each prompt may still spend (``UNCAPPED`` if no cap)."""
        tok = getattr(budget, "tokens", None)
        prm = getattr(budget, "prm_calls", None)
        return (
            jnp.maximum(tok - self.tokens, 0) if tok is not None else self.tokens * 0 + UNCAPPED,
            jnp.maximum(prm - self.prm_calls, 0) if prm is not None else self.tokens * 0 + UNCAPPED,
        )


def non_finite_logits(logits: jax.Array) -> jax.Array:
    """``[R]`` bool: the rows of ``logits [R, V]`` (a population's next-token logits, the
    model's output) that hold a NaN or an infinity.

    The one count of non-finite model outputs of every step-level LM search (beam,
    DVTS, REBASE through ``extend``; steering; MCTS per expanded node; the SMC-based
    ones also through ``smc.build(check_finite=particle.FINITE_LEAVES)``). Any
    non-finite logit counts, ``-inf`` included: constraints belong in
    ``StepConfig.logits_hook``, which is applied after the count. The KV cache is not
    looked at (a NaN in it that can affect generation reaches the row's logits).
    """
    return dec.non_finite_rows(logits)


def check_finite_logits(num_non_finite: jax.Array, runtime_checks: bool) -> None:
    """With ``runtime_checks``, a ``checkify`` error if ``num_non_finite`` (the count of
    ``non_finite_logits`` rows, any shape) is not all zero; else nothing is added
    (``decoding.check_finite_logits`` for the row-steps of ``trace``)."""
    dec.check_finite_logits(num_non_finite, runtime_checks)


def check_prm(prm_fn: Any, name: str = "prm_fn") -> PRMFn:
    if not callable(prm_fn):
        raise TypeError(f"{name}: expected a callable (state, prompt_index) -> [R], got {prm_fn!r}")
    return prm_fn


def start(
    lm: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array | None,
    rows_per_prompt: int,
    cfg: StepConfig,
) -> tuple[dec.DecodeState, jax.Array, dec.DecodeInfo]:
    """Prefills every prompt once and copies it to ``rows_per_prompt`` rows.

    The one entry of every step-level search's prompts: concrete out-of-range
    prompt ids are refused here, traced ones counted in ``info.bad_prompt_tokens``
    (and a ``checkify`` error with ``cfg.runtime_checks``; ``decoding.start``).

    Returns:
        ``(state [B * n rows], prompt_index [B * n], info)``; row ``b * n + j``
            continues prompt ``b``.
    """
    if not isinstance(cfg, StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(cfg).__name__}")
    cfg.checked_for(lm)
    state, info = dec.start(
        lm, prompts, prompt_mask, num_samples=rows_per_prompt,
        max_new_tokens=cfg.max_new_tokens, runtime_checks=cfg.runtime_checks,
    )  # fmt: skip
    b = jnp.shape(prompts)[0]
    return state, jnp.repeat(jnp.arange(b, dtype=jnp.int32), rows_per_prompt), info


def raw_scores(
    prm_fn: PRMFn, state: dec.DecodeState, prompt_index: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``prm_fn`` on every row: ``(scores, bad)``, float32 ``[R]`` scores with those
    outside ``[0, 1]`` replaced by NaN, and ``bad [R]`` marking them.

    Raises:
        ValueError: for scores of the wrong shape, or (scores known at trace time,
            i.e. outside ``jit``) a score outside ``[0, 1]``. NaN is kept (callers
            count it and treat it as the worst score).
    """
    r = jnp.asarray(prm_fn(state, prompt_index))
    if r.shape != prompt_index.shape:
        raise ValueError(f"prm_fn: expected scores of shape {prompt_index.shape}, got {r.shape}")
    if not jnp.issubdtype(r.dtype, jnp.floating) and not jnp.issubdtype(r.dtype, jnp.integer):
        raise TypeError(f"prm_fn: expected real scores in [0, 1], got dtype {r.dtype}")
    r = r.astype(jnp.float32)
    concrete = _checks.concrete_value(r)
    if concrete is not None:
        out = (concrete < 0) | (concrete > 1)
        if out.any():
            i = int(np.argmax(out))
            raise ValueError(
                f"prm_fn: expected scores in [0, 1] (or NaN), got {int(out.sum())} outside "
                f"(the first {float(concrete[i])} for row {i})"
            )
    bad = (r < 0) | (r > 1)
    return jnp.where(bad, jnp.nan, r), bad


def scores_of(prm_fn: PRMFn, state: dec.DecodeState, prompt_index: jax.Array) -> jax.Array:
    """``prm_fn`` on every row as float32 ``[R]`` (``raw_scores``: shape checked, a score
    outside ``[0, 1]`` an error when concrete and NaN under ``jit``; NaN is kept)."""
    return raw_scores(prm_fn, state, prompt_index)[0]


class StepOut(NamedTuple):
    """One ``extend``: which rows moved and what it cost."""

    moved: jax.Array  # [R] bool: the row generated at least one token this step
    generated_tokens: jax.Array
    decode_steps: jax.Array
    prm_calls: jax.Array
    ledger: Ledger | None = None  # the updated per-prompt ledger (``extend(..., ledger=)``)


def extend(
    key: jax.Array,
    lm: Any,
    state: dec.DecodeState,
    prompt_index: jax.Array,
    prm_fn: PRMFn,
    old_scores: jax.Array,
    cfg: StepConfig,
    *,
    first_index: int = 0,
    ledger: Ledger | None = None,
    budget: core.Budget | None = None,
) -> tuple[dec.DecodeState, jax.Array, StepOut]:
    """Every live row generates one step; rows that moved are re-scored by the PRM.

    Rows that are finished (or full) keep their tokens and their old score;
    the PRM is called on the whole population (fixed shapes) but only rows
    that moved are counted as PRM calls.

    With a ``ledger`` (per-prompt counters) the ``budget``'s caps are enforced
    per prompt: a prompt group runs this step only if every live row of it can
    be scored within its PRM calls left (else its live rows are finished, out
    of budget), and decodes only while its token cap allows
    (``decoding.generate(tokens_left=...)``). The ledger is updated.

    Scores outside ``[0, 1]`` are an error when concrete (``raw_scores``); under
    ``jit`` they become NaN and are counted in ``ledger.num_bad`` (NaN scores in
    ``ledger.num_nan``). Rows whose next-token logits hold a NaN/inf after the step
    (every row, moved or not: ``non_finite_logits``) are counted per prompt in
    ``ledger.non_finite_logits``.

    Returns:
        ``(state, scores [R], StepOut)``.
    """
    before = state.num_tokens
    caps: dict = {}
    if ledger is not None:
        b = ledger.tokens.shape[0]
        tok_left, prm_left = ledger.left(budget)
        live = jax.ops.segment_sum((~state.finished).astype(jnp.int32), prompt_index, b)
        cut = ~state.finished & (live > prm_left)[prompt_index]
        state = state._replace(finished=state.finished | cut)
        caps = {"group_index": prompt_index, "tokens_left": tok_left}
    state, info = dec.generate(
        key, lm, state, eos_id=cfg.eos_id, step_id=cfg.step_id, until="step",
        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        logits_hook=cfg.logits_hook, pad_id=cfg.pad_id, first_index=first_index, **caps,
    )  # fmt: skip
    moved = state.num_tokens > before
    new, bad = raw_scores(prm_fn, state, prompt_index)
    scores = jnp.where(moved, new, old_scores)
    calls = jnp.sum(moved, dtype=jnp.int32)
    if ledger is not None:
        per_prompt = functools.partial(
            jax.ops.segment_sum, segment_ids=prompt_index, num_segments=b
        )
        stopped = per_prompt((cut | info.out_of_budget).astype(jnp.int32))
        ledger = Ledger(
            ledger.tokens + info.tokens_per_group,
            ledger.prm_calls + per_prompt(moved.astype(jnp.int32)),
            ledger.decode_steps + info.decode_steps,
            ledger.num_nan + jnp.sum(moved & jnp.isnan(new) & ~bad, dtype=jnp.int32),
            ledger.out_of_budget + stopped,
            ledger.num_bad + jnp.sum(moved & bad, dtype=jnp.int32),
            None
            if ledger.non_finite_logits is None
            else ledger.non_finite_logits
            + per_prompt(non_finite_logits(state.logits).astype(jnp.int32)),
        )
    return state, scores, StepOut(moved, info.generated_tokens, info.decode_steps, calls, ledger)


def group_take(tree: Any, local: jax.Array, axes: Any, group_size: int) -> Any:
    """Gathers rows within prompt groups.

    Args:
        tree: a population pytree with ``B * group_size`` rows (``axes`` as in
            ``particles.take``: e.g. ``decoding.state_axes(lm)``).
        local: ``[B, K]`` indices in ``[0, group_size)``: row ``k`` of the result's
            group ``b`` is the group's row ``local[b, k]``.
        group_size: rows per group in ``tree``.

    Returns:
        the ``B * K`` gathered rows (group-major), with one ``take`` per leaf.
    """
    b = local.shape[0]
    rows = (jnp.arange(b, dtype=jnp.int32)[:, None] * group_size + local).reshape(-1)
    return particles.take(tree, rows, particles.leaf_axes(axes, tree, "tree"))


def grouped(x: jax.Array, group_size: int) -> jax.Array:
    """``[B * n, ...] -> [B, n, ...]``."""
    return x.reshape((-1, group_size) + x.shape[1:])


def round_keys(key: jax.Array, i: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two keys for search round ``i`` (generation, selection), by ``fold_in``."""
    k = jax.random.fold_in(key, i)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1)


def resample_prob_logits(scores: jax.Array, tau: float = 1.0, eps: float = 1e-6) -> jax.Array:
    """``logit(r) / tau`` with ``r`` clipped to ``[eps, 1 - eps]`` (Puri et al. 2025: resampling
    probabilities ``softmax(logit(r) / tau)``, i.e. proportional to ``(r / (1 - r))^(1/tau)``).

    NaN scores map to ``-inf`` (never chosen). The clip only guards the logit of the
    end points 0 and 1: scores outside ``[0, 1]`` never get here (``raw_scores``
    refuses them, or makes them NaN under ``jit``)."""
    r = jnp.clip(scores, eps, 1.0 - eps)
    out = (jnp.log(r) - jnp.log1p(-r)) / tau
    return jnp.where(jnp.isnan(scores), -jnp.inf, out)
