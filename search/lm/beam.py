"""Beam search and diverse verifier tree search (DVTS) over reasoning steps with a PRM.

As search-and-learn runs them (Beeching et al. 2024; REFERENCES section 5), with
``N`` beams of width ``M`` per prompt:

- **Beam search**: every active beam samples one step; the PRM scores each
  new prefix; beams that finished (EOS, or a full row) leave the pool for the
  completed set; of the others the top ``N / M`` by score survive, and each
  survivor is copied ``M`` times (fewer survivors are cycled to fill the ``N``
  rows). A prompt stops when ``N`` beams have completed or none is active;
  the search stops after ``config.max_steps`` rounds. The candidates are the
  ``N`` best completed beams (topped up with the best active ones when fewer
  completed); the answer is the best finished candidate by its last score.
- **DVTS**: ``N / M`` independent subtrees per prompt; each round every
  subtree samples ``M`` candidate next steps from its current prefix and keeps
  the best (greedy on the PRM); a subtree stops when its kept prefix is
  finished. The candidates are the ``N / M`` subtree leaves.

Both are policies of the round driver (``inferax.search.lm.driver``), which
owns the loop, the per-prompt counters and the budget caps. The budget is per
prompt: ``budget.sequences`` is ``N`` (rounded down to a multiple of ``M``);
``budget.tokens`` and ``budget.prm_calls`` are caps enforced at run time (a
prompt's rows that cannot continue within them finish out of budget, and count
as candidates with ``finished`` False). ``plan`` states what a budget buys.

Selection gathers the survivors' tokens, logits and KV-cache rows with one
``take`` within each prompt's rows (``steps.group_take``); no prefix is
recomputed. Scores are the PRM score of the whole prefix (search-and-learn's
"last" aggregation). Both methods are deterministic given the samples, so the
candidates' weights are uniform.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import driver, steps

__all__ = [
    "BeamState",
    "beam_init",
    "beam_policy",
    "beam_search",
    "beam_step",
    "dvts",
    "dvts_policy",
    "plan",
    "rounds_plan",
]


def rounds_plan(budget, method: str, *, config: steps.StepConfig, rows_per_sequence: int = 1,
                sequences_per_row: int = 1) -> dict:  # fmt: skip
    """``steps.plan`` (the bound for searches that select rows every round)."""
    return steps.plan(budget, method, config=config, rows_per_sequence=rows_per_sequence,
                      sequences_per_row=sequences_per_row)  # fmt: skip


def plan(budget, *, config: steps.StepConfig, beam_width: int = 4, method="beam_search") -> dict:
    """What ``budget`` buys beam search or DVTS with width ``beam_width`` (static).

    Returns:
        ``{"population": N, "sequences": N, "tokens": .., "prm_calls": ..}``: ``N``
            (beams per prompt) is ``budget.sequences`` rounded down to a multiple of
            ``M = beam_width``; ``tokens`` / ``prm_calls`` the most a prompt can spend.

    Raises:
        ValueError: naming ``budget`` (no sequences, or fewer than ``beam_width``),
            ``beam_width`` or ``config``.
    """
    m = _checks.positive_int(beam_width, "beam_width")
    budget = core.as_budget(budget, "sequences")
    seqs = budget.require("sequences", method)
    if seqs < m:
        raise ValueError(f"budget: {method} needs budget.sequences >= beam_width = {m}, got {seqs}")
    n = seqs - seqs % m
    return rounds_plan(dataclasses.replace(budget, sequences=n), method, config=config)


class BeamState(NamedTuple):
    """Beam search over ``B`` prompts with ``N`` beams each.

    Attributes:
        pool: ``DecodeState`` of the ``B N`` active rows.
        score: ``[B N]`` PRM score of each active row.
        live: ``[B]`` the prompt still searches (has active beams, fewer than N completed).
        done_tokens, done_num, done_score, done_finished: ``[B, N, ...]`` the
            completed beams (best first).
        done_valid: ``[B, N]`` which completed slots are filled.
    """

    pool: dec.DecodeState
    score: jax.Array
    live: jax.Array
    done_tokens: jax.Array
    done_num: jax.Array
    done_score: jax.Array
    done_finished: jax.Array
    done_valid: jax.Array


def _key_of(score, valid):
    """Sort key: valid entries by score (NaN lowest), invalid ones last."""
    s = jnp.where(jnp.isnan(score), -1.0, score)
    return jnp.where(valid, s, -2.0)


def _ended(state: dec.DecodeState, config) -> jax.Array:
    """``[R]`` rows that really ended (EOS or full), not stopped by a budget cap."""
    cap = state.tokens.shape[1]
    return (dec.last_token(state, config.pad_id) == config.eos_id) | (state.num_tokens >= cap)


def _init_state(pool: dec.DecodeState, b: int, n: int) -> BeamState:
    t = pool.tokens.shape[1]
    return BeamState(
        pool=pool,
        score=jnp.full((b * n,), 0.5, jnp.float32),
        live=jnp.ones((b,), bool),
        done_tokens=jnp.zeros((b, n, t), jnp.int32),
        done_num=jnp.zeros((b, n), jnp.int32),
        done_score=jnp.zeros((b, n), jnp.float32),
        done_finished=jnp.zeros((b, n), bool),
        done_valid=jnp.zeros((b, n), bool),
    )


def beam_init(lm, prompts, prompt_mask, num_beams: int, config) -> tuple[BeamState, jax.Array, Any]:
    """Prefills each prompt and copies it to ``num_beams`` rows. Returns
    ``(state, prompt_index, decode info)``."""
    pool, prompt_index, info = steps.start(lm, prompts, prompt_mask, num_beams, config)
    return _init_state(pool, jnp.shape(prompts)[0], num_beams), prompt_index, info


def _hold(state: BeamState, n: int) -> dec.DecodeState:
    """The pool with the rows of stopped prompts marked finished (never extended)."""
    return state.pool._replace(finished=state.pool.finished | jnp.repeat(~state.live, n))


def _select(lm, state: BeamState, pool, score, moved, n: int, m: int, config) -> BeamState:
    """Beam selection after a round's extend (module docstring)."""
    ended = moved & pool.finished  # these leave the pool for the completed set
    active = moved & ~pool.finished
    g = steps.grouped
    cand = [
        jnp.concatenate([a, g(x, n)], axis=1)
        for a, x in zip(
            (state.done_tokens, state.done_num, state.done_score, state.done_finished),
            (pool.tokens, pool.num_tokens, score, _ended(pool, config)),
            strict=True,
        )
    ]
    cand_valid = jnp.concatenate([state.done_valid, g(ended, n)], axis=1)
    _, top = jax.lax.top_k(_key_of(cand[2], cand_valid), n)
    done = [_pick(a, top) for a in (*cand, cand_valid)]
    # Survivors: the top N / M active beams, each copied M times (cycled when fewer).
    act = g(active, n)
    _, best = jax.lax.top_k(_key_of(g(score, n), act), n // m)
    num_surv = jnp.minimum(jnp.sum(act, axis=1), n // m)
    local = jnp.take_along_axis(
        best, jnp.arange(n)[None] % jnp.maximum(num_surv, 1)[:, None], axis=1
    ).astype(jnp.int32)
    pool, score = steps.group_take((pool, score), local, (dec.state_axes(lm), 0), n)
    live = state.live & (num_surv > 0) & (jnp.sum(done[4], axis=1) < n)
    return BeamState(pool, score, live, *done)


def _pick(a, top):
    return jnp.take_along_axis(a, top.reshape(top.shape + (1,) * (a.ndim - 2)), axis=1)


def beam_step(
    key, lm, prm_fn, state: BeamState, prompt_index, config, num_beams: int, beam_width: int
) -> tuple[BeamState, steps.StepOut]:
    """One uncapped round of beam search outside the driver (extend, then select)."""
    pool, score, out = steps.extend(
        key, lm, _hold(state, num_beams), prompt_index, prm_fn, state.score, config
    )
    return _select(lm, state, pool, score, out.moved, num_beams, beam_width, config), out


def _choice(finished, scores):
    key = jnp.where(jnp.isnan(scores), -1.0, scores) + jnp.where(finished, 2.0, 0.0)
    return jnp.argmax(key, axis=1).astype(jnp.int32)


def beam_policy(lm, n: int, m: int, config: steps.StepConfig) -> driver.Policy:
    """Beam search (``N`` beams of width ``M`` per prompt) as a ``driver.Policy``.

    Trace (``[max_steps, B]``): ``num_completed``, ``live``, ``best_score`` (best
    completed score so far, -1 if none)."""

    def init(start: driver.Start) -> BeamState:
        return _init_state(start.state, start.num_prompts, n)

    def step(key, st: BeamState, rnd: driver.Round):
        pool, score, out = rnd.extend(key, _hold(st, n), st.score)
        st = _select(lm, st, pool, score, out.moved, n, m, config)
        best = jnp.max(jnp.where(st.done_valid, st.done_score, -1.0), axis=1)
        trace = {
            "num_completed": jnp.sum(st.done_valid, axis=1, dtype=jnp.int32),
            "live": st.live,
            "best_score": best,
        }
        return st, out.ledger, trace

    def finish(st: BeamState) -> steps.LMSearchResult:
        """Candidates: completed beams first, topped up with the best active ones."""
        g = steps.grouped
        b = st.live.shape[0]
        act = g(~st.pool.finished, n)  # survivors' copies of prompts that ran out of rounds
        cand = [
            jnp.concatenate([st.done_tokens, g(st.pool.tokens, n)], axis=1),
            jnp.concatenate([st.done_num, g(st.pool.num_tokens, n)], axis=1),
            jnp.concatenate([st.done_score, g(st.score, n)], axis=1),
            jnp.concatenate([st.done_finished, g(_ended(st.pool, config), n)], axis=1),
        ]
        key_ = jnp.concatenate(
            [_key_of(st.done_score, st.done_valid) + 2.0, _key_of(g(st.score, n), act)], axis=1
        )
        _, top = jax.lax.top_k(key_, n)
        tok, num, sc, fin = (_pick(a, top) for a in cand)
        w = jnp.full((b, n), 1.0 / n, jnp.float32)
        return steps.LMSearchResult(tok, num, fin, sc, w, _choice(fin, sc))

    axes = BeamState(dec.state_axes(lm), 0, None, None, None, None, None, None)
    return driver.Policy(init, step, finish, lambda st: _hold(st, n), axes)


def dvts_policy(lm, n: int, m: int, config: steps.StepConfig) -> driver.Policy:
    """DVTS (``N / M`` subtrees of width ``M`` per prompt) as a ``driver.Policy``.

    Trace (``[max_steps, B]``): ``num_subtrees_finished``, ``mean_score`` /
    ``max_score`` of the kept prefixes."""
    s = n // m
    axes = (dec.state_axes(lm), 0)

    def init(start: driver.Start):
        return start.state, jnp.full((start.num_prompts * n,), 0.5, jnp.float32)

    def step(key, carry, rnd: driver.Round):
        pool, score, out = rnd.extend(key, *carry)
        b = score.shape[0] // n
        best = jnp.argmax(_key_of(score, True).reshape(b * s, m), axis=1).astype(jnp.int32)
        local = jnp.broadcast_to(best[:, None], (b * s, m))  # the subtree's best, M times
        pool, score = steps.group_take((pool, score), local, axes, m)
        leaf = score.reshape(b, s, m)[:, :, 0]
        trace = {
            "num_subtrees_finished": jnp.sum(
                pool.finished.reshape(b, s, m)[:, :, 0], axis=1, dtype=jnp.int32
            ),
            "mean_score": jnp.mean(leaf, axis=1),
            "max_score": jnp.max(leaf, axis=1),
        }
        return (pool, score), out.ledger, trace

    def finish(carry) -> steps.LMSearchResult:
        pool, score = carry
        b = score.shape[0] // n
        first = jnp.arange(b * s) * m  # row 0 of every subtree

        def leaves(a):
            return a[first].reshape((b, s) + a.shape[1:])

        tok, num, sc = (leaves(a) for a in (pool.tokens, pool.num_tokens, score))
        fin = leaves(_ended(pool, config))
        w = jnp.full((b, s), 1.0 / s, jnp.float32)
        return steps.LMSearchResult(tok, num, fin, sc, w, _choice(fin, sc))

    return driver.Policy(init, step, finish, lambda c: c[0], axes)


def _run(name, make_policy, key, lm, prm_fn, budget, prompts, prompt_mask, config, m, mesh):
    """Plans the budget, runs the policy on the driver, returns ``(result, info)``."""
    n = plan(budget, config=config, beam_width=m, method=name)["sequences"]
    budget = core.as_budget(budget, "sequences")
    return driver.search_prompts(
        key, lambda: make_policy(lm, n, m, config), lm=lm, prm_fn=prm_fn, prompts=prompts,
        prompt_mask=prompt_mask, rows_per_prompt=n, config=config, budget=budget, mesh=mesh,
    )  # fmt: skip


def beam_search(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    beam_width: int = 4,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Beam search with a PRM (search-and-learn, Beeching et al. 2024; module docstring).

    Args:
        key: PRNG key (round ``i`` samples with ``fold_in(key, i)``).
        lm: the decoding protocol (``inferax.search.lm.decoding``).
        prm_fn: the PRM ``(state, prompt_index) -> [R]``, scores in [0, 1].
        budget: per prompt (``core.Budget`` or an int = sequences):
            ``budget.sequences`` beams ``N`` (rounded down to a multiple of
            ``beam_width``); caps ``budget.tokens`` / ``budget.prm_calls`` enforced
            at run time. ``plan`` gives what it buys.
        prompts: ``[B, P]`` left-padded prompt tokens.
        prompt_mask: ``[B, P]`` bool, the real prompt tokens (default: all).
        config: ``StepConfig``.
        beam_width: ``M``: the top ``N / M`` beams survive each round, ``M`` copies each.
        mesh: optional ``"particles"`` mesh to shard the ``B N`` rows over (under ``jit``).

    Returns:
        ``(LMSearchResult, LMSearchInfo)`` with ``N`` candidates per prompt
            (``finished``: EOS or a full row; False for beams stopped by a cap).
            ``trace``: ``beam_policy``'s, with the driver's ``num_finished`` and
            ``out_of_budget``. ``info.spent()``: per-prompt spending.

    Raises:
        ValueError: a budget smaller than ``beam_width`` sequences, or caps below
            one token / PRM call per beam (naming ``budget``); bad settings.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import beam
        >>> result, info = beam.beam_search(
        ...     jax.random.key(1), lm, prm_fn, 4, prompts=prompts, config=config, beam_width=2)
        >>> result.tokens.shape, result.choice.shape, info.trace["num_non_finite_logits"].shape
        ((2, 4, 4), (2,), (2, 2))
    """
    return _run("beam_search", beam_policy, key, lm, prm_fn, budget, prompts, prompt_mask,
                config, beam_width, mesh)  # fmt: skip


def dvts(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    beam_width: int = 4,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Diverse verifier tree search (search-and-learn, Beeching et al. 2024; module docstring).

    ``N / M`` subtrees per prompt (``N = budget.sequences`` rounded down to a
    multiple of ``M = beam_width``), each expanding ``M`` candidates per round
    and keeping its best (ties: the lowest row). Arguments as ``beam_search``.

    Returns:
        ``(LMSearchResult, LMSearchInfo)`` with the ``N / M`` subtree leaves per
            prompt; ``trace``: ``dvts_policy``'s and the driver's.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import beam
        >>> result, info = beam.dvts(
        ...     jax.random.key(1), lm, prm_fn, 4, prompts=prompts, config=config, beam_width=2)
        >>> result.tokens.shape, info.sequences  # N / M = 2 subtree leaves per prompt
        ((2, 2, 4), 8)
    """
    return _run("dvts", dvts_policy, key, lm, prm_fn, budget, prompts, prompt_mask, config,
                beam_width, mesh)  # fmt: skip


def _plan_dvts(budget, *, config, beam_width=4):
    return plan(budget, config=config, beam_width=beam_width, method="dvts")


core.register(
    core.SearchEntry(
        "beam_search",
        "lm",
        beam_search,
        ("sequences", "tokens", "prm_calls"),
        "argmax",
        plan,
        options={"beam_width": (2, 1)},
        reference="Beeching et al. 2024 (search-and-learn); Snell et al. 2024",
        summary="PRM beam search over reasoning steps: keep the top N / M beams, M copies each",
    )  # fmt: skip
)
core.register(
    core.SearchEntry(
        "dvts",
        "lm",
        dvts,
        ("sequences", "tokens", "prm_calls"),
        "heuristic",
        _plan_dvts,
        options={"beam_width": (2, 1)},
        reference="Beeching et al. 2024 (search-and-learn, diverse verifier tree search)",
        summary="N / M independent subtrees, each greedy on the PRM over M sampled steps",
    )  # fmt: skip
)
