"""Tests for inferax.search.lm.decoding: the protocol, batched sampling, hooks and errors.

Truths: a bigram LM with an exact logits table (token frequencies against
softmax(logits / T) by a chi-square test, with a negative control at the wrong
temperature; top-k / top-p sets computed in NumPy); a second, independently
written pure-JAX recurrent LM plugged into the protocol (cached logits equal
its full forward pass, greedy decoding equals a Python argmax loop); the
transformer's full forward pass (greedy decoding); the same key gives the same
samples in one batch or two and on 1 or 4 devices.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

from inferax.models import arithmetic as ar
from inferax.models import transformer as tr
from inferax.search.lm import decoding as dec

V = ar.VOCAB_SIZE


class Bigram(NamedTuple):
    """Next-token logits = table[last token]; cache = the last token."""

    table: jax.Array
    vocab_size: int = V
    max_len: int | None = None
    cache_axes: object = {"last": 0}

    def init_cache(self, batch_size, max_len):
        return {"last": jnp.zeros((batch_size,), jnp.int32)}

    def prefill(self, cache, tokens, mask):
        return self.table[tokens[:, -1]], {"last": tokens[:, -1]}

    def decode_step(self, cache, token, valid):
        last = jnp.where(valid, token, cache["last"])
        return self.table[last], {"last": last}


def rnn_init(key, d=16):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "emb": jax.random.normal(k1, (V, d)),
        "w": jax.random.normal(k2, (d, d)) / np.sqrt(d),
        "out": jax.random.normal(k3, (d, V)) * 2.0,
    }


def rnn_cell(p, h, tok, valid):
    new = jnp.tanh(p["emb"][tok] + h @ p["w"])
    return jnp.where(valid[:, None], new, h)


def rnn_forward(p, tokens, mask):
    """Full forward pass: logits after every position ``[N, T, V]``."""

    def f(h, xs):
        h = rnn_cell(p, h, *xs)
        return h, h @ p["out"]

    h0 = jnp.zeros((tokens.shape[0], p["w"].shape[0]))
    _, out = jax.lax.scan(f, h0, (tokens.T, mask.T))
    return jnp.swapaxes(out, 0, 1)


class RNN(NamedTuple):
    """A pure-JAX Elman network in the decoding protocol (written apart from the transformer)."""

    p: dict
    vocab_size: int = V
    max_len: int | None = None
    cache_axes: object = {"h": 0}

    def init_cache(self, batch_size, max_len):
        return {"h": jnp.zeros((batch_size, self.p["w"].shape[0]))}

    def prefill(self, cache, tokens, mask):
        def f(h, xs):
            return rnn_cell(self.p, h, *xs), None

        h, _ = jax.lax.scan(f, cache["h"], (tokens.T, mask.T))
        return h @ self.p["out"], {"h": h}

    def decode_step(self, cache, token, valid):
        h = rnn_cell(self.p, cache["h"], token, valid)
        return h @ self.p["out"], {"h": h}


TABLE = jnp.asarray(
    np.random.default_rng(0).normal(size=(V, V)) * 1.5 + np.eye(V)[::-1] * 2, jnp.float32
)
PROMPT = jnp.array([[ar.BOS, 5]], jnp.int32)


def _one_token(key, lm, n, **kw):
    s, _ = jax.jit(
        lambda k: dec.sample(k, lm, PROMPT, num_samples=n, max_new_tokens=1, eos_id=ar.EOS, **kw)
    )(key)
    return np.asarray(s.tokens[:, 0])


@pytest.mark.parametrize("temperature", [0.6, 1.7])
def test_token_frequencies_match_softmax(temperature):
    lm = Bigram(TABLE)
    toks = _one_token(jax.random.key(1), lm, 4000, temperature=temperature)
    counts = np.bincount(toks, minlength=V)

    def pvalue(t):
        x = np.asarray(TABLE[5], np.float64) / t
        prob = np.exp(x - x.max())
        prob /= prob.sum()
        keep = prob * 4000 > 5
        exp, obs = prob[keep] * 4000, counts[keep]
        if not keep.all():
            exp, obs = np.append(exp, prob[~keep].sum() * 4000), np.append(obs, counts[~keep].sum())
        return stats.chisquare(obs, exp).pvalue

    assert pvalue(temperature) > 1e-3
    assert pvalue(1.0) < 1e-6  # negative control: the wrong temperature is rejected


def test_top_k_and_top_p_stay_in_the_set():
    lm = Bigram(TABLE)
    row = np.asarray(TABLE[5], np.float64)
    toks = _one_token(jax.random.key(2), lm, 2000, top_k=3)
    top3 = set(np.argsort(row)[-3:].tolist())
    assert set(toks.tolist()) == top3
    prob = np.exp(row - row.max())
    prob /= prob.sum()
    order = np.argsort(-prob)
    cum = np.cumsum(prob[order])
    nucleus = set(order[: int(np.searchsorted(cum, 0.6) + 1)].tolist())
    toks = _one_token(jax.random.key(3), lm, 2000, top_p=0.6)
    assert set(toks.tolist()) == nucleus and len(nucleus) < V
    # within the nucleus: frequencies of the renormalised distribution
    idx = sorted(nucleus)
    exp = prob[idx] / prob[idx].sum() * 2000
    assert stats.chisquare(np.bincount(toks, minlength=V)[idx], exp).pvalue > 1e-3


def test_second_lm_cached_equals_full_and_greedy_loop():
    p = rnn_init(jax.random.key(0))
    lm = RNN(p)
    toks = jnp.asarray(np.random.default_rng(1).integers(3, V, size=(3, 12)), jnp.int32)
    mask = jnp.ones(toks.shape, bool).at[1, :4].set(False)  # row 1 left-padded
    full = rnn_forward(p, toks, mask)
    cache = lm.init_cache(3, 12)
    logits, cache = lm.prefill(cache, toks[:, :5], mask[:, :5])
    outs = [logits]
    for t in range(5, 12):
        logits, cache = lm.decode_step(cache, toks[:, t], mask[:, t])
        outs.append(logits)
    np.testing.assert_allclose(np.stack(outs, 1), full[:, 4:], atol=1e-5)
    # greedy decoding through the sampler == argmax loop over the full forward pass
    s, info = jax.jit(
        lambda k: dec.sample(k, lm, toks[:, :5], num_samples=1, max_new_tokens=6,
                             eos_id=None, temperature=0.0)
    )(jax.random.key(0))  # fmt: skip
    seq = toks[:, :5]
    for _ in range(6):
        nxt = jnp.argmax(rnn_forward(p, seq, jnp.ones(seq.shape, bool))[:, -1], -1)
        seq = jnp.concatenate([seq, nxt[:, None].astype(jnp.int32)], 1)
    np.testing.assert_array_equal(s.tokens, seq[:, 5:])
    assert int(info.generated_tokens) == 18 and int(info.decode_steps) == 6


@pytest.fixture(scope="module")
def tiny():
    model = tr.Transformer(V, num_layers=1, d_model=16, num_heads=2, max_len=40)
    params = jax.jit(lambda k: tr.init_params(model, k))(jax.random.key(3))
    return model, params, tr.lm_functions(model, params)


def test_temperature_zero_is_greedy(tiny):
    model, params, lm = tiny
    pr = jnp.asarray(ar.prompts(ar.split("test", 3, 3)))
    s, _ = jax.jit(
        lambda k: dec.sample(k, lm, pr, num_samples=2, max_new_tokens=10, eos_id=None,
                             temperature=0.0)
    )(jax.random.key(0))  # fmt: skip
    apply = jax.jit(model.apply)
    buf = jnp.zeros((3, pr.shape[1] + 10), jnp.int32).at[:, : pr.shape[1]].set(pr)
    for t in range(10):
        pos = pr.shape[1] + t
        real = jnp.broadcast_to(jnp.arange(buf.shape[1]) < pos, buf.shape)
        logits = apply(params, buf, real)
        buf = buf.at[:, pos].set(jnp.argmax(logits[:, pos - 1], -1))
    want = np.repeat(np.asarray(buf[:, pr.shape[1] :]), 2, axis=0)
    np.testing.assert_array_equal(s.tokens, want)


def test_same_key_same_samples_batch_split_and_devices(tiny, devices):
    _, _, lm = tiny
    pr = jnp.asarray(ar.prompts(ar.split("test", 3, 4)))

    def run(k, prompts, first):
        return dec.sample(k, lm, prompts, num_samples=2, max_new_tokens=12, eos_id=ar.EOS,
                          step_id=ar.STEP_ID, first_index=first)[0].tokens  # fmt: skip

    f = jax.jit(run, static_argnums=2)
    key = jax.random.key(7)
    whole = np.asarray(f(key, pr, 0))
    halves = np.concatenate([f(key, pr[:2], 0), f(key, pr[2:], 4)])
    np.testing.assert_array_equal(whole, halves)
    assert len({tuple(r) for r in whole}) > 4  # rows differ: per-row keys
    mesh = jax.sharding.Mesh(np.asarray(devices), ("particles",))
    sharded = jax.device_put(pr, NamedSharding(mesh, P("particles")))
    np.testing.assert_array_equal(np.asarray(f(key, sharded, 0)), whole)


def test_until_step_and_budget_forcing():
    lm = Bigram(TABLE)
    hook = dec.budget_forcing(answer_id=ar.ANSWER_ID, step_id=ar.STEP_ID, min_steps=2,
                              max_steps=3, eos_id=ar.EOS)  # fmt: skip
    # make ';' likely so steps happen, '#' likely so the suppression matters
    table = TABLE.at[:, ar.STEP_ID].add(2.0).at[:, ar.ANSWER_ID].add(2.5)
    s, info = jax.jit(
        lambda k: dec.sample(k, Bigram(table), PROMPT, num_samples=200, max_new_tokens=40,
                             eos_id=ar.EOS, step_id=ar.STEP_ID, logits_hook=hook)
    )(jax.random.key(4))  # fmt: skip
    toks = np.asarray(s.tokens)
    forced = 0
    for row, n in zip(toks, np.asarray(s.num_tokens), strict=True):
        row = row[:n].tolist()
        steps = np.cumsum([t == ar.STEP_ID for t in row])
        for j, t in enumerate(row):
            before = steps[j - 1] if j else 0
            if t in (ar.ANSWER_ID, ar.EOS):
                assert before >= 2
            if j and row[j - 1] == ar.STEP_ID and before >= 3:
                assert t == ar.ANSWER_ID
                forced += 1
    assert forced > 10
    assert int(info.generated_tokens) == int(s.num_tokens.sum())
    # negative control: without the hook, answers come early
    s0, _ = dec.sample(jax.random.key(4), Bigram(table), PROMPT, num_samples=200,
                       max_new_tokens=3, eos_id=ar.EOS)  # fmt: skip
    assert np.any(np.asarray(s0.tokens) == ar.ANSWER_ID)
    # until="step": every row stops right after its first delimiter (or EOS / full)
    s1, _ = dec.sample(jax.random.key(5), lm, PROMPT, num_samples=50, max_new_tokens=30,
                       eos_id=ar.EOS, step_id=ar.STEP_ID, until="step")  # fmt: skip
    for row, n, fin in zip(np.asarray(s1.tokens), np.asarray(s1.num_tokens),
                           np.asarray(s1.finished), strict=True):  # fmt: skip
        assert (row[n - 1] == ar.STEP_ID and list(row[: n - 1]).count(ar.STEP_ID) == 0) or fin
    s2, _ = dec.generate(jax.random.key(6), lm, s1, eos_id=ar.EOS, step_id=ar.STEP_ID,
                         until="step")  # fmt: skip
    grew = np.asarray(s2.num_tokens > s1.num_tokens)
    assert np.all(grew == ~np.asarray(s1.finished))
    for row, n, k, fin in zip(
        np.asarray(s2.tokens),
        np.asarray(s2.num_tokens),
        np.asarray(s2.num_steps),
        np.asarray(s2.finished),
        strict=True,
    ):
        assert list(row[:n]).count(ar.STEP_ID) == k  # fmt: skip
        assert row[n - 1] == ar.STEP_ID or fin


def test_bad_input(tiny):
    _, _, lm = tiny
    pr = jnp.ones((2, 9), jnp.int32)
    with pytest.raises(ValueError, match="prompts.*max_len 40"):
        dec.sample(jax.random.key(0), lm, pr, max_new_tokens=32, eos_id=2)
    with pytest.raises(ValueError, match="num_samples"):
        dec.start(lm, pr, num_samples=0, max_new_tokens=4)
    state, _ = dec.start(Bigram(TABLE), PROMPT, max_new_tokens=4)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"top_p: expected a float in \(0, 1\]"):
            dec.generate(jax.random.key(0), Bigram(TABLE), state, eos_id=2, top_p=bad)
    with pytest.raises(ValueError, match="temperature"):
        dec.generate(jax.random.key(0), Bigram(TABLE), state, eos_id=2, temperature=-1.0)
    with pytest.raises(ValueError, match="until"):
        dec.generate(jax.random.key(0), Bigram(TABLE), state, eos_id=2, until="line")
    with pytest.raises(ValueError, match="top_k"):
        dec.generate(jax.random.key(0), Bigram(TABLE), state, eos_id=2, top_k=V + 1)
    with pytest.raises(TypeError, match="lm: expected the decoding protocol"):
        dec.start(object(), PROMPT, max_new_tokens=2)


def test_gathered_population_continues_as_its_ancestors(tiny):
    """particles.take over a DecodeState (tokens, layer-major cache, shared index) keeps
    every row's logits equal to the full forward pass over its own tokens (issue 9's
    resampling step relies on it)."""
    from inferax.sampling import particles

    model, params, lm = tiny
    pr = jnp.asarray(ar.prompts(ar.split("test", 2, 2)))
    s, _ = jax.jit(
        lambda k: dec.sample(k, lm, pr, num_samples=3, max_new_tokens=14, eos_id=ar.EOS,
                             step_id=ar.STEP_ID, until="step")
    )(jax.random.key(8))  # fmt: skip
    idx = jnp.array([5, 5, 0, 2, 1, 3])
    g = particles.take(s, idx, particles.leaf_axes(dec.state_axes(lm), s))
    # Every cache leaf is per row: a row has used its prompt's slots and its own tokens'.
    np.testing.assert_array_equal(g.cache["fill"], np.asarray(s.cache["fill"])[np.asarray(idx)])
    np.testing.assert_array_equal(g.cache["fill"], pr.shape[1] + np.asarray(g.num_tokens))
    rows = np.repeat(np.asarray(pr), 3, 0)[np.asarray(idx)]
    n = np.asarray(g.num_tokens)
    full = np.zeros((6, pr.shape[1] + 14), np.int32)
    full[:, : pr.shape[1]] = rows
    full[:, pr.shape[1] :] = np.asarray(g.tokens)
    real = np.arange(full.shape[1])[None] < (pr.shape[1] + n)[:, None]
    ref = np.asarray(jax.jit(model.apply)(params, full, real))
    want = ref[np.arange(6), pr.shape[1] + n - 1]
    np.testing.assert_allclose(np.asarray(g.logits), want, atol=2e-5)


def test_held_rows_use_no_cache_slots(tiny):
    """Step-by-step rounds with rows of different step lengths: a round runs as long as
    its longest row, so the rounds together take more loop iterations than a row has
    slots. The cache must still hold exactly each row's tokens (a shared write index
    would run past the end and overwrite the last slot)."""
    model, params, lm = tiny
    pr = jnp.asarray(ar.prompts(ar.split("test", 2, 2)))
    new = 14
    state, _ = dec.start(lm, pr, num_samples=4, max_new_tokens=new)
    step = jax.jit(lambda k, s: dec.generate(k, lm, s, eos_id=ar.EOS, step_id=ar.STEP_ID,
                                             until="step", temperature=2.0))  # fmt: skip
    iterations = 0
    for i in range(8):
        state, info = step(jax.random.key(i), state)
        iterations += int(info.decode_steps)
    assert iterations > new, iterations  # the situation this test is about
    n = np.asarray(state.num_tokens)
    full = np.concatenate([np.repeat(np.asarray(pr), 4, 0), np.asarray(state.tokens)], 1)
    real = np.arange(full.shape[1])[None] < (pr.shape[1] + n)[:, None]
    ref = np.asarray(jax.jit(model.apply)(params, full, real))
    want = ref[np.arange(len(n)), pr.shape[1] + n - 1]
    live = n < new  # a full row's logits are not updated after its last token
    np.testing.assert_allclose(np.asarray(state.logits)[live], want[live], atol=2e-5)
    np.testing.assert_array_equal(state.cache["fill"], pr.shape[1] + n)
