"""REBASE (inferax.search.lm.rebase): the reward-balanced allocation and the search on the
step tree (tests/search/step_tree.py).

Truths: the allocation is a closed form (floor of softmax(score / T) * m plus the
largest remainders, finished nodes keep one row) computed here in NumPy; T -> 0 gives
every live row to the best node, a large T splits evenly. After one round of the
search, every parent (a first-step row with its own score, non-uniform) has exactly its
share of the rows as copies of its prefix. Caps: a counting LM / PRM counts the
tokens and scored rows at run time, which equal ``info.spent()`` and stay within the budget.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.search import core
from inferax.search.lm import driver, steps
from inferax.search.lm import rebase as rb
from tests.search import step_tree as st

LM, VALUES = st.make_stopping(2, k=3, depth=3, problems=2, scale=0.7)
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=6, max_steps=3)


def shares_np(scores, live, temp):
    m = live.sum()
    s = np.where(live, scores / temp, -np.inf)
    p = np.exp(s - s.max())
    raw = np.where(live, p / p.sum() * m, 0.0)
    base = np.floor(raw).astype(int)
    frac = np.where(live, raw - base, -1.0)
    order = np.argsort(-frac, kind="stable")
    extra = np.zeros_like(base)
    extra[order[: m - base.sum()]] = 1
    return np.where(live, base + extra, 1)


def test_allocation_matches_the_closed_form_and_the_limits():
    rng = np.random.default_rng(0)
    alloc = st.jit(jax.vmap(rb.allocate, in_axes=(0, 0, None)), static_argnums=2)
    scores = rng.uniform(0, 1, size=(50, 8)).astype(np.float32)
    live = rng.uniform(size=(50, 8)) < 0.7
    for temp in (0.1, 1.0):
        got = np.asarray(alloc(scores, live, temp))
        want = np.stack([shares_np(s, lv, temp) for s, lv in zip(scores, live, strict=True)])
        np.testing.assert_array_equal(got, want)
        assert np.all(got.sum(1) == 8)
    cold = np.asarray(alloc(scores, live, 1e-4))
    for s, lv, c in zip(scores, live, cold, strict=True):
        if lv.any():
            best = np.argmax(np.where(lv, s, -1))
            assert c[best] == lv.sum() and np.all(c[lv & (np.arange(8) != best)] == 0)
    hot = np.asarray(alloc(scores, live, 1e4))
    for lv, h in zip(live, hot, strict=True):
        if lv.any():
            assert h[lv].max() - h[lv].min() <= 1  # an even split
        assert np.all(h[~lv] == 1)  # finished leaves keep their row, out of the budget


def test_one_round_expands_every_parent_to_its_share():
    n = 8
    prompts = st.prompts([0, 1])
    prm = st.prm_fn(LM, VALUES, jnp.arange(2))
    policy = rb.rebase_policy(LM, n, 0.05)

    @st.jit
    def one(key):
        start = driver.start(LM, prompts, None, n, CFG)
        pop = policy.init(start)
        rnd = driver.Round(
            jnp.int32(0), jnp.bool_(False), steps.Ledger.zeros(2), None, LM, prm, CFG,
            start.prompt_index,
        )  # fmt: skip
        k_gen, _ = steps.round_keys(key, 0)
        extended, scores, _ = rnd.extend(k_gen, pop.state, pop.score)
        new, _, _ = policy.step(key, pop, rnd)
        return extended, scores, new

    extended, scores, new = one(jax.random.key(4))
    parent_ends = np.asarray(st.end_nodes(LM, extended.tokens, extended.num_tokens)).reshape(2, n)
    child_ends = np.asarray(st.end_nodes(LM, new.state.tokens, new.state.num_tokens)).reshape(2, n)
    live = ~np.asarray(extended.finished).reshape(2, n)
    sc = np.asarray(scores).reshape(2, n)
    for g in range(2):
        share = shares_np(sc[g], live[g], 0.05)
        assert len(set(sc[g][live[g]].round(6))) > 1  # non-uniform parent scores
        # the children of parent j are rows sum(share[:j]) .. sum(share[:j + 1]) - 1
        want = np.repeat(parent_ends[g], share)
        np.testing.assert_array_equal(child_ends[g], want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spending_is_counted_and_capped(seed):
    rng = np.random.default_rng(seed)
    budget = core.Budget(
        sequences=int(rng.integers(2, 9)),
        tokens=int(rng.integers(3, 40)),
        prm_calls=int(rng.integers(2, 20)),
    )
    prm = st.prm_fn(LM, VALUES, jnp.arange(2))
    clm, cprm, counter = st.counting(LM, prm, 2)
    res, info = rb.rebase(jax.random.key(seed), clm, cprm, budget, prompts=st.prompts([0, 1]),
                          config=CFG, temperature=0.5)  # fmt: skip
    jax.effects_barrier()
    spent = {k: np.asarray(v) for k, v in info.spent().items()}
    np.testing.assert_array_equal(spent["tokens"], counter.tokens)
    np.testing.assert_array_equal(spent["prm_calls"], counter.prm_calls)
    assert np.all(spent["tokens"] <= budget.tokens)
    assert np.all(spent["prm_calls"] <= budget.prm_calls)
    assert np.all(spent["sequences"] == budget.sequences)
    assert res.tokens.shape[:2] == (2, budget.sequences)


def test_registered_and_bad_temperature():
    assert core.get("lm", "rebase").fn is rb.rebase
    prm = st.prm_fn(LM, VALUES, jnp.arange(1))
    with pytest.raises(ValueError, match="temperature"):
        rb.rebase(jax.random.key(0), LM, prm, 4, prompts=st.prompts([0]), config=CFG,
                  temperature=0.0)  # fmt: skip
