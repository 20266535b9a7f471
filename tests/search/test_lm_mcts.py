"""MCTS over reasoning steps (search.lm_mcts) against exact answers.

On the step tree (tests/search/step_tree.py) every node's value is exact (the
best leaf reward below it), the LM's own greedy path leaves the best path at
the root, and ``k`` = the branching: candidates are drawn without replacement
on their first token (the tree's choice token), so every node has all ``k``
children and the search can reach every leaf. On a tiny random transformer the
PRM reads each node's next-token logits, so the values the search stored
(trace ``value``) are checked against a full forward pass over the committed
prefixes: the cache went through the per-prompt split, the tree's storage and
gather, and the re-feed of each step from a stored parent row.

With ``mesh``, mctx's batch axis (the prompts: each prompt's tree) is sharded; PUCT at
T = 1.5 and Gumbel at T = 0.7 give the same answer on 1 and 4 devices (Q to float
rounding). Caps: tokens decoded per prompt are counted on the host (a decode_step
callback) and equal ``info``; tokens, PRM calls and simulations never exceed the budget.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic as ar
from inferax.models import transformer as tr
from inferax.search import core
from inferax.search.lm import mcts as lm_mcts
from inferax.search.lm import steps as lm_steps
from tests.search import step_tree as st

K, D, P = 3, 3, 4
S = 48
CFG = lm_steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=2 * D, max_steps=D + 1)


def digits(leaf):
    return [(leaf // K ** (D - 1 - d)) % K for d in range(D)]


def ladder(rng, best):
    """Leaf rewards: 0.95 at ``best``, others in bands rising with the depth at which
    they leave the best path (the best subtree also has the best average, so averaging
    backups identify it; see the module doc of lm_mcts for deceptive trees)."""
    edges = np.linspace(0.05, 0.9, D + 1)
    r = np.zeros((len(best), K**D))
    for p, b in enumerate(best):
        for leaf in range(K**D):
            j = int(np.argmax(np.array(digits(leaf)) != np.array(digits(b))))
            r[p, leaf] = 0.95 if leaf == b else rng.uniform(edges[j], edges[j + 1])
    return r


def exact_values(reward):
    """Node value = the best leaf reward below it (leaves: their reward)."""
    v = np.zeros((reward.shape[0], st.num_nodes(K, D)))
    for d in range(D + 1):
        w = K ** (D - d)
        for c in range(K**d):
            v[:, st.offset(K, d) + c] = reward[:, c * w : (c + 1) * w].max(1)
    return v


@pytest.fixture(scope="module")
def tree():
    lm, _ = st.make(seed=0, k=K, depth=D, problems=P, scale=2.0)
    greedy = np.array([st.path_probs(lm, p).argmax() for p in range(P)])
    rng = np.random.default_rng(0)
    top = greedy // K ** (D - 1)  # the greedy path's first choice
    best1 = (top + 1) % K * K ** (D - 1) + rng.integers(0, K ** (D - 1), P)
    best2 = (top + 2) % K * K ** (D - 1) + rng.integers(0, K ** (D - 1), P)
    problems = np.arange(P)

    def run(key, values):
        prm = st.prm_fn(lm, values, problems)
        return lm_mcts.mcts(key, lm, prm, S * CFG.max_steps, prompts=st.prompts(problems),
                            num_candidates=K, config=CFG, unvisited_value=1.0)  # fmt: skip

    f = jax.jit(run)
    r1, r2 = ladder(rng, best1), ladder(rng, best2)
    out1 = f(jax.random.key(0), jnp.asarray(exact_values(r1)))
    out2 = f(jax.random.key(0), jnp.asarray(exact_values(r2)))
    return dict(lm=lm, f=f, greedy=greedy, best=(best1, best2), reward=(r1, r2), out=(out1, out2))


def leaves(lm, res):
    code, depth = st.decode_rows(lm, res.tokens[:, 0], res.num_tokens[:, 0])
    return np.asarray(code), np.asarray(depth)


def test_finds_the_exact_best_path_against_the_prior(tree):
    lm = tree["lm"]
    for (res, info), best, reward in zip(tree["out"], tree["best"], tree["reward"], strict=True):
        code, depth = leaves(lm, res)
        assert (depth == D).all() and np.asarray(res.finished).all()
        np.testing.assert_array_equal(code, best)
        assert (code != tree["greedy"]).all()  # the LM's greedy path is not the answer
        np.testing.assert_allclose(np.asarray(res.scores[:, 0]), reward[np.arange(P), best], 1e-6)
        # Every committed node lies on the best path, so its exact value is 0.95, and
        # the final commit's Q is the leaf's own reward (absorbing edges keep it).
        np.testing.assert_allclose(np.asarray(info.trace["value"][:D]), 0.95, atol=1e-6)
        np.testing.assert_allclose(np.asarray(info.trace["q"][D - 1]), 0.95, atol=1e-6)
        assert int(info.num_rounds) == D
    # Negative: the two ladders have different best leaves; the search follows the values.
    assert (leaves(lm, tree["out"][0][0])[0] != leaves(lm, tree["out"][1][0])[0]).all()


def test_budget_is_respected_and_reported(tree):
    res, info = tree["out"][0]
    t = {n: np.asarray(x) for n, x in info.trace.items()}
    rounds = int(info.num_rounds)
    np.testing.assert_array_equal(t["simulations"][:rounds], S)
    assert int(info.prm_calls) == t["prm_calls"].sum() <= P * (1 + rounds * S)
    assert int(info.generated_tokens) == t["sampled_tokens"].sum() + t["refed_tokens"].sum()
    # Every step of the tree is 2 tokens: each scored expansion re-feeds exactly one
    # step (the root's score is not counted), each unfinished node samples k steps.
    assert t["refed_tokens"].sum() == 2 * int(info.prm_calls)
    assert t["sampled_tokens"].sum() % (2 * K) == 0
    assert t["sampled_tokens"].sum() <= 2 * K * int(info.prm_calls)
    assert int(info.generated_tokens) <= P * (1 + rounds * S) * (K + 1) * CFG.max_new_tokens
    assert int(info.prompt_tokens) == P * 2 and info.sequences == P * K
    assert t["nan_scores"].sum() == 0 and t["stuck"].sum() == 0
    assert 0 < int(info.decode_steps) <= 2 * CFG.max_new_tokens * (1 + rounds * S)


def test_same_key_same_answer(tree):
    res, info = tree["f"](jax.random.key(0), jnp.asarray(exact_values(tree["reward"][0])))
    ref, ref_info = tree["out"][0]
    for a, b in zip(jax.tree.leaves((res, info)), jax.tree.leaves((ref, ref_info)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_candidates=0), "num_candidates"),
        (dict(num_simulations=0), "num_simulations"),
        (dict(num_candidates=99), "num_candidates"),
        (dict(policy="alphago"), "policy"),
        (dict(c_puct=0.0), "c_puct"),
        (dict(unvisited_value=2.0), "unvisited_value"),
        (dict(dirichlet_fraction=2), r"dirichlet_fraction: expected a float in \[0, 1\], got 2"),
        (dict(dirichlet_fraction=-0.1), "dirichlet_fraction"),
        (dict(budget=0), "budget"),
        (dict(budget=core.Budget(tokens=50)), "budget: mcts needs budget.simulations"),
        (
            dict(budget=core.Budget(sequences=2), num_candidates=None, num_simulations=None),
            "budget: mcts .*simulations",
        ),
        (dict(budget=core.Budget(sequences=2, simulations=8)), "above budget.sequences = 2"),
        (dict(budget=core.Budget(simulations=1)), "exceeds budget.simulations = 1"),
    ],
)
def test_bad_input(tree, kwargs, match):
    args = dict(budget=8, num_candidates=K, num_simulations=2, config=CFG) | kwargs
    prm = st.prm_fn(tree["lm"], np.zeros((P, st.num_nodes(K, D))), np.arange(P))
    budget = args.pop("budget")
    with pytest.raises(ValueError, match=match):
        lm_mcts.mcts(jax.random.key(0), tree["lm"], prm, budget, prompts=st.prompts(np.arange(P)),
                     **{a: v for a, v in args.items() if v is not None})  # fmt: skip
    with pytest.raises(TypeError, match="config"):
        lm_mcts.mcts(jax.random.key(0), tree["lm"], prm, 8, prompts=st.prompts(np.arange(P)),
                     num_candidates=K, num_simulations=2, config={})  # fmt: skip


def test_transformer_one_simulation_gumbel_values_match_a_full_forward_pass():
    """A random tiny transformer, Gumbel MuZero with one simulation per step: the trace
    still finishes, and the PRM (reading each node's next-token logits) saw exactly the
    logits of a full forward pass over prompt + the committed prefix."""
    model = tr.Transformer(ar.VOCAB_SIZE, num_layers=1, d_model=16, num_heads=2, max_len=32)
    params = jax.jit(lambda k: tr.init_params(model, k))(jax.random.key(3))
    lm = tr.lm_functions(model, params)
    pr = jnp.asarray(ar.prompts(ar.split("test", 2, 2)))
    b, cap = pr.shape[0], 6

    def hook(logits, state):  # shorter steps: favour the step delimiter
        return logits.at[:, ar.STEP_ID].add(3.0)

    def prm(state, prompt_index):
        lg = state.logits
        return jax.nn.sigmoid(lg[:, ar.EOS] - lg[:, ar.STEP_ID])

    # max_steps = max_new_tokens: every commit adds >= 1 token, so every row finishes.
    cfg = lm_steps.StepConfig(eos_id=ar.EOS, step_id=ar.STEP_ID, max_new_tokens=cap,
                              max_steps=cap, logits_hook=hook)  # fmt: skip
    res, info = jax.jit(
        lambda key: lm_mcts.mcts(key, lm, prm, cap, prompts=pr, prompt_mask=pr != ar.PAD,
                                 num_candidates=2, config=cfg, policy="gumbel")
    )(jax.random.key(5))  # fmt: skip
    assert res.tokens.shape == (b, 1, cap) and res.scores.shape == (b, 1)
    assert np.asarray(res.finished).all()
    rounds = int(info.num_rounds)
    t = {n: np.asarray(x) for n, x in info.trace.items()}
    np.testing.assert_array_equal(t["simulations"][:rounds].max(1), 1)
    assert int(info.prm_calls) == t["prm_calls"].sum() <= b * (1 + rounds)
    assert int(info.generated_tokens) == t["sampled_tokens"].sum() + t["refed_tokens"].sum()
    assert int(info.generated_tokens) <= b * (1 + rounds) * 3 * cap
    toks, n = np.asarray(res.tokens[:, 0]), np.asarray(res.num_tokens[:, 0])
    # One causal forward pass over prompt + generated tokens: position p + m - 1 holds
    # the logits after the first m generated tokens.
    p = pr.shape[1]
    full = np.concatenate([np.asarray(pr), toks], 1)
    mask = np.concatenate([np.asarray(pr) != ar.PAD, np.arange(cap)[None] < n[:, None]], 1)
    logits = np.asarray(jax.jit(model.apply)(params, full, mask))
    checked = 0
    for i in range(b):
        stops = [j + 1 for j in range(n[i]) if toks[i, j] in (ar.STEP_ID, ar.EOS)]
        cuts = sorted(set(stops + [n[i]]))  # each commit adds one step (or fills the row)
        assert len(cuts) <= rounds
        for r, m in enumerate(cuts):
            lg = logits[i, p + m - 1]
            want = 1 / (1 + np.exp(-(lg[ar.EOS] - lg[ar.STEP_ID])))
            np.testing.assert_allclose(t["value"][r, i], want, atol=1e-5)
            checked += 1
        np.testing.assert_allclose(float(res.scores[i, 0]), t["value"][len(cuts) - 1, i])
    assert checked > b


def test_sampled_candidates_are_distinct_whole_steps():
    """``candidates="sampled"``: independent steps, a repeat is invalid (prior -inf-like),
    so the valid candidates of a node are pairwise different; "first_token" differs at
    the first token. On a 1-choice-token step tree both give k distinct valid children
    at the root when k = the branching factor and the LM is near-uniform (the sampled
    variant may repeat, then fewer are valid)."""
    lm, _ = st.make(0, k=3, depth=2, problems=1, scale=0.1)
    cfg = lm_steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=4, max_steps=2)
    state, _, _ = lm_steps.start(lm, st.prompts([0]), None, 1, cfg)
    one = lm_mcts._per_prompt(lm, state)
    one = jax.tree_util.tree_map(lambda x: x[0], one)
    for how in ("sampled", "first_token"):
        for seed in range(4):
            u = lm_mcts._uniforms(jax.random.key(seed), 1, 3, 4, lm.vocab_size)[0]
            cand, prior, _, _ = jax.jit(
                lambda u, s, how=how: lm_mcts._candidates(u, lm, s, cfg, 3, how)
            )(u, one)
            valid = np.asarray(lm_mcts._valid(prior))
            firsts = np.asarray(cand)[valid, 0]
            assert len(set(firsts.tolist())) == valid.sum(), (how, seed, cand, prior)
            if how == "first_token":
                assert valid.all()
    with pytest.raises(ValueError, match="candidates"):
        lm_mcts.mcts(
            jax.random.key(0),
            lm,
            lambda s, i: jnp.zeros(i.shape),
            4,
            prompts=st.prompts([0]),
            num_candidates=2,
            config=cfg,
            candidates="greedy",
        )


def _ladder_case(seed=1):
    lm, _ = st.make(seed=0, k=K, depth=D, problems=P, scale=2.0)
    rng = np.random.default_rng(seed)
    best = rng.integers(0, K**D, P)
    values = exact_values(ladder(rng, best))
    return lm, best, values


@pytest.mark.parametrize("policy, temperature", [("muzero", 1.5), ("gumbel", 0.7)])
def test_puct_and_gumbel_at_temperature_on_1_and_4_devices(policy, temperature, devices):
    """PUCT (first-play urgency) at T = 1.5 and Gumbel MuZero at T = 0.7 store, for every
    commit, the exact value of the prefix they committed (the re-fed steps, forced token by
    token under the tempered law, decode the right nodes), spend exactly S simulations per
    commit, and give the same answer with the prompts' trees sharded over 4 devices."""
    from inferax.sampling import distributed

    lm, best, values = _ladder_case()
    cfg = CFG._replace(temperature=temperature)
    prm = st.prm_fn(lm, values, np.arange(P))
    kw = dict(unvisited_value=1.0) if policy == "muzero" else {}

    sims = 16

    def run(key, mesh=None):
        pr = st.prompts(np.arange(P))
        return lm_mcts.mcts(key, lm, prm, sims * cfg.max_steps, prompts=pr, num_candidates=K,
                            config=cfg, policy=policy, mesh=mesh, **kw)  # fmt: skip

    res, info = st.jit(run)(jax.random.key(2))
    mesh = distributed.particle_mesh(devices[:4])
    res4, info4 = st.jit(functools.partial(run, mesh=mesh))(jax.random.key(2))
    for a, b in zip(jax.tree.leaves((res, info)), jax.tree.leaves((res4, info4)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)  # Q: rounding
    np.testing.assert_array_equal(np.asarray(res.tokens), np.asarray(res4.tokens))
    code, depth = leaves(lm, res)
    assert (depth == D).all() and np.asarray(res.finished).all()
    rounds = int(info.num_rounds)
    np.testing.assert_array_equal(np.asarray(info.simulations_per_prompt), sims * rounds)
    toks, num = np.asarray(res.tokens[:, 0]), np.asarray(res.num_tokens[:, 0])
    for r in range(rounds):  # the node committed in round r: the first r + 1 steps
        c, d = st.decode_rows(lm, toks, np.minimum(num, 2 * (r + 1)))
        want = values[np.arange(P), st.offset(K, np.asarray(d)) + np.asarray(c)]
        np.testing.assert_allclose(np.asarray(info.trace["value"][r]), want, atol=1e-6)
    assert code.shape == best.shape


class _DecodeCounter:
    """Tokens decoded per problem, counted by a host callback in ``decode_step``."""

    def __init__(self, lm, problems):
        self.lm, self.tokens = lm, np.zeros(problems, np.int64)

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def _count(self, valid, problem):
        np.add.at(self.tokens, np.asarray(problem)[np.asarray(valid)], 1)

    def decode_step(self, cache, token, valid):
        jax.debug.callback(self._count, valid, cache["problem"], ordered=True)
        return self.lm.decode_step(cache, token, valid)


@pytest.mark.parametrize(
    "budget",
    [
        core.Budget(simulations=5, sequences=K),  # 2 per commit: 2 commits, then stop
        core.Budget(simulations=400, tokens=60),
        core.Budget(simulations=400, prm_calls=20),
    ],
    ids=["simulations", "tokens", "prm_calls"],
)
def test_caps_are_never_exceeded_counted_at_run_time(budget):
    """Tokens decoded per prompt (counted on the host) equal info's and, with the PRM
    calls and simulations, never exceed the budget; the cap binds (a prompt stops)."""
    lm, _, values = _ladder_case()
    counter = _DecodeCounter(lm, P)
    prm = st.prm_fn(lm, values, np.arange(P))
    cfg = CFG._replace(max_steps=5)
    sims = 2 if budget.simulations == 5 else None
    res, info = st.jit(
        lambda k: lm_mcts.mcts(
            k,
            counter,
            prm,
            budget,
            prompts=st.prompts(np.arange(P)),
            num_candidates=K,
            num_simulations=sims,
            config=cfg,
        )  # fmt: skip
    )(jax.random.key(4))
    jax.effects_barrier()
    spent = {u: np.asarray(v) for u, v in info.spent().items()}
    np.testing.assert_array_equal(spent["tokens"], counter.tokens)
    assert not budget.exceeded({u: int(v.max()) for u, v in spent.items()})
    p = lm_mcts.plan(budget, config=cfg, num_candidates=K, num_simulations=sims)
    assert all(np.all(spent[u] <= p[u]) for u in ("tokens", "prm_calls", "simulations"))
    if sims:  # two commits of 2 simulations fit in 5, a third does not
        np.testing.assert_array_equal(spent["simulations"], 4)
    stopped = np.asarray(info.trace["out_of_budget"]).sum(0)
    assert np.all(stopped[~np.asarray(res.finished)[:, 0]] == 1)
    assert np.any(stopped)  # the cap did bind
