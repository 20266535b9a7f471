"""Beam search and DVTS with a PRM (inferax.search.lm.beam) on the step tree.

Truths: with the exact PRM (each node scored by the best leaf reward below it),
beam search with N covering the tree (N = k^D, M = k) and DVTS with wide
subtrees end at the argmax leaf of every problem, found by enumeration; a
negative control (an uninformative PRM) does not. Budgets are exact (every row
makes D steps of 2 tokens). Beam selection gathers tokens, logits and the
transformer's KV cache, and decoding continues as a full forward pass (tested with the
particle filter's in tests/search/test_lm_particle.py, one compiled program for both).
Each search compiles once, cheaply (``FAST``); the sharded test reuses the unsharded run.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import distributed
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


@functools.partial(jit, static_argnames=("method", "n", "m", "mesh"))
def run(key, values, method="beam", n=K**D, m=K, mesh=None):
    prm = st.prm_fn(LM, values, PROBLEMS)
    fn = lb.beam_search if method == "beam" else lb.dvts
    res, info = fn(
        key, LM, prm, st.prompts(PROBLEMS), num_beams=n, beam_width=m, config=CFG, mesh=mesh
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
    "n, m, match",
    [(2, 4, "num_beams"), (6, 4, "num_beams"), (0, 1, "num_beams"), (4, 0, "beam_width")],
)
def test_bad_budgets_are_clear_errors(fn, n, m, match):
    prm = st.prm_fn(LM, V_EXACT, PROBLEMS)
    with pytest.raises(ValueError, match=match):
        fn(jax.random.key(0), LM, prm, st.prompts(PROBLEMS), num_beams=n, beam_width=m, config=CFG)
