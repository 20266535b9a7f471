"""Beam search and DVTS with a PRM (inferax.search.lm.beam) on the step tree.

Truths: with the exact PRM (each node scored by the best leaf reward below it),
beam search keeping one survivor copied N = k^D times (M = N: every child of the kept
prefix is sampled with probability > 0.9999) and DVTS with wide subtrees end at the
argmax leaf of every problem, found by enumeration; a
negative control (an uninformative PRM) does not. Budgets are exact (every row
makes D steps of 2 tokens). Beam selection gathers tokens, logits and the
transformer's KV cache, and decoding continues as a full forward pass (tested with the
particle filter's in tests/search/test_lm_particle.py, one compiled program for both).
Each search compiles once, cheaply (``FAST``); the sharded test reuses the unsharded run.

Caps: a counting LM and PRM (``step_tree.counting``, host callbacks) count every token
decoded and every row scored per prompt at run time; under token / PRM-call caps the
counts never exceed the budget and equal ``info``'s per-prompt counters.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import distributed
from inferax.search import core
from inferax.search.lm import beam as lb
from inferax.search.lm import steps
from tests.search import step_tree as st

K, D, P = 3, 3, 4
LM, LEAF = st.make(4, k=K, depth=D, problems=P, scale=0.3)
CFG = steps.StepConfig(st.EOS, st.STEP, max_new_tokens=2 * D, max_steps=D)
PROBLEMS = np.arange(P)

# Compile cheaply: the programs run in well under a second, XLA's CPU codegen is the cost
# (the loop fusion emitters and LLVM optimisation roughly double the compile time).
jit = st.jit


def exact_values():
    """Every node scored by the best leaf reward below it."""
    v = np.zeros((P, st.num_nodes(K, D)))
    v[:, st.offset(K, D) :] = LEAF
    for d in range(D - 1, -1, -1):
        for c in range(K**d):
            kids = [st.offset(K, d + 1) + c * K + x for x in range(K)]
            v[:, st.offset(K, d) + c] = v[:, kids].max(axis=1)
    return v


V_EXACT = exact_values()


@functools.partial(jit, static_argnames=("method", "n", "m", "mesh", "cfg"))
def run(key, values, method="beam", n=K**D, m=K**D, mesh=None, cfg=CFG):
    prm = st.prm_fn(LM, values, PROBLEMS)
    fn = lb.beam_search if method == "beam" else lb.dvts
    res, info = fn(
        key, LM, prm, n, prompts=st.prompts(PROBLEMS), beam_width=m, config=cfg, mesh=mesh
    )
    return res, info, st.decode_rows(LM, res.tokens, res.num_tokens)


@pytest.fixture(scope="module")
def beam_exact():
    """Beam search covering the tree with the exact PRM (shared with the sharded test)."""
    return run(jax.random.key(0), jnp.asarray(V_EXACT))


def leaves_of(rows):
    return tuple(np.asarray(a) for a in rows)


def test_beam_search_covering_the_tree_finds_the_best_path(beam_exact):
    res, info, rows = beam_exact
    code, depth = leaves_of(rows)
    best = LEAF.argmax(axis=1)
    chosen = code[np.arange(P), np.asarray(res.choice)]
    np.testing.assert_array_equal(chosen, best)
    np.testing.assert_allclose(np.asarray(res.scores).max(1), LEAF.max(1), rtol=1e-6)
    assert np.all(depth == D) and np.all(np.asarray(res.finished))
    n = K**D
    assert info.sequences == P * n
    assert int(info.generated_tokens) == P * n * 2 * D <= P * n * CFG.max_new_tokens
    assert int(info.prm_calls) == P * n * D <= P * n * CFG.max_steps
    assert np.all(np.asarray(info.trace["num_completed"][-1]) == n)
    np.testing.assert_array_equal(np.asarray(info.spent()["tokens"]), n * 2 * D)
    np.testing.assert_array_equal(np.asarray(info.spent()["prm_calls"]), n * D)
    np.testing.assert_allclose(np.asarray(res.weights), 1.0 / n)
    # negative control: an uninformative PRM (all inner nodes 0.5) keeps arbitrary beams
    flat = st.leaf_values(LM, LEAF)
    _, _, rows0 = run(jax.random.key(0), jnp.asarray(flat))
    code0, _ = leaves_of(rows0)
    assert np.mean(code0 == best[:, None]) < np.mean(code == best[:, None])


def test_dvts_greedy_on_the_exact_prm_ends_at_the_best_leaf_in_every_subtree():
    n, m = 3 * 27, 27  # 3 subtrees of 27 candidates: every child is sampled (prob > 0.9999)
    res, info, rows = run(jax.random.key(1), jnp.asarray(V_EXACT), method="dvts", n=n, m=m)
    code, depth = leaves_of(rows)
    assert code.shape == (P, n // m) and np.all(depth == D)
    np.testing.assert_array_equal(code, np.repeat(LEAF.argmax(1)[:, None], n // m, 1))
    assert int(info.generated_tokens) == P * n * 2 * D
    assert int(info.prm_calls) == P * n * D
    assert info.sequences == P * n


def test_same_answer_on_1_and_4_devices(devices, beam_exact):
    mesh = distributed.particle_mesh(devices[:4])
    a, _, _ = beam_exact
    b, _, _ = run(jax.random.key(0), jnp.asarray(V_EXACT), mesh=mesh)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("fn", [lb.beam_search, lb.dvts])
@pytest.mark.parametrize(
    "budget, m, match",
    [
        (2, 4, "budget: .* needs budget.sequences >= beam_width = 4, got 2"),
        (0, 1, "budget: expected a positive int"),
        (4, 0, "beam_width"),
        (core.Budget(tokens=40), 2, "needs a limit in 'sequences'"),
    ],
)
def test_bad_budgets_are_clear_errors(fn, budget, m, match):
    prm = st.prm_fn(LM, V_EXACT, PROBLEMS)
    with pytest.raises(ValueError, match=match):
        fn(jax.random.key(0), LM, prm, budget, prompts=st.prompts(PROBLEMS), beam_width=m,
           config=CFG)  # fmt: skip


def test_plan_and_registry():
    p = lb.plan(6, config=CFG, beam_width=4)
    assert p == {"population": 4, "sequences": 4, "tokens": 4 * (6 + 5 + 4), "prm_calls": 12}
    capped = lb.plan(core.Budget(sequences=8, tokens=50, prm_calls=9), config=CFG, beam_width=2)
    assert capped == {"population": 8, "sequences": 8, "tokens": 50, "prm_calls": 9}
    for name, target in (("beam_search", "argmax"), ("dvts", "heuristic")):
        e = core.get("lm", name)
        assert e.units[0] == "sequences" and e.target == target and "beam_width" in e.options
        assert e.plan(8, config=CFG, beam_width=2)["sequences"] == 8


@pytest.mark.parametrize("method", ["beam", "dvts"])
@pytest.mark.parametrize("cap", ["tokens", "prm_calls"])
def test_caps_are_never_exceeded_counted_at_run_time(method, cap):
    """A cap below what the search would spend: per prompt, the tokens decoded and the
    rows scored (counted by host callbacks) stay within it and equal info's counters."""
    n, m = 9, 3
    full = n * 2 * D if cap == "tokens" else n * D  # what an uncapped search spends
    limit = full // 2 + 1
    budget = core.Budget(sequences=n, **{cap: limit})
    lm, prm, counter = st.counting(LM, st.prm_fn(LM, V_EXACT, PROBLEMS), P)
    fn = lb.beam_search if method == "beam" else lb.dvts
    res, info = jit(
        lambda k: fn(k, lm, prm, budget, prompts=st.prompts(PROBLEMS), beam_width=m, config=CFG)
    )(jax.random.key(2))
    jax.effects_barrier()
    spent = {u: np.asarray(v) for u, v in info.spent().items()}
    np.testing.assert_array_equal(spent["tokens"], counter.tokens)
    np.testing.assert_array_equal(spent["prm_calls"], counter.prm_calls)
    assert np.all(spent[cap] <= limit) and np.all(spent[cap] > 0)
    assert np.all(np.asarray(info.trace["out_of_budget"]).sum(0) > 0)  # the cap did bind
    assert info.budget == budget and np.all(spent["sequences"] == n)
    assert not core.Budget(sequences=n, **{cap: limit}).exceeded(
        {u: int(v.max()) for u, v in spent.items()}
    )
    assert not np.asarray(res.finished).all()  # stopped beams are not reported finished


@pytest.mark.parametrize("m", [1, 3, 9])
def test_beam_widths_at_temperature_below_one(m):
    """N = 9 beams of width M at T = 0.5: every round keeps N / M survivors, so the
    final candidates (all completing in round D) descend from at most N / M distinct
    prefixes of depth D - 1, and those are the best-scored ones sampled in round D - 1
    (the exact PRM: a prefix scores the best leaf below it)."""
    cfg = CFG._replace(temperature=0.5)
    res, info, rows = run(jax.random.key(3), jnp.asarray(V_EXACT), n=9, m=m, cfg=cfg)
    code, depth = leaves_of(rows)
    assert code.shape == (P, 9) and np.all(depth == D) and np.asarray(res.finished).all()
    assert int(info.generated_tokens) == P * 9 * 2 * D and info.sequences == P * 9
    parents = code // K
    for p in range(P):
        assert len(set(parents[p].tolist())) <= 9 // m
        # the chosen candidate is the best completed one
        assert np.asarray(res.scores)[p, int(res.choice[p])] == np.asarray(res.scores)[p].max()
    if m == 9:  # one survivor: every candidate continues the same prefix
        assert np.all(parents == parents[:, :1])
    if m == 1:  # no selection pressure among 9 survivors of 9: parents are diverse
        assert np.mean([len(set(x.tolist())) for x in parents]) > 1


@pytest.mark.parametrize("m", [1, 3, 9])
def test_dvts_groups(m):
    """N = 9 rows in 9 / M subtrees: as many candidates, each a finished leaf; one
    subtree (M = 9) is greedy over 9 samples per step."""
    cfg = CFG._replace(temperature=1.5)
    res, info, rows = run(jax.random.key(4), jnp.asarray(V_EXACT), method="dvts", n=9, m=m,
                          cfg=cfg)  # fmt: skip
    code, depth = leaves_of(rows)
    assert code.shape == (P, 9 // m) and np.all(depth == D)
    assert np.asarray(res.finished).all()
    np.testing.assert_allclose(np.asarray(res.weights), m / 9)
    assert np.all(np.asarray(info.trace["num_subtrees_finished"][-1]) == 9 // m)
    # every kept leaf's score is its reward (the PRM of a leaf is its reward)
    np.testing.assert_allclose(
        np.asarray(res.scores), V_EXACT[PROBLEMS[:, None], st.offset(K, D) + code], rtol=1e-6
    )
