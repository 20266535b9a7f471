"""SMC steering (inferax.search.lm.steer) against exact enumeration on the step tree.

Truths: the target is ``p(path) 1[allowed] prod_t exp(potential_t)`` with a
token-level constraint (the first choice may not be choice 0: a logits hook) and
a step potential (``log value(node)`` of the node reached, ``-inf`` when a choice
repeats the previous one). ``exp(log_Z)`` is unbiased for its normaliser ``Z``
(computed by enumeration): its mean over many independent prompt groups matches
``Z`` within a z-test, for standard SMC and for the expand-then-resample variant.
Negative control: without the proposal correction (``p / q`` of the hooked
tokens) the normaliser would be ``sum q(path) ...``, which the same test rejects.
Constraints are never violated in the output. The arithmetic constraints are
checked on a bigram LM over the task's vocabulary. (The sharded population path,
``mesh=``, is lm_particle.run_rounds' and is tested on 1 vs 4 devices there.)
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic as ar
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import driver, steps
from inferax.search.lm import steer as ls
from tests.search import step_tree as st

K, D = 3, 3
LM, LEAF = st.make(2, k=K, depth=D, problems=1, scale=0.7)
G, N = 4096, 4
PROMPTS = st.prompts(np.zeros(G, np.int32))
VALUES = np.random.default_rng(1).uniform(0.2, 0.9, size=(1, st.num_nodes(K, D)))
Z_CRIT = 4.5

# Compile cheaply: the programs run in well under a second, XLA's CPU codegen is the cost
# (the loop fusion emitters and LLVM optimisation roughly double the compile time).
jit = st.jit


def hook(logits, s):  # the first choice may not be choice 0
    ban = (s.num_tokens == 0)[:, None] & (jnp.arange(logits.shape[1]) == st.FIRST)[None]
    return jnp.where(ban, -jnp.inf, logits)


def potential(s, prompt_index):
    code, depth = st.decode_rows(LM, s.tokens, s.num_tokens)
    v = jnp.log(jnp.asarray(VALUES, jnp.float32)[0, st.offset(K, depth) + code])
    last = code % K
    prev = (code // K) % K
    repeat = (depth >= 2) & (last == prev)
    return jnp.where(repeat, -jnp.inf, v)


CFG = steps.StepConfig(st.EOS, st.STEP, max_new_tokens=2 * D, max_steps=D, logits_hook=hook)


def digits_of(code):
    return [(code // K ** (D - 1 - d)) % K for d in range(D)]


def exact_z(corrected=True):
    """Sum over allowed leaves of p(leaf) prod_t value(node_t); with ``corrected=False``
    the hooked proposal's probabilities replace p (what an uncorrected weight targets)."""
    p = st.path_probs(LM, 0)
    t0 = np.asarray(LM.tables[0, 0], np.float64)
    p0 = np.exp(t0 - t0.max()) / np.exp(t0 - t0.max()).sum()
    z = 0.0
    for code in range(K**D):
        dig = digits_of(code)
        if dig[0] == 0 or any(dig[i] == dig[i + 1] for i in range(D - 1)):
            continue
        c, pot = 0, 1.0
        for d, x in enumerate(dig):
            c = c * K + x
            pot *= VALUES[0, st.offset(K, d + 1) + c]
        z += p[code] * pot / (1.0 if corrected else 1.0 - p0[0])
    return z


@functools.partial(jit, static_argnames=("expand", "mesh"))
def run(key, expand=1, mesh=None):
    res, info = ls.smc_steer(
        key, LM, potential, N, prompts=PROMPTS, config=CFG, expand=expand, mesh=mesh
    )
    return res, info, st.decode_rows(LM, res.tokens, res.num_tokens)


def check_run(res, info, rows, expand):
    zhat = np.exp(np.asarray(info.trace["log_Z"][-1], np.float64))
    z = exact_z()
    se = zhat.std(ddof=1) / np.sqrt(G)
    assert abs(zhat.mean() - z) / se < Z_CRIT, (zhat.mean(), z, se)
    assert abs(zhat.mean() - exact_z(corrected=False)) / se > 10  # negative control
    # constraints: the hook is never violated; weighted candidates satisfy the condition
    code, depth = rows
    code, w = np.asarray(code), np.asarray(res.weights)
    dig = np.stack([(code // K ** (D - 1 - d)) % K for d in range(D)], -1)
    assert np.all(np.asarray(depth) == D) and np.all(dig[..., 0] != 0)
    rep = np.any(dig[..., 1:] == dig[..., :-1], axis=-1)
    assert not np.any(rep & (w > 0))  # violators carry no weight
    if expand == 1:  # (they exist: standard SMC resamples only when the ESS is low)
        assert np.any(rep)
    ok = ~np.asarray(info.trace["all_invalid"][-1])
    chosen = np.take_along_axis(rep, np.asarray(res.choice)[:, None], 1)[:, 0]
    assert not np.any(chosen & ok)
    assert int(info.generated_tokens) == G * N * expand * 2 * D
    assert int(info.prm_calls) == G * N * expand * D
    assert info.sequences == G * N


def test_standard_smc_evidence_is_unbiased_and_constraints_hold():
    res, info, rows = run(jax.random.key(0))
    check_run(res, info, rows, 1)
    resampled = np.asarray(info.trace["resampled"])
    assert 0 < resampled.mean() < 1  # ESS-triggered


def test_expand_then_resample_evidence_is_unbiased_and_constraints_hold():
    res, info, rows = run(jax.random.key(1), expand=3)
    check_run(res, info, rows, 3)
    assert np.asarray(info.trace["resampled"]).all()


class Bigram:
    """Next-token logits = table[last token] over the arithmetic vocabulary."""

    vocab_size = ar.VOCAB_SIZE
    max_len = None
    cache_axes = {"last": 0}

    def __init__(self, table):
        self.table = table

    def init_cache(self, batch_size, max_len):
        return {"last": jnp.zeros((batch_size,), jnp.int32)}

    def prefill(self, cache, tokens, mask):
        return self.table[tokens[:, -1]], {"last": tokens[:, -1]}

    def decode_step(self, cache, token, valid):
        last = jnp.where(valid, token, cache["last"])
        return self.table[last], {"last": last}


LINE = re.compile(r"^(\d[-+*]\d=\d;)*(#\d)?$")


def test_arithmetic_constraints_hold_in_the_output():
    lm = Bigram(jax.random.normal(jax.random.key(0), (ar.VOCAB_SIZE, ar.VOCAB_SIZE)) * 2.0)
    probs = ar.split("test", 3, 2)
    pr = jnp.asarray(ar.prompts(probs))
    cfg = steps.StepConfig(
        ar.EOS, ar.STEP_ID, max_new_tokens=4 * ar.STEP_LEN + ar.ANSWER_LEN, max_steps=4,
        logits_hook=ar.arithmetic_format_hook(),
    )  # fmt: skip
    res, info = jit(
        lambda k: ls.smc_steer(k, lm, ar.no_repeated_result(), 16, prompts=pr, config=cfg)
    )(jax.random.key(3))
    tok, w = np.asarray(res.tokens), np.asarray(res.weights)
    assert np.all(np.isfinite(np.asarray(info.trace["log_Z"][-1])))
    for b in range(2):
        for i in range(16):
            text = ar.decode(tok[b, i])
            assert LINE.match(text), text  # the format, always
            results = [line[-1] for line in text.split(";")[:-1]]
            if w[b, i] > 0:
                assert len(set(results)) == len(results), text
        assert w[b, int(res.choice[b])] == w[b].max() > 0


def test_example_constraints_on_handmade_prefixes():
    def state_of(texts, cap=14):
        toks = np.zeros((len(texts), cap), np.int32)
        for i, t in enumerate(texts):
            e = ar.encode(t)
            toks[i, : len(e)] = e
        n = np.asarray([len(t) for t in texts], np.int32)
        z = jnp.zeros((len(texts),), jnp.int32)
        return dec.DecodeState(jnp.asarray(toks), jnp.asarray(n), z, z.astype(bool), None, None)

    s = state_of(["3+4=7;7*2=4;", "3+4=7;7*2=7;", "3+4=7;#", "3+4=7;7*"])

    @jit
    def both(s):
        pot = ar.no_repeated_result()(s, jnp.zeros(4, jnp.int32))
        return pot, ar.arithmetic_format_hook()(jnp.zeros((4, ar.VOCAB_SIZE)), s)

    pot, logits = both(s)
    pot = np.asarray(pot)
    assert pot[0] == 0 and pot[1] == -np.inf and pot[2] == 0 and pot[3] == 0
    allowed = np.isfinite(np.asarray(logits))
    digits = set(ar.DIGIT_IDS.tolist())
    assert set(np.flatnonzero(allowed[0])) == digits | {ar.ANSWER_ID}  # a new line
    assert set(np.flatnonzero(allowed[2])) == digits  # after '#'
    assert set(np.flatnonzero(allowed[3])) == digits  # after an operator


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget=0), "budget"),
        (dict(budget=core.Budget(tokens=50)), "budget: smc_steer needs a limit in 'sequences'"),
        (dict(expand=0), "expand"),
        (dict(potential_fn=3), "potential_fn"),
        (dict(config=CFG._replace(temperature=0.0)), "temperature"),
        (dict(tau=0.0), "tau"),
        (dict(resampling="roulette"), "resampling"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(potential_fn=potential, budget=2, config=CFG)
    args.update(kwargs)
    pot, budget = args.pop("potential_fn"), args.pop("budget")
    with pytest.raises((ValueError, TypeError), match=match):
        ls.smc_steer(jax.random.key(0), LM, pot, budget, prompts=st.prompts([0]), **args)


# Nucleus sampling with a mask (issue 17): the target is the LM's own sampling law
# (temperature, then top-p) restricted to the allowed tokens; the proposal must be that
# law masked, not the nucleus of the masked logits (which never proposes an allowed
# token that the renormalised nucleus drops: the evidence lost that mass).
K4, T_NUC, TOP_P, BANNED = 4, 0.8, 0.7, 2  # 4 choices: nuclei of 2-3 tokens
LM_NUC, _ = st.make(2, k=K4, depth=D, problems=1, scale=0.5)
VALUES_NUC = np.random.default_rng(1).uniform(0.2, 0.9, size=(1, st.num_nodes(K4, D)))


def ban_hook(logits, s):  # choice BANNED is never allowed
    return logits.at[:, st.FIRST + BANNED].set(-jnp.inf)


CFG_NUC = steps.StepConfig(
    st.EOS, st.STEP, max_new_tokens=2 * D, max_steps=D, temperature=T_NUC, top_p=TOP_P,
    logits_hook=ban_hook,
)  # fmt: skip


def nucleus_masses(old=False):
    """Exact ``p(leaf) 1[allowed] prod_t value(node_t)`` per leaf (float64), ``p`` the
    LM's law at ``T_NUC`` and ``TOP_P``; ``old=True``: restricted to what the nucleus
    of the masked logits can propose (what the uncorrected proposal targeted)."""

    def law(x):  # decoding.process_logits in float64, normalised
        x = x / T_NUC
        s = np.sort(x)[::-1]
        pr = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        keep = x >= s[np.cumsum(pr) - pr < TOP_P].min()
        p = np.where(keep, np.exp(x - x.max()), 0.0)
        return p / p.sum()

    t = np.asarray(LM_NUC.tables[0], np.float64)
    out = np.zeros(K4**D)
    for code in range(K4**D):
        node, m = 0, 1.0
        for d in range(D):
            c = (code // K4 ** (D - 1 - d)) % K4
            x = t[st.offset(K4, d) + node]
            p = law(x)
            allowed = np.arange(K4) != BANNED
            if old:
                allowed &= law(np.where(allowed, x, -np.inf)) > 0
            node = node * K4 + c
            m *= p[c] * allowed[c] * VALUES_NUC[0, st.offset(K4, d + 1) + node]
        out[code] = m
    return out


def value_potential(s, prompt_index):
    code, depth = st.decode_rows(LM_NUC, s.tokens, s.num_tokens)
    return jnp.log(jnp.asarray(VALUES_NUC, jnp.float32)[0, st.offset(K4, depth) + code])


@functools.partial(jit, static_argnames=("expand",))
def run_nucleus(key, expand=1):
    res, info = ls.smc_steer(
        key, LM_NUC, value_potential, N, prompts=PROMPTS, config=CFG_NUC, expand=expand
    )
    return res, info, st.decode_rows(LM_NUC, res.tokens, res.num_tokens)


@pytest.mark.parametrize("expand", [1, 3])
def test_nucleus_with_a_mask_evidence_and_weighted_leaves_match_enumeration(expand):
    res, info, (code, depth) = run_nucleus(jax.random.key(7), expand=expand)
    exact, old = nucleus_masses(), nucleus_masses(old=True)
    assert exact.sum() - old.sum() > 0.02  # the control differs from the truth
    zhat = np.exp(np.asarray(info.trace["log_Z"][-1], np.float64))
    se = zhat.std(ddof=1) / np.sqrt(G)
    assert abs(zhat.mean() - exact.sum()) / se < Z_CRIT, (zhat.mean(), exact.sum(), se)
    assert abs(zhat.mean() - old.sum()) / se > 10  # negative control
    # The weighted leaves: zhat_g sum_i w_gi 1[leaf_gi = l] is unbiased for mass(l).
    code, w = np.asarray(code), np.asarray(res.weights, np.float64)
    assert np.all(np.asarray(depth) == D)
    per = np.zeros((G, K4**D))
    np.add.at(per, (np.repeat(np.arange(G), N), code.reshape(-1)), (zhat[:, None] * w).reshape(-1))
    mean, se_l = per.mean(0), per.std(0, ddof=1) / np.sqrt(G)
    z = np.abs(mean - exact) / np.maximum(se_l, 1e-12)
    assert np.all((z < Z_CRIT) | ((exact == 0) & (mean == 0))), (mean, exact, se_l)
    assert np.max(np.abs(mean - old) / np.maximum(se_l, 1e-12)) > 10  # negative control
    # banned leaves never carry weight
    dig = np.stack([(code // K4 ** (D - 1 - d)) % K4 for d in range(D)], -1)
    assert not np.any(np.any(dig == BANNED, -1) & (w > 0))


# Expansion from non-uniform parent weights: children of parent i are rows i K .. i K + K - 1
# (``jnp.repeat``), each starting from 1 / K of parent i's weight. One round from three
# distinct parents weighted 0.6 / 0.3 / 0.1: zhat_inc (1 / N) sum_sel 1[node = m] is
# unbiased for w_i p(c | parent i) value(m) at every child m = (i, c); a tiled expansion
# (children i, i + N, ..) would pair children with the wrong parents' weights (here: the
# uniform 1 / 3 each), which the same test rejects.
W_PARENT = np.array([0.6, 0.3, 0.1])
CFG_T = steps.StepConfig(st.EOS, st.STEP, max_new_tokens=2 * D, max_steps=D, temperature=1.3)


def node_potential(s, prompt_index):
    code, depth = st.decode_rows(LM, s.tokens, s.num_tokens)
    return jnp.log(jnp.asarray(VALUES, jnp.float32)[0, st.offset(K, depth) + code])


@jit
def one_expanded_round(key):
    n = len(W_PARENT)
    start = driver.start(LM, PROMPTS, None, n, CFG_T)
    rows = jnp.arange(G * n) % n

    def force(logits, s):  # row j of every group takes choice j first
        col = jnp.arange(logits.shape[1])[None]
        first = (s.num_tokens == 0)[:, None]
        return jnp.where(first & (col != st.FIRST + rows[:, None]), -jnp.inf, logits)

    state, _ = dec.generate(jax.random.fold_in(key, 1), LM, start.state, eos_id=st.EOS,
                            step_id=st.STEP, until="step", logits_hook=force)  # fmt: skip
    policy = ls.steer_policy(LM, node_potential, n, CFG_T, expand=K)
    s0 = policy.init(start._replace(state=state))
    s0 = s0._replace(log_weights=jnp.broadcast_to(jnp.log(jnp.asarray(W_PARENT)), (G, n)))
    rnd = driver.Round(jnp.int32(1), jnp.bool_(False), steps.Ledger.zeros(G), None, LM,
                       node_potential, CFG_T, start.prompt_index)  # fmt: skip
    new, ledger, trace = policy.step(key, s0, rnd)
    ps = new.particles.state
    return st.decode_rows(LM, ps.tokens, ps.num_tokens), new.log_Z, new.log_weights, ledger


def test_expansion_from_non_uniform_parent_weights_matches_enumeration():
    (code, depth), log_z, lw, ledger = one_expanded_round(jax.random.key(5))
    n = len(W_PARENT)
    code, depth = np.asarray(code).reshape(G, n), np.asarray(depth).reshape(G, n)
    assert np.all(depth == 2)
    np.testing.assert_allclose(np.asarray(lw), 0.0)  # resampled: uniform weights
    np.testing.assert_array_equal(np.asarray(ledger.tokens), n * K * 2)  # K children each
    np.testing.assert_array_equal(np.asarray(ledger.prm_calls), n * K)
    t = np.asarray(LM.tables[0], np.float64) / CFG_T.temperature
    exact, tiled = np.zeros(K * K), np.zeros(K * K)
    for i in range(K):
        p = np.exp(t[st.offset(K, 1) + i] - t[st.offset(K, 1) + i].max())
        p /= p.sum()
        for c in range(K):
            v = VALUES[0, st.offset(K, 2) + i * K + c]
            exact[i * K + c] = W_PARENT[i] * p[c] * v
            tiled[i * K + c] = p[c] * v / K
    zinc = np.exp(np.asarray(log_z, np.float64))
    est = np.zeros((G, K * K))
    np.add.at(est, (np.repeat(np.arange(G), n), code.reshape(-1)), np.repeat(zinc / n, n))
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(G)
    assert np.max(np.abs(mean - exact) / se) < Z_CRIT, (mean, exact, se)
    assert np.max(np.abs(mean - tiled) / se) > 10  # negative control
