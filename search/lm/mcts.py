"""Monte Carlo tree search over reasoning steps of a language model, with ``mctx``.

A node of the tree is a prefix (prompt + generated steps). Expanding a node
samples ``k`` candidate next steps from the LM at that node: they are the
node's ``k`` actions, and the log-probabilities of the steps under the
sampling distribution are the prior logits of PUCT (Silver et al. 2017,
AlphaZero; MuZero's variant, Schrittwieser et al. 2020, Appendix B, as in
``mctx.muzero_policy``; or Gumbel MuZero, Danihelka et al. 2022, with
``policy="gumbel"``). The value of a new node is the process reward model's
score of its prefix (a finished trace: its final score); edges carry reward 0
and discount 1, except the edges out of a finished trace, which carry its
score with discount 0, so a finished trace is an absorbing state (mctx has no
terminal states: a simulation that reaches one expands a copy, which costs no
LM tokens and no PRM call). Backups average (MCTS for LLM reasoning as in
ReST-MCTS*, Zhang et al. 2024, and rStar, Qi et al. 2024, with a PRM as the
value). After ``num_simulations`` simulations the most visited root child is
committed (Gumbel: the policy's action) and a fresh search starts from it,
until every trace is finished or ``config.max_steps`` steps were committed;
each commit is one iteration of a ``lax.while_loop``, batched over prompts
(mctx's batch axis).

What a node stores (its mctx embedding): its own ``DecodeState`` row (tokens,
logits and KV cache) and the tokens of its ``k`` candidate steps, not the
candidates' caches. Expanding action ``a`` re-feeds candidate ``a``'s step
tokens through ``decode_step`` from the parent's row (counted as
``refed_tokens``), then samples the child's ``k`` candidates (counted as
``sampled_tokens``). The tree therefore holds ``(num_simulations + 1) x B``
cache rows instead of ``(num_simulations + 1) x B x k``, at the price of one
step of re-fed tokens per expansion (``1 / (k + 1)`` of the tokens decoded).
Every prompt's rows decode under ``jax.vmap`` (shared cache leaves, such as
a write index, become per prompt), so nodes at different depths of different
prompts never share a cache leaf, and a node's cache holds exactly its prompt
and its own tokens (no slots spent by other rows).

Averaging backups find the best path when the best subtree also has a good
average; on deceptive trees (a best leaf among poor siblings) they need many
simulations (measured on the random step tree of depth 3, k = 3, exact values:
3 of 8 problems solved at 1000 simulations with ``unvisited_value=1``; depth
2: 8 of 8). With mctx's default Q transform an unvisited candidate counts as
the worst sibling, so a candidate with a small LM prior may never be tried;
``unvisited_value=1`` tries every candidate once.

Candidates are distinct: the first token of the ``k`` candidate steps is
drawn without replacement (Gumbel-top-k, Kool et al. 2019) and the rest of
each step is sampled; a candidate whose first token has no probability (fewer
than ``k`` tokens allowed) is invalid (prior ~0, masked at the root).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mctx

from inferax.sampling import _checks, particles
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import driver, steps

POLICIES = ("muzero", "gumbel")
CANDIDATES = ("first_token", "sampled")
_INVALID = -1e9  # prior logit of an invalid candidate
DEFAULT_CANDIDATES = 4  # k when neither num_candidates nor budget.sequences sets it


class _Node(NamedTuple):
    """One prompt's node (the mctx embedding, vmapped over prompts)."""

    state: dec.DecodeState  # the prefix as a one-row population
    value: jax.Array  # [] PRM score of the prefix (NaN counted, stored as 0)
    cand: jax.Array  # [k, T] generated tokens of the k candidate children
    prior: jax.Array  # [k] log-probability of each candidate step (_INVALID: none)
    costs: jax.Array  # [len(_COSTS)] int32: what building this node spent


# What building a node spent: tokens sampled for its candidates, tokens re-fed to
# build it from its parent, PRM calls (0 or 1), NaN PRM scores, 1 if an
# unfinished node has no valid candidate, rows it decoded whose next-token logits
# hold a NaN/inf (``steps.non_finite_logits``: its own row if it moved or is the
# root, and its candidate rows that moved); then iterations of the two decode loops.
_COSTS = ("sampled_tokens", "refed_tokens", "prm_calls", "nan_scores", "stuck",
          "num_non_finite_logits")  # fmt: skip
_LOOPS = slice(len(_COSTS), len(_COSTS) + 2)


def _valid(prior):
    return prior > _INVALID / 2


def _step_loop(
    lm: Any,
    s: dec.DecodeState,
    cfg: steps.StepConfig,
    force_tok: jax.Array,
    force_at: jax.Array,
    u: jax.Array | None = None,
) -> tuple[dec.DecodeState, jax.Array, jax.Array, jax.Array]:
    """One reasoning step for every live row of ``s`` (``decoding.generate``'s loop,
    with the step log-probability accumulated and some positions forced).

    Args:
        lm: the decoding protocol.
        s: the rows to extend.
        cfg: the decoding settings.
        force_tok: ``[R, T]``: at generated position ``j`` row ``r`` emits
            ``force_tok[r, j]`` if ``force_at[r, j]``, else a sampled token.
        force_at: ``[R, T]`` bool (``force_tok``).
        u: ``[T, R]`` uniforms: the token of row ``r`` at position ``j`` is drawn by
            inverse transform sampling with ``u[j, r]`` (drawn before the loop, so
            the compiled loop holds no PRNG); None if every token is forced.

    Returns:
        ``(state, logp, spent, iterations)``: ``logp [R]`` the step's
            log-probability, the tokens spent, the loop's iterations.
    """
    n, cap = s.tokens.shape
    rows = jnp.arange(n)

    def active_of(st, stopped):
        return ~st.finished & ~stopped & (st.num_tokens < cap)

    def cond(c):
        return jnp.any(active_of(c[0], c[1]))

    def body(c):
        st, stopped, logp, spent, it = c
        active = active_of(st, stopped)
        logits = st.logits if cfg.logits_hook is None else cfg.logits_hook(st.logits, st)
        x = dec.process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p or 1.0)
        col = jnp.minimum(st.num_tokens, cap - 1)
        if cfg.temperature == 0 or u is None:
            drawn = jnp.argmax(x, axis=-1).astype(jnp.int32)
        else:  # inverse transform: the first token whose cumulative mass exceeds u
            cdf = jnp.cumsum(jax.nn.softmax(x, axis=-1), axis=-1)
            v = u[col, rows][:, None] * cdf[:, -1:]
            drawn = jnp.argmax(cdf > v, axis=-1).astype(jnp.int32)
        tok = jnp.where(force_at[rows, col], force_tok[rows, col], drawn)
        tok = jnp.where(active, tok, cfg.pad_id)
        lp = jax.nn.log_softmax(x, axis=-1)[rows, tok]
        logp = logp + jnp.where(active, lp, 0.0)
        st, is_step = dec.advance(lm, st, tok, active, eos_id=cfg.eos_id, step_id=cfg.step_id,
                                  pad_id=cfg.pad_id)  # fmt: skip
        return st, stopped | is_step, logp, spent + jnp.sum(active, dtype=jnp.int32), it + 1

    zero = jnp.zeros((), jnp.int32)
    init = (s, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32), zero, zero)
    s, _, logp, spent, it = jax.lax.while_loop(cond, body, init)
    return s, logp, spent, it


def _uniforms(key, b: int, k: int, cap: int, vocab: int) -> jax.Array:
    """``[B, V + T * k]`` uniforms in ``(0, 1)``: one PRNG draw for a whole expansion."""
    tiny = jnp.finfo(jnp.float32).tiny
    return jax.random.uniform(key, (b, vocab + cap * k), minval=tiny, maxval=1.0)


def _candidates(
    u: jax.Array, lm: Any, s1: dec.DecodeState, cfg: steps.StepConfig, k: int, how: str
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``_candidates_counted`` without its count: ``(tokens, prior, spent, iterations)``."""
    return _candidates_counted(u, lm, s1, cfg, k, how)[:4]


def _candidates_counted(
    u: jax.Array, lm: Any, s1: dec.DecodeState, cfg: steps.StepConfig, k: int, how: str
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``k`` distinct candidate steps from a one-row state.

    ``how="first_token"``: the first tokens are drawn without replacement (every
    candidate differs at its first token). ``"sampled"``: ``k`` steps drawn
    independently; a step identical to an earlier one is invalid (for tasks
    whose steps branch later than their first token).

    Args:
        u: ``[V + T * k]`` uniforms (``_uniforms``): Gumbel noise of the first
            tokens, then the draws of the rest of the steps.
        lm: the decoding protocol.
        s1: the node's one-row state.
        cfg: the decoding settings.
        k: candidates.
        how: ``"first_token"`` or ``"sampled"``.

    Returns:
        ``(tokens, prior, spent, iterations, bad)``: ``tokens [k, T]``, ``prior
            [k]`` (``_INVALID`` for invalid ones), tokens spent, loop iterations,
            candidate rows that moved with non-finite logits.
    """
    cap = s1.tokens.shape[1]
    v = lm.vocab_size
    logits = s1.logits if cfg.logits_hook is None else cfg.logits_hook(s1.logits, s1)
    lp0 = jax.nn.log_softmax(
        dec.process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p or 1.0)[0]
    )
    g = lp0
    if cfg.temperature > 0:  # Gumbel-top-k: k tokens without replacement
        g = lp0 - jnp.log(-jnp.log(u[:v]))
    first = jax.lax.top_k(g, k)[1].astype(jnp.int32)
    rows = particles.take(s1, jnp.zeros((k,), jnp.int32), _axes(lm, s1))
    at = jnp.broadcast_to(jnp.arange(cap) == s1.num_tokens[0], (k, cap))
    if how == "sampled":
        at = jnp.zeros_like(at)
    force = jnp.broadcast_to(first[:, None], (k, cap))
    out, logp, spent, it = _step_loop(lm, rows, cfg, force, at, u[v:].reshape(cap, k))
    valid = logp > -jnp.inf  # NaN and -inf are invalid
    if how == "sampled":  # a repeat of an earlier candidate is no new action
        same = jnp.all(out.tokens[:, None] == out.tokens[None], axis=-1)
        same = same & (out.num_tokens[:, None] == out.num_tokens[None])
        valid = valid & ~jnp.any(jnp.tril(same, -1), axis=1)
    done = s1.finished[0]
    valid = valid | done  # a finished prefix: k absorbing copies, uniform prior
    prior = jnp.where(valid, jnp.where(done, 0.0, logp), _INVALID)
    cand = jnp.where(valid[:, None], out.tokens, out.tokens[0])
    moved = out.num_tokens > rows.num_tokens
    bad = jnp.sum(moved & steps.non_finite_logits(out.logits), dtype=jnp.int32)
    return cand, prior, spent, it, bad


def _axes(lm, tree):
    return particles.leaf_axes(dec.state_axes(lm), tree, "lm.cache_axes")


def _per_prompt(lm, state: dec.DecodeState) -> dec.DecodeState:
    """A ``B``-row state as ``B`` one-row states stacked on a new leading axis
    (shared cache leaves are copied to every prompt)."""
    b = state.tokens.shape[0]
    leaves, treedef = jax.tree_util.tree_flatten(state)
    out = []
    for x, ax in zip(leaves, _axes(lm, state), strict=True):
        if ax is None:
            out.append(jnp.broadcast_to(x, (b,) + jnp.shape(x)))
        else:
            out.append(jnp.moveaxis(jnp.expand_dims(x, ax + 1), ax, 0))
    return jax.tree_util.tree_unflatten(treedef, out)


def plan(
    budget, *, config: steps.StepConfig, num_candidates: int | None = None,
    num_simulations: int | None = None, **_options,
) -> dict:  # fmt: skip
    """What ``budget`` buys MCTS (static; per prompt).

    A plain int is ``budget.simulations``; a budget must cap simulations or
    sequences. ``k`` (candidate steps per node, the rows that decode together) is
    ``num_candidates``, else ``budget.sequences``, else ``DEFAULT_CANDIDATES``;
    the simulations of every commit's search are ``num_simulations``, else
    ``budget.simulations // config.max_steps`` (at least 1).

    Returns:
        ``{"population": 1, "sequences": k, "simulations_per_step": S,
            "simulations", "tokens", "prm_calls"}``: the most a prompt can spend (the
            root: ``k`` candidate steps and one PRM call; each simulation: one re-fed
            step, ``k`` candidate steps and one PRM call, every step at most
            ``max_new_tokens``), capped by the budget.

    Raises:
        ValueError: naming ``budget``: neither simulations nor sequences capped, no
            way to set ``S``, ``k`` above ``budget.sequences``, or one search above
            ``budget.simulations``.
    """
    if not isinstance(config, steps.StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    config.checked()
    budget = core.as_budget(budget, "simulations")
    if budget.simulations is None and budget.sequences is None:
        raise ValueError(
            f"budget: mcts needs budget.simulations (its primary unit) or budget.sequences "
            f"(candidate steps per node), got {budget!r}"
        )
    if num_candidates is None:
        num_candidates = DEFAULT_CANDIDATES if budget.sequences is None else budget.sequences
    k = _checks.positive_int(num_candidates, "num_candidates")
    if budget.sequences is not None and k > budget.sequences:
        raise ValueError(
            f"budget: mcts decodes num_candidates = {k} sequences per prompt, above "
            f"budget.sequences = {budget.sequences}"
        )
    t, cap = config.max_steps, config.max_new_tokens
    if num_simulations is None:
        sims = budget.require("simulations", "mcts (or pass num_simulations)")
        s = max(sims // t, 1)
    else:
        s = _checks.positive_int(num_simulations, "num_simulations")
        if budget.simulations is not None and s > budget.simulations:
            raise ValueError(
                f"budget: one search of num_simulations = {s} exceeds budget.simulations = "
                f"{budget.simulations}"
            )
    most = {"simulations": t * s, "tokens": (k + t * s * (k + 1)) * cap, "prm_calls": 1 + t * s}
    out = {u: min(v, getattr(budget, u) or v) for u, v in most.items()}
    return {"population": 1, "sequences": k, "simulations_per_step": s, **out}


def _check(config, policy, c_puct, lm, unvisited_value, candidates, k, dirichlet_fraction):
    dec.check_sampling(config.temperature, config.top_k, config.top_p, lm.vocab_size)
    if config.runtime_checks:
        raise ValueError(
            "config.runtime_checks: mcts cannot run under checkify (its decode loops are "
            "vmapped while-loops, which checkify does not transform), got True; read "
            "info.trace['num_non_finite_logits'] and info.bad_prompt_tokens instead"
        )
    if k > lm.vocab_size:
        raise ValueError(
            f"num_candidates: expected at most the vocabulary size {lm.vocab_size}, got {k}"
        )
    if policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates: expected one of {CANDIDATES}, got {candidates!r}")
    if isinstance(c_puct, bool) or not isinstance(c_puct, int | float) or not c_puct > 0:
        raise ValueError(f"c_puct: expected a float > 0, got {c_puct!r}")
    if unvisited_value is not None:
        _checks.unit_interval(unvisited_value, "unvisited_value")
    if (
        isinstance(dirichlet_fraction, bool)
        or not isinstance(dirichlet_fraction, int | float)
        or not 0.0 <= dirichlet_fraction <= 1.0
    ):
        raise ValueError(
            f"dirichlet_fraction: expected a float in [0, 1], got {dirichlet_fraction!r}"
        )


def _node_fns(lm, prm_fn, cfg, k: int, candidates: str, b: int, cap: int):
    """``(root_node(u, s1, v), recurrent_fn)``: building a node (its ``k`` candidates and
    costs) and mctx's expansion of action ``a`` (re-feed candidate ``a``, score, build)."""
    bidx = jnp.arange(b, dtype=jnp.int32)

    def make_node(u, s1, value, refed, scored, nan, loop1, fresh):
        cand, prior, spent, loop2, bad = _candidates_counted(u, lm, s1, cfg, k, candidates)
        stuck = ~s1.finished[0] & ~jnp.any(_valid(prior))
        bad = bad + (fresh & steps.non_finite_logits(s1.logits)[0])
        costs = jnp.stack([spent, refed, scored, nan, stuck, bad, loop1, loop2])
        return _Node(s1, value, cand, prior, costs.astype(jnp.int32))

    def root_node(u, s1, v):  # the bare prompt's score: not counted (no row moved)
        nan = jnp.isnan(v)
        return make_node(u, s1, jnp.nan_to_num(v, nan=0.0), 0, 0, nan, 0, True)

    def expand(u, node: _Node, action, b_i):
        parent = node.state
        force = node.cand[action][None]
        at = (jnp.arange(cap) >= parent.num_tokens[0])[None]
        child, _, refed, loop1 = _step_loop(lm, parent, cfg, force, at)
        moved = child.num_tokens[0] > parent.num_tokens[0]
        raw = steps.scores_of(prm_fn, child, b_i[None])[0]
        value = jnp.where(moved, jnp.nan_to_num(raw, nan=0.0), node.value)
        new = make_node(u, child, value, refed, moved, moved & jnp.isnan(raw), loop1, moved)
        terminal = parent.finished[0]  # absorbing: reward = its score, discount 0
        out = (jnp.where(terminal, node.value, 0.0), jnp.where(terminal, 0.0, 1.0))
        return out + (new.prior, value), new

    def recurrent_fn(params, rng, action, node):
        u = _uniforms(rng, b, k, cap, lm.vocab_size)
        (reward, discount, prior, value), new = jax.vmap(expand)(u, node, action, bidx)
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=discount, prior_logits=prior, value=value
        )
        return out, new

    return root_node, recurrent_fn


def _search_fn(recurrent_fn, b, k, num_sims, policy, c_puct, dirichlet_fraction, gumbel_scale,
               unvisited_value):  # fmt: skip
    """``search(rng, node) -> (committed node, nodes made, visits, q)`` of one commit."""
    bidx = jnp.arange(b, dtype=jnp.int32)
    if unvisited_value is None:
        qtransform = mctx.qtransform_by_parent_and_siblings
    else:
        qtransform = functools.partial(_q_first_play, value=unvisited_value)

    def search(rng, node: _Node):
        root = mctx.RootFnOutput(prior_logits=node.prior, value=node.value, embedding=node)
        invalid = (~_valid(node.prior)).astype(jnp.float32)
        if policy == "muzero" and dirichlet_fraction == 0:
            # mctx.muzero_policy without its root noise (it draws Dirichlet noise even
            # at fraction 0, whose Gamma sampler is a large part of the compiled program).
            select = functools.partial(
                mctx.muzero_action_selection, pb_c_init=c_puct, qtransform=qtransform
            )
            tree = mctx.search(
                None, rng, root=root, recurrent_fn=recurrent_fn,
                root_action_selection_fn=functools.partial(select, depth=0),
                interior_action_selection_fn=select, num_simulations=num_sims,
                invalid_actions=invalid,
            )  # fmt: skip
            out = None
        elif policy == "muzero":
            out = mctx.muzero_policy(
                None, rng, root, recurrent_fn, num_sims, invalid_actions=invalid,
                pb_c_init=c_puct, dirichlet_fraction=dirichlet_fraction, qtransform=qtransform,
            )  # fmt: skip
        else:
            out = mctx.gumbel_muzero_policy(
                None, rng, root, recurrent_fn, num_sims, invalid_actions=invalid,
                max_num_considered_actions=k, gumbel_scale=gumbel_scale,
            )  # fmt: skip
        tree = out.search_tree if out is not None else tree
        visits = tree.children_visits[:, 0]
        q = tree.qvalues(jnp.zeros((b,), jnp.int32))
        if policy == "muzero":
            most = visits == jnp.max(visits, axis=1, keepdims=True)
            action = jnp.argmax(jnp.where(most, q, -jnp.inf), axis=1).astype(jnp.int32)
        else:
            action = out.action.astype(jnp.int32)
        child = tree.children_index[bidx, 0, action]
        new = jax.tree.map(lambda x: x[bidx, child], tree.embeddings)
        made = jax.tree.map(lambda x: x[:, 1:], tree.embeddings)  # nodes this search created
        return new, made, visits[bidx, action], q[bidx, action]

    return search


_TRACE = ("visits", "q", "value", "simulations", "sampled_tokens", "refed_tokens",
          "prm_calls", "nan_scores", "stuck", "num_non_finite_logits", "out_of_budget")  # fmt: skip
_HELD = ("visits", "q", "value")  # rounds after a prompt stops hold their last value


def _fits(budget, trace, node, num_sims, k, cap):
    """``[B]``: the prompt can pay a whole next search in the worst case (every simulation
    re-feeds one step and samples ``k``, each step at most what is left of the row)."""
    left = cap - node.state.num_tokens[:, 0]
    spent = {
        "tokens": trace["sampled_tokens"].sum(0) + trace["refed_tokens"].sum(0),
        "prm_calls": trace["prm_calls"].sum(0),
        "simulations": trace["simulations"].sum(0),
    }
    need = {"tokens": num_sims * (k + 1) * left, "prm_calls": num_sims, "simulations": num_sims}
    ok = jnp.ones_like(left, bool)
    for unit, lim in budget.units().items():
        if unit in need:
            ok = ok & (spent[unit] + need[unit] <= lim)
    return ok


def mcts(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    num_candidates: int | None = None,
    num_simulations: int | None = None,
    policy: str = "muzero",
    c_puct: float = 1.25,
    dirichlet_fraction: float = 0.0,
    gumbel_scale: float = 1.0,
    unvisited_value: float | None = None,
    candidates: str = "first_token",
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """MCTS over reasoning steps, one committed step per search (see the module doc).

    Args:
        key: PRNG key.
        lm: the decoding protocol (``inferax.search.lm.decoding``).
        prm_fn: ``prm_fn(state, prompt_index) -> [R]`` scores in ``[0, 1]`` of
            each row's prefix; called on one row per prompt under ``jax.vmap``.
        budget: per prompt (``core.Budget``, or an int = ``budget.simulations``);
            ``plan`` says what it buys. ``budget.simulations``, ``budget.tokens``
            and ``budget.prm_calls`` are caps checked at run time before every
            commit: a prompt searches again only if the whole next search fits in
            the worst case (each simulation re-feeds one step and samples ``k``
            steps of at most what is left of the row), else it stops where it is
            (``trace["out_of_budget"]``). A token cap below ``k * max_new_tokens``
            leaves even the root unexpanded.
        prompts: ``[B, P]`` left-padded prompts; prompt_mask: ``[B, P]`` bool.
        config: decoding settings; ``config.max_steps`` bounds the commits.
        num_candidates: ``k``, candidate next steps sampled at every expanded
            node (the node's actions); default ``budget.sequences``, else 4.
        num_simulations: simulations of every search (one per committed step);
            default ``budget.simulations // config.max_steps``.
        policy: ``"muzero"`` (PUCT, commit the most visited child, ties broken
            by Q) or ``"gumbel"`` (Gumbel MuZero: sequential halving at the root,
            commit its action).
        c_puct: ``pb_c_init`` of PUCT (MuZero's ``c_1``).
        dirichlet_fraction: root prior noise of AlphaZero, in [0, 1] (0: none).
        gumbel_scale: scale of the root Gumbel noise (``policy="gumbel"``).
        unvisited_value: None: mctx's ``qtransform_by_parent_and_siblings`` (an
            unvisited child counts as the worst sibling: a candidate with a small LM
            prior may never be tried). A value in [0, 1]: the same normalised Q with
            unvisited children valued at it (1: first-play urgency, every candidate
            is tried once before the best is revisited). ``policy="muzero"`` only.
        candidates: how a node's ``k`` candidate steps are made distinct:
            ``"first_token"`` (first tokens without replacement) or ``"sampled"``
            (``k`` independent steps, repeats invalid; for steps whose first token
            is nearly determined).
        mesh: optional ``"particles"`` mesh: the ``B`` prompts' trees (mctx's batch
            axis) are sharded over it (``B`` divisible by its size; call under ``jit``).

    Returns:
        ``(result, info)``: one trace per prompt (``K = 1``; its score is the PRM
            value of the committed final node; ``finished``: EOS or a full row).
            ``info.generated_tokens`` counts every token fed through ``decode_step``
            after the prompt (sampled candidates + re-fed steps); a PRM call is
            counted per expansion whose step moved (as ``steps.extend`` counts rows
            that moved: the root's score of the bare prompt is not counted);
            ``info.sequences``
            is ``B k``; per prompt: ``tokens_per_prompt``, ``prm_calls_per_prompt``,
            ``simulations_per_prompt`` (``info.spent()``). ``info.trace`` has
            ``[max_steps, B]`` arrays per commit: ``visits`` and ``q`` (the committed
            child's root visit count and Q), ``value`` (its PRM score),
            ``simulations``, ``sampled_tokens``, ``refed_tokens``, ``prm_calls``,
            ``nan_scores`` (NaN PRM scores, stored as 0), ``stuck`` (unfinished nodes
            without a valid candidate), ``num_non_finite_logits`` (rows the commit's
            expansions decoded, the root's prefill included, whose next-token logits
            hold a NaN/inf) and ``out_of_budget``.

    Raises:
        ValueError: bad budgets, settings or shapes, naming the argument;
            ``config.runtime_checks`` (checkify cannot transform the vmapped decode
            loops of MCTS: its counts are in ``info``).
        TypeError: arguments of the wrong type, naming the argument.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search import core
        >>> from inferax.search.lm import mcts
        >>> budget = core.Budget(simulations=4, sequences=2)  # 2 candidate steps per node
        >>> result, info = mcts.mcts(
        ...     jax.random.key(1), lm, prm_fn, budget, prompts=prompts, config=config)
        >>> result.tokens.shape, bool((info.simulations_per_prompt <= 4).all())
        ((2, 1, 4), True)
    """
    p = plan(budget, config=config, num_candidates=num_candidates,
             num_simulations=num_simulations)  # fmt: skip
    budget, k, num_sims = (
        core.as_budget(budget, "simulations"),
        p["sequences"],
        p["simulations_per_step"],
    )
    _check(config, policy, c_puct, lm, unvisited_value, candidates, k, dirichlet_fraction)
    cfg = config
    prm_fn = steps.check_prm(prm_fn)
    state, pidx, info0 = steps.start(lm, prompts, prompt_mask, 1, cfg)
    b, cap = state.tokens.shape
    mesh = driver.check_mesh(mesh, b)
    root_node, recurrent_fn = _node_fns(lm, prm_fn, cfg, k, candidates, b, cap)
    search = _search_fn(recurrent_fn, b, k, num_sims, policy, c_puct, dirichlet_fraction,
                        gumbel_scale, unvisited_value)  # fmt: skip
    k_root, k_search = jax.random.split(key)
    trace = {n: jnp.zeros((cfg.max_steps, b), jnp.float32 if n in ("q", "value") else jnp.int32)
             for n in _TRACE}  # fmt: skip
    with driver.mesh_context(mesh):
        v0 = steps.scores_of(prm_fn, state, pidx)
        root_ok = budget.tokens is None or budget.tokens >= k * cap  # the root's worst case
        if not root_ok:  # the root is scored but not expanded
            state = state._replace(finished=jnp.ones_like(state.finished))
        u = _uniforms(k_root, b, k, cap, lm.vocab_size)
        node = jax.vmap(root_node)(u, _per_prompt(lm, state), v0)
        node = driver.constrain(node._replace(state=node.state._replace(
            finished=node.state.finished & root_ok)), 0, mesh)  # fmt: skip
        for j, n in enumerate(_COSTS):  # the root's costs count in round 0
            trace[n] = trace[n].at[0].set(node.costs[:, j])
        trace["out_of_budget"] = trace["out_of_budget"].at[0].set(int(not root_ok))
        node, trace, rounds, calls = _commits(
            k_search, search, node, trace, budget, num_sims, k, cap, cfg, mesh, root_ok
        )
    return _result(node, rounds, trace, calls, info0, b, k, cfg, budget)


def _commits(key, search, node, trace, budget, num_sims, k, cap, cfg, mesh, root_ok):
    """The commit loop (one ``lax.while_loop``): search, commit the chosen child, count."""
    calls0 = node.costs[:, _LOOPS.stop - 1].max()
    stop0 = jnp.full(node.value.shape, not root_ok)

    def cond(c):
        i, node, _, _, stop = c
        return (i < cfg.max_steps) & ~jnp.all(node.state.finished[:, 0] | stop)

    def body(c):
        i, node, trace, calls, stop = c
        done = node.state.finished[:, 0]
        stop = stop | (~done & ~_fits(budget, trace, node, num_sims, k, cap))
        hold = done | stop
        frozen = node._replace(
            state=node.state._replace(finished=node.state.finished | stop[:, None])
        )
        new, made, vis, q = search(jax.random.fold_in(key, i), frozen)
        new = jax.tree.map(lambda a, o: jnp.where(_bcast(hold, a), o, a), new, node)
        new = driver.constrain(new, 0, mesh)
        spent = made.costs.sum(1)  # [B, len(_COSTS) + 2]: held prompts' searches cost 0
        per = {n: spent[:, j] for j, n in enumerate(_COSTS)}
        per.update(visits=vis, q=q, value=new.value, simulations=jnp.where(hold, 0, num_sims),
                   out_of_budget=(stop & ~done).astype(jnp.int32))  # fmt: skip
        for n in _HELD:  # stopped prompts hold their last value
            last = trace[n][jnp.maximum(i - 1, 0)]
            per[n] = jnp.where(hold, jnp.where(i > 0, last, per[n]), per[n])
        trace = {n: (trace[n].at[i].set if n in _HELD else trace[n].at[i].add)(
            per[n].astype(trace[n].dtype)) for n in _TRACE}  # fmt: skip
        calls = calls + jnp.sum(jnp.max(made.costs[..., _LOOPS], axis=0))  # batched decode calls
        return i + 1, new, trace, calls, stop

    init = (jnp.zeros((), jnp.int32), node, trace, calls0, stop0)
    rounds, node, trace, calls, _ = jax.lax.while_loop(cond, body, init)
    return node, trace, rounds, calls


def _q_first_play(tree: mctx.Tree, node_index, *, value: float) -> jax.Array:
    """``mctx.qtransform_by_parent_and_siblings`` (Q normalised to [0, 1] by the min and
    max over the node's value and its visited children's Q), with unvisited children
    valued ``value`` instead of 0 (first-play urgency: 1 tries every child once before
    the best one is revisited, as UCT does; 0 is mctx's default)."""
    q = tree.qvalues(node_index)
    seen = tree.children_visits[node_index] > 0
    v = tree.node_values[node_index]
    safe = jnp.where(seen, q, v)
    lo = jnp.minimum(v, jnp.min(safe, axis=-1))
    hi = jnp.maximum(v, jnp.max(safe, axis=-1))
    return jnp.where(seen, (q - lo) / jnp.maximum(hi - lo, 1e-8), value)


def _bcast(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _result(node, rounds, trace, calls, info0, b, k, cfg, budget):
    """Result and info from the final nodes; trace rounds after ``rounds`` hold the last value."""
    hold = jnp.minimum(jnp.arange(cfg.max_steps), jnp.maximum(rounds - 1, 0))
    trace = {n: (x[hold] if n in _HELD else x) for n, x in trace.items()}
    s = node.state
    result = steps.LMSearchResult(
        tokens=s.tokens, num_tokens=s.num_tokens, finished=s.finished,
        scores=node.value[:, None], weights=jnp.ones((b, 1), jnp.float32),
        choice=jnp.zeros((b,), jnp.int32),
    )  # fmt: skip
    tokens = trace["sampled_tokens"].sum(0) + trace["refed_tokens"].sum(0)
    prm = trace["prm_calls"].sum(0)
    info = steps.LMSearchInfo(
        sequences=b * k, generated_tokens=tokens.sum(), prm_calls=prm.sum(),
        decode_steps=calls, prompt_tokens=info0.prompt_tokens, num_rounds=rounds,
        trace=trace, tokens_per_prompt=tokens, prm_calls_per_prompt=prm, budget=budget,
        simulations_per_prompt=trace["simulations"].sum(0),
        bad_prompt_tokens=info0.bad_prompt_tokens,
    )  # fmt: skip
    return result, info


core.register(
    core.SearchEntry(
        "mcts",
        "lm",
        mcts,
        ("simulations", "sequences", "tokens", "prm_calls"),
        "heuristic",
        plan,
        options={"policy": ("muzero", "gumbel"), "candidates": ("first_token", "sampled")},
        fixed={"num_simulations": 2},
        reference="Silver et al. 2017; Schrittwieser et al. 2020; Danihelka et al. 2022 "
        "(mctx); Zhang et al. 2024 (ReST-MCTS*)",
        summary="MCTS over reasoning steps (PUCT or Gumbel MuZero), PRM values, k sampled "
        "candidate steps per node",
    )  # fmt: skip
)
