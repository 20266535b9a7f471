"""A language model whose reasoning steps form a small tree with exactly known probabilities.

Used by the step-level search tests (beam, DVTS, particle filtering / Gibbs,
SMC steering, MCTS) to compare a search with exact enumeration.

Vocabulary: PAD 0, STEP 1, EOS 2, and ``K`` choice tokens ``3 .. 3 + K - 1``.
A trace is ``c1 STEP c2 STEP ... cD EOS``: each step is one choice token and a
delimiter; after the ``D``-th choice only EOS is allowed. The choice at a node
is drawn from ``softmax(tables[problem, node])``, where ``node`` numbers the
tree's nodes level by level (``offset(d) + code``, ``code`` the path's choices
in base ``K``). The prompt's last token selects the problem (``3 + problem``).

``prm_fn(values)`` scores a row's prefix by ``values[problem, node]`` of the
node it has reached (root = node 0).
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PAD, STEP, EOS, FIRST = 0, 1, 2, 3

# The search tests compile cheaply (LLVM level 0 on top of conftest's flags): their
# programs are small and compiling is most of their time.
FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
jit = functools.partial(jax.jit, compiler_options=FAST)
NEG = -1e9


def num_nodes(k: int, d: int) -> int:
    return sum(k**i for i in range(d + 1))


def offset(k: int, depth):
    """First node id of a level: sum_{i < depth} k^i."""
    return (k**depth - 1) // (k - 1)


class StepTree(NamedTuple):
    """The decoding protocol over the tree (``tables``: ``[problems, nodes, K]`` logits)."""

    tables: jax.Array
    k: int
    depth: int
    max_len: int | None = None
    cache_axes: object = {"problem": 0, "code": 0, "depth": 0, "phase": 0}
    stop: jax.Array | None = None  # [problems, nodes] EOS logit among the choices (early stop)

    @property
    def vocab_size(self) -> int:
        return FIRST + self.k

    def _logits(self, c):
        node = offset(self.k, c["depth"]) + c["code"]
        node = jnp.minimum(node, self.tables.shape[1] - 1)
        choice = self.tables[c["problem"], node]  # [N, K]
        v = self.vocab_size
        n = c["code"].shape[0]
        base = jnp.full((n, v), NEG, jnp.float32)
        with_choice = base.at[:, FIRST:].set(choice)
        if self.stop is not None:  # EOS competes with the choices above the last level
            eos = jnp.where(c["depth"] < self.depth, self.stop[c["problem"], node], NEG)
            with_choice = with_choice.at[:, EOS].set(eos)
        delim = jnp.where(c["depth"] >= self.depth, EOS, STEP)
        with_delim = base.at[jnp.arange(n), delim].set(0.0)
        return jnp.where((c["phase"] == 0)[:, None], with_choice, with_delim)

    def init_cache(self, batch_size, max_len):
        z = jnp.zeros((batch_size,), jnp.int32)
        return {"problem": z, "code": z, "depth": z, "phase": z}

    def prefill(self, cache, tokens, mask):
        c = dict(cache, problem=(tokens[:, -1] - FIRST).astype(jnp.int32))
        return self._logits(c), c

    def decode_step(self, cache, token, valid):
        c = cache
        choose = valid & (c["phase"] == 0) & (token >= FIRST)
        delim = valid & (c["phase"] == 1)
        new = {
            "problem": c["problem"],
            "code": jnp.where(choose, c["code"] * self.k + (token - FIRST), c["code"]),
            "depth": c["depth"] + choose,
            "phase": jnp.where(choose, 1, jnp.where(delim, 0, c["phase"])),
        }
        return self._logits(new), new


def make(seed: int = 0, k: int = 3, depth: int = 3, problems: int = 2, scale: float = 1.0):
    """A random tree LM and a random leaf reward in (0, 1) per problem.

    Returns:
        ``(lm, leaf_reward [problems, k^depth])``.
    """
    rng = np.random.default_rng(seed)
    tables = rng.normal(size=(problems, num_nodes(k, depth), k)) * scale
    reward = rng.uniform(0.05, 0.95, size=(problems, k**depth))
    return StepTree(jnp.asarray(tables, jnp.float32), k, depth), reward


def prompts(problems) -> jax.Array:
    """``[B, 2]`` prompts selecting the given problems."""
    p = np.asarray(problems, np.int32)
    return jnp.asarray(np.stack([np.full_like(p, PAD), FIRST + p], axis=1))


def path_probs(lm: StepTree, problem: int) -> np.ndarray:
    """Exact probability of every leaf (float64), indexed by its code."""
    t = np.asarray(lm.tables[problem], np.float64)
    out = np.zeros(lm.k**lm.depth)
    for path in itertools.product(range(lm.k), repeat=lm.depth):
        p, code = 1.0, 0
        for d, c in enumerate(path):
            logits = t[offset(lm.k, d) + code]
            q = np.exp(logits - logits.max())
            p *= q[c] / q.sum()
            code = code * lm.k + c
        out[code] = p
    return out


def decode_rows(lm: StepTree, tokens, num_tokens):
    """``(code, depth)`` of every row from its generated tokens (choices at even positions)."""
    tokens = jnp.asarray(tokens)
    t = tokens.shape[-1]
    pos = jnp.arange(t)
    is_choice = (pos % 2 == 0)[None] & (pos[None] < jnp.asarray(num_tokens)[..., None])
    is_choice = is_choice & (tokens >= FIRST)  # an early EOS is no choice
    digits = jnp.where(is_choice, tokens - FIRST, 0)

    def fold(code, xs):
        dig, use = xs
        return jnp.where(use, code * lm.k + dig, code), None

    code, _ = jax.lax.scan(
        fold,
        jnp.zeros(tokens.shape[:-1], jnp.int32),
        (jnp.moveaxis(digits, -1, 0), jnp.moveaxis(is_choice, -1, 0)),
    )
    return code, jnp.sum(is_choice, axis=-1)


def prm_fn(lm: StepTree, values, problems):
    """A PRM scoring each row by ``values[problem, node]`` of the node its prefix reached.

    Args:
        values: ``[P, nodes]`` scores in [0, 1] per node.
        problems: ``[B]`` the problem of each prompt.
    """
    values = jnp.asarray(values, jnp.float32)
    problems = jnp.asarray(problems, jnp.int32)

    def score(state, prompt_index):
        code, depth = decode_rows(lm, state.tokens, state.num_tokens)
        return values[problems[prompt_index], offset(lm.k, depth) + code]

    return score


def leaf_values(lm: StepTree, leaf_reward, inner: float = 0.5) -> np.ndarray:
    """Node values: ``inner`` at every inner node, ``leaf_reward`` at the leaves."""
    p = leaf_reward.shape[0]
    v = np.full((p, num_nodes(lm.k, lm.depth)), inner)
    v[:, offset(lm.k, lm.depth) :] = leaf_reward
    return v


def make_stopping(seed: int = 0, k: int = 3, depth: int = 3, problems: int = 1, scale=1.0):
    """A tree LM whose paths stop early: EOS competes with the choices at every inner node.

    A path that stops at node ``v`` of depth ``d < depth`` is ``c1 STEP .. cd STEP EOS``
    (``d + 1`` steps, the last one the lone EOS); a full path has ``depth`` steps.

    Returns:
        ``(lm, node_values [problems, nodes] in (0.3, 0.7))``.
    """
    rng = np.random.default_rng(seed)
    lm, _ = make(seed, k, depth, problems, scale)
    stop = jnp.asarray(rng.normal(size=(problems, num_nodes(k, depth))) * scale, jnp.float32)
    return lm._replace(stop=stop), rng.uniform(0.3, 0.7, size=(problems, num_nodes(k, depth)))


def terminals(lm: StepTree, problem: int):
    """Every complete path of a (possibly stopping) tree, float64.

    Returns:
        a list of ``(node, prob, step_nodes)``: the node the path ends at (its id
        identifies the path), its probability, and the node its prefix has reached
        after each of its steps (the last node repeated for an early EOS step).
    """
    t = np.asarray(lm.tables[problem], np.float64)
    stop = None if lm.stop is None else np.asarray(lm.stop[problem], np.float64)
    out = []

    def visit(node, depth, code, prob, path):
        if depth == lm.depth:
            out.append((node, prob, path))
            return
        logits = t[node] if stop is None else np.append(t[node], stop[node])
        q = np.exp(logits - logits.max())
        q /= q.sum()
        if stop is not None:
            out.append((node, prob * q[-1], [*path, node]))
        for c in range(lm.k):
            child = offset(lm.k, depth + 1) + code * lm.k + c
            visit(child, depth + 1, code * lm.k + c, prob * q[c], [*path, child])

    visit(0, 0, 0, 1.0, [])
    return out


def end_nodes(lm: StepTree, tokens, num_tokens):
    """The node id every row's prefix has reached."""
    code, depth = decode_rows(lm, tokens, num_tokens)
    return offset(lm.k, depth) + code


class Counter:
    """Run-time counts of a counting LM / PRM pair (``counting``), per prompt."""

    def __init__(self, num_prompts: int):
        self.tokens = np.zeros(num_prompts, np.int64)
        self.prm_calls = np.zeros(num_prompts, np.int64)
        self.pending = None  # tokens per row since the last PRM call

    def on_decode(self, valid):
        valid = np.asarray(valid, np.int64)
        self.pending = valid if self.pending is None else self.pending + valid

    def on_prm(self, prompt_index):
        prompt_index = np.asarray(prompt_index)
        if self.pending is not None:
            np.add.at(self.tokens, prompt_index, self.pending)
            np.add.at(self.prm_calls, prompt_index, self.pending > 0)
        self.pending = None


class CountingLM(NamedTuple):
    """``lm`` whose ``decode_step`` reports its valid rows to ``counter`` (host callback)."""

    lm: StepTree
    counter: Counter

    @property
    def vocab_size(self):
        return self.lm.vocab_size

    @property
    def max_len(self):
        return self.lm.max_len

    @property
    def cache_axes(self):
        return self.lm.cache_axes

    def init_cache(self, batch_size, max_len):
        return self.lm.init_cache(batch_size, max_len)

    def prefill(self, cache, tokens, mask):
        return self.lm.prefill(cache, tokens, mask)

    def decode_step(self, cache, token, valid):
        jax.debug.callback(self.counter.on_decode, valid, ordered=True)
        return self.lm.decode_step(cache, token, valid)


def counting(lm: StepTree, prm, num_prompts: int):
    """A counting LM and PRM: every generated token and every scored row (a row that
    generated a token since the previous PRM call), per prompt, counted on the host.

    Returns:
        ``(lm, prm_fn, counter)``.
    """
    counter = Counter(num_prompts)

    def score(state, prompt_index):
        jax.debug.callback(counter.on_prm, prompt_index, ordered=True)
        return prm(state, prompt_index)

    return CountingLM(lm, counter), score, counter
