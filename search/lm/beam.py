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

Selection gathers the survivors' tokens, logits and KV-cache rows with one
``take`` within each prompt's rows (``lm_steps.group_take``); no prefix is
recomputed. Scores are the PRM score of the whole prefix (search-and-learn's
"last" aggregation). Both methods are deterministic given the samples, so the
candidates' weights are uniform.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.search.lm import decoding as dec
from inferax.search.lm import particle as lp
from inferax.search.lm import steps

__all__ = ["BeamState", "beam_init", "beam_search", "beam_step", "check_beams", "dvts"]


def check_beams(num_beams, beam_width) -> tuple[int, int]:
    """Validated ``(N, M)``: ``N >= M >= 1`` and ``M`` divides ``N``."""
    n = _checks.positive_int(num_beams, "num_beams")
    m = _checks.positive_int(beam_width, "beam_width")
    if n < m:
        raise ValueError(f"num_beams: expected at least beam_width = {m} beams, got {n}")
    if n % m:
        raise ValueError(f"num_beams: expected a multiple of beam_width = {m}, got {n}")
    return n, m


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


def beam_init(lm, prompts, prompt_mask, num_beams: int, config) -> tuple[BeamState, jax.Array, Any]:
    """Prefills each prompt and copies it to ``num_beams`` rows. Returns
    ``(state, prompt_index, decode info)``."""
    pool, prompt_index, info = steps.start(lm, prompts, prompt_mask, num_beams, config)
    b, n = jnp.shape(prompts)[0], num_beams
    t = config.max_new_tokens
    state = BeamState(
        pool=pool,
        score=jnp.full((b * n,), 0.5, jnp.float32),
        live=jnp.ones((b,), bool),
        done_tokens=jnp.zeros((b, n, t), jnp.int32),
        done_num=jnp.zeros((b, n), jnp.int32),
        done_score=jnp.zeros((b, n), jnp.float32),
        done_finished=jnp.zeros((b, n), bool),
        done_valid=jnp.zeros((b, n), bool),
    )
    return state, prompt_index, info


def beam_step(
    key, lm, prm_fn, state: BeamState, prompt_index, config, num_beams: int, beam_width: int
) -> tuple[BeamState, steps.StepOut]:
    """One round of beam search (module docstring); rows of stopped prompts are held."""
    n, m = num_beams, beam_width
    live_rows = jnp.repeat(state.live, n)
    pool = state.pool._replace(finished=state.pool.finished | ~live_rows)
    pool, score, out = steps.extend(key, lm, pool, prompt_index, prm_fn, state.score, config)
    ended = out.moved & pool.finished  # these leave the pool for the completed set
    active = out.moved & ~pool.finished
    # Completed: the best N of (completed so far, just ended).
    g = steps.grouped
    cand_tok = jnp.concatenate([state.done_tokens, g(pool.tokens, n)], axis=1)
    cand_num = jnp.concatenate([state.done_num, g(pool.num_tokens, n)], axis=1)
    cand_score = jnp.concatenate([state.done_score, g(score, n)], axis=1)
    cand_fin = jnp.concatenate([state.done_finished, g(pool.finished, n)], axis=1)
    cand_valid = jnp.concatenate([state.done_valid, g(ended, n)], axis=1)
    _, top = jax.lax.top_k(_key_of(cand_score, cand_valid), n)

    def pick(a):
        idx = top.reshape(top.shape + (1,) * (a.ndim - 2))
        return jnp.take_along_axis(a, idx, axis=1)

    done = [pick(a) for a in (cand_tok, cand_num, cand_score, cand_fin, cand_valid)]
    # Survivors: the top N / M active beams, each copied M times (cycled when fewer).
    act = g(active, n)
    s_key = jnp.where(act, jnp.where(jnp.isnan(g(score, n)), -1.0, g(score, n)), -2.0)
    _, best = jax.lax.top_k(s_key, n // m)
    num_surv = jnp.minimum(jnp.sum(act, axis=1), n // m)
    local = jnp.take_along_axis(
        best, jnp.arange(n)[None] % jnp.maximum(num_surv, 1)[:, None], axis=1
    ).astype(jnp.int32)
    pool, score = steps.group_take((pool, score), local, (dec.state_axes(lm), 0), n)
    live = state.live & (num_surv > 0) & (jnp.sum(done[4], axis=1) < n)
    return BeamState(pool, score, live, *done), out


def _loop(key, step_fn, carry0, max_steps, running, trace_fn):
    """``while`` rounds remain and ``running(carry)``: ``carry = step_fn(key_i, carry, i)``."""
    trace_shape = jax.eval_shape(trace_fn, carry0)
    trace0 = jax.tree_util.tree_map(
        lambda a: jnp.zeros((max_steps, *a.shape), a.dtype), trace_shape
    )
    zero = jnp.zeros((), jnp.int32)

    def cond(c):
        i, carry, *_ = c
        return (i < max_steps) & running(carry)

    def body(c):
        i, carry, counts, trace = c
        k_gen, _ = steps.round_keys(key, i)
        carry, out = step_fn(k_gen, carry, i)
        counts = (
            counts[0] + out.generated_tokens,
            counts[1] + out.decode_steps,
            counts[2] + out.prm_calls,
        )
        trace = jax.tree_util.tree_map(lambda buf, v: buf.at[i].set(v), trace, trace_fn(carry))
        return i + 1, carry, counts, trace

    rounds, carry, counts, trace = jax.lax.while_loop(
        cond, body, (zero, carry0, (zero, zero, zero), trace0)
    )
    keep = jnp.arange(max_steps) < rounds
    last = jnp.maximum(rounds - 1, 0)
    trace = jax.tree_util.tree_map(
        lambda a: jnp.where(keep.reshape((max_steps,) + (1,) * (a.ndim - 1)), a, a[last]), trace
    )
    return carry, counts, trace, rounds


def _choice(finished, scores):
    key = jnp.where(jnp.isnan(scores), -1.0, scores) + jnp.where(finished, 2.0, 0.0)
    return jnp.argmax(key, axis=1).astype(jnp.int32)


def beam_search(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_beams: int,
    beam_width: int,
    config: steps.StepConfig,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Beam search with a PRM (search-and-learn; module docstring).

    Args:
        key: PRNG key (round ``i`` samples with ``lm_steps.round_keys(key, i)[0]``).
        lm, prm_fn: the decoding protocol and the PRM ``(state, prompt_index) -> [R]``.
        prompts, prompt_mask: ``[B, P]`` left-padded prompts.
        num_beams: ``N`` (sequences per prompt); ``beam_width``: ``M`` (``M | N``).
        config: ``StepConfig``.
        mesh: optional ``"particles"`` mesh to shard the ``B N`` rows over (under ``jit``).

    Returns:
        ``(LMSearchResult, LMSearchInfo)`` with ``N`` candidates per prompt. ``trace``
        (``[max_steps, B]``): ``num_completed``, ``live``, ``best_score`` (best
        completed score so far, -1 if none).

    Raises:
        ValueError: ``num_beams < beam_width``, ``num_beams % beam_width != 0``,
            or a value below 1.
    """
    config = _checked(config)
    n, m = check_beams(num_beams, beam_width)
    b = jnp.shape(prompts)[0]
    mesh = lp.check_mesh(mesh, b * n)
    state, prompt_index, info0 = beam_init(lm, prompts, prompt_mask, n, config)
    axes = (dec.state_axes(lm), 0)

    def step_fn(k, st, i):
        st, out = beam_step(k, lm, prm_fn, st, prompt_index, config, n, m)
        pool, score = lp.constrain((st.pool, st.score), axes, mesh)
        return st._replace(pool=pool, score=score), out

    def trace_fn(st):
        best = jnp.max(jnp.where(st.done_valid, st.done_score, -1.0), axis=1)
        return {
            "num_completed": jnp.sum(st.done_valid, axis=1, dtype=jnp.int32),
            "live": st.live,
            "best_score": best,
        }

    with lp.mesh_context(mesh):
        pool, score = lp.constrain((state.pool, state.score), axes, mesh)
        state = state._replace(pool=pool, score=score)
        st, counts, trace, rounds = _loop(
            key, step_fn, state, config.max_steps, lambda s: jnp.any(s.live), trace_fn
        )
    # Candidates: completed beams first, topped up with the best active ones.
    g = steps.grouped
    act = g(~st.pool.finished, n)  # survivors' copies of prompts that ran out of rounds
    cand = [
        jnp.concatenate([st.done_tokens, g(st.pool.tokens, n)], axis=1),
        jnp.concatenate([st.done_num, g(st.pool.num_tokens, n)], axis=1),
        jnp.concatenate([st.done_score, g(st.score, n)], axis=1),
        jnp.concatenate([st.done_finished, g(st.pool.finished, n)], axis=1),
    ]
    key_ = jnp.concatenate(
        [_key_of(st.done_score, st.done_valid) + 2.0, _key_of(g(st.score, n), act)], axis=1
    )
    _, top = jax.lax.top_k(key_, n)
    tok, num, sc, fin = (
        jnp.take_along_axis(a, top.reshape(top.shape + (1,) * (a.ndim - 2)), axis=1) for a in cand
    )
    res = steps.LMSearchResult(
        tok, num, fin, sc, jnp.full((b, n), 1.0 / n, jnp.float32), _choice(fin, sc)
    )
    gen, calls, prm = counts
    return res, steps.LMSearchInfo(b * n, gen, prm, calls, info0.prompt_tokens, rounds, trace)


def _checked(config):
    if not isinstance(config, steps.StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    return config.checked()


def dvts(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_beams: int,
    beam_width: int,
    config: steps.StepConfig,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Diverse verifier tree search (search-and-learn; module docstring).

    ``N / M`` subtrees per prompt, each expanding ``M`` candidates per round and
    keeping its best (ties: the lowest row). Arguments as ``beam_search``.

    Returns:
        ``(LMSearchResult, LMSearchInfo)`` with the ``N / M`` subtree leaves per
        prompt. ``trace`` (``[max_steps, B]``): ``num_finished`` (subtrees),
        ``mean_score`` / ``max_score`` of the kept prefixes.
    """
    config = _checked(config)
    n, m = check_beams(num_beams, beam_width)
    s = n // m
    b = jnp.shape(prompts)[0]
    mesh = lp.check_mesh(mesh, b * n)
    pool, prompt_index, info0 = steps.start(lm, prompts, prompt_mask, n, config)
    axes = (dec.state_axes(lm), 0)
    score0 = jnp.full((b * n,), 0.5, jnp.float32)

    def step_fn(k, carry, i):
        pool, score = carry
        pool, score, out = steps.extend(k, lm, pool, prompt_index, prm_fn, score, config)
        key_ = jnp.where(jnp.isnan(score), -1.0, score).reshape(b * s, m)
        best = jnp.argmax(key_, axis=1).astype(jnp.int32)  # per subtree
        local = jnp.broadcast_to(best[:, None], (b * s, m))
        carry = steps.group_take((pool, score), local, axes, m)
        return lp.constrain(carry, axes, mesh), out

    def trace_fn(carry):
        pool, score = carry
        leaf = score.reshape(b, s, m)[:, :, 0]
        return {
            "num_finished": jnp.sum(
                pool.finished.reshape(b, s, m)[:, :, 0], axis=1, dtype=jnp.int32
            ),
            "mean_score": jnp.mean(leaf, axis=1),
            "max_score": jnp.max(leaf, axis=1),
        }

    with lp.mesh_context(mesh):
        carry0 = lp.constrain((pool, score0), axes, mesh)
        (pool, score), counts, trace, rounds = _loop(
            key, step_fn, carry0, config.max_steps, lambda c: ~jnp.all(c[0].finished), trace_fn
        )
    first = jnp.arange(b * s) * m  # row 0 of every subtree

    def leaves(a):
        return a[first].reshape((b, s) + a.shape[1:])

    tok, num, fin, sc = (leaves(a) for a in (pool.tokens, pool.num_tokens, pool.finished, score))
    res = steps.LMSearchResult(
        tok, num, fin, sc, jnp.full((b, s), 1.0 / s, jnp.float32), _choice(fin, sc)
    )
    gen, calls, prm = counts
    return res, steps.LMSearchInfo(b * n, gen, prm, calls, info0.prompt_tokens, rounds, trace)
