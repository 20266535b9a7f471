"""Tests for inferax.models.transformer: KV-cache decoding against the full forward pass.

Truth: the full causal forward pass over the same (unpadded) tokens; a row's
logits must not depend on its left padding or on steps it was held for.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic as ar
from inferax.models import transformer as tr

MODEL = tr.Transformer(ar.VOCAB_SIZE, num_layers=2, d_model=32, num_heads=4, max_len=48)


@pytest.fixture(scope="module")
def params():
    return jax.jit(lambda k: tr.init_params(MODEL, k))(jax.random.key(0))


def test_cached_decoding_equals_full_forward_every_position(params):
    probs = ar.split("train", 3, 3) + ar.split("train", 2, 2)  # two prompt lengths: left pads
    pr = ar.prompts(probs)
    sol = ar.solutions(probs, ar.solution_length(3))
    lm = tr.lm_functions(MODEL, params)
    n, steps = len(probs), sol.shape[1] - 1
    cache = lm.init_cache(n, pr.shape[1] + steps + 3)
    logits, cache = jax.jit(lm.prefill)(cache, pr, pr != ar.PAD)
    step = jax.jit(lm.decode_step)
    got = [[row] for row in np.asarray(logits)]
    ptr = np.zeros(n, int)
    held = {3: 0, 4: 0, 5: 0}  # row 0 is held for three calls: invisible to it
    for t in range(steps + len(held)):
        valid = ptr < steps
        if t in held:
            valid[held[t]] = False
        tok = np.where(valid, sol[np.arange(n), np.minimum(ptr, steps)], 7)  # 7: ignored garbage
        lg, cache = step(cache, jnp.asarray(tok, jnp.int32), jnp.asarray(valid))
        for i in np.flatnonzero(valid):
            got[i].append(np.asarray(lg[i]))
        ptr += valid
    np.testing.assert_array_equal(
        np.asarray(cache["length"]), [pr.shape[1] - (pr[i] == 0).sum() + steps for i in range(n)]
    )
    # reference: full forward over prompt + solution, right-padded, one call
    plens = [ar.prompt_length(p.num_ops) for p in probs]
    full = np.zeros((n, max(plens) + sol.shape[1]), np.int32)
    for i, p in enumerate(probs):
        full[i, : plens[i] + sol.shape[1]] = np.concatenate(
            [ar.encode(p.prompt_text(), bos=True), sol[i]]
        )
    real = np.arange(full.shape[1])[None] < (np.array(plens) + sol.shape[1])[:, None]
    ref = np.asarray(jax.jit(MODEL.apply)(params, full, real))
    for i in range(n):
        g = np.stack(got[i])
        np.testing.assert_allclose(g, ref[i, plens[i] - 1 : plens[i] - 1 + len(g)], atol=2e-5)
        assert len(g) == steps + 1


def test_padding_mask_and_causality(params):
    seq = jnp.asarray(ar.encode("3+4*2?3+4=7;", bos=True))[None]
    apply = jax.jit(MODEL.apply)
    ref = apply(params, seq)
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32) + 9, seq], axis=1)
    mask = jnp.concatenate([jnp.zeros((1, 3), bool), jnp.ones(seq.shape, bool)], axis=1)
    out = apply(params, padded, mask)
    np.testing.assert_allclose(out[:, 3:], ref, atol=2e-5)
    # changing a later token never changes an earlier position's output
    other = seq.at[0, 8].set(5)
    out2 = apply(params, other)
    np.testing.assert_allclose(out2[:, :8], ref[:, :8], atol=1e-6)
    assert not np.allclose(out2[:, 8:], ref[:, 8:], atol=1e-3)


def test_scalar_head_and_errors(params):
    prm = tr.Transformer(ar.VOCAB_SIZE, num_layers=1, d_model=16, num_heads=2, out_dim=1)
    pp = jax.jit(lambda k: tr.init_params(prm, k))(jax.random.key(1))
    assert jax.eval_shape(prm.apply, pp, jnp.ones((2, 5), jnp.int32)).shape == (2, 5, 1)
    with pytest.raises(ValueError, match="model: expected a language model"):
        tr.lm_functions(prm, pp)
    with pytest.raises(ValueError, match="num_heads"):
        bad = tr.Transformer(ar.VOCAB_SIZE, d_model=30, num_heads=4)
        jax.eval_shape(lambda k: tr.init_params(bad, k), jax.random.key(0))
    cache = MODEL.init_cache(3, 10)
    assert jax.tree_util.tree_map(jnp.shape, cache)["k"] == (2, 3, 10, 4, 8)


def _reference_forward(params, tokens, model: tr.Transformer, drop_last_self=False) -> np.ndarray:
    """The transformer's causal forward pass in float64 NumPy, with no cache at all.

    ``drop_last_self``: the fault to detect, the last position not attending to its
    own key/value (what a dropped write into the last slot of a full cache does).
    """
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])

    def ln(x, q, eps=1e-6):  # flax LayerNorm: biased variance, eps inside the sqrt
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * q["scale"] + q["bias"]

    def gelu(x):  # flax nn.gelu: the tanh approximation
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    t = tokens.shape[1]
    x = p["embed"]["embedding"][tokens] + p["pos"]["embedding"][np.arange(t)][None]
    causal = np.tril(np.ones((t, t), bool))
    if drop_last_self:
        causal[-1, -1] = False
    for i in range(model.num_layers):
        qkv = np.einsum("ntd,dchk->ntchk", ln(x, p[f"ln1_{i}"]), p[f"qkv_{i}"]["kernel"])
        qkv = qkv + p[f"qkv_{i}"]["bias"]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = np.einsum("nthd,nshd->nhts", q, k) / np.sqrt(model.head_dim)
        logits = np.where(causal, logits, -np.inf)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att = att / att.sum(-1, keepdims=True)
        o = np.einsum("nhts,nshd->nthd", att, v)
        x = x + np.einsum("nthd,hde->nte", o, p[f"proj_{i}"]["kernel"]) + p[f"proj_{i}"]["bias"]
        h = ln(x, p[f"ln2_{i}"])
        h = gelu(h @ p[f"up_{i}"]["kernel"] + p[f"up_{i}"]["bias"])
        x = x + h @ p[f"down_{i}"]["kernel"] + p[f"down_{i}"]["bias"]
    return ln(x, p["ln_f"]) @ p["head"]["kernel"] + p["head"]["bias"]


@pytest.mark.parametrize("prompt_len", [3, 10])
def test_exactly_full_cache_matches_a_float64_reference(params, prompt_len):
    """A cache with exactly as many slots as tokens (the reward models' full forward
    pass, and a row decoded to its last slot) against a cache-free float64 NumPy
    forward pass: a last slot whose key/value were dropped would change the last
    position's logits (it no longer attends to itself)."""
    toks = np.asarray(jax.random.randint(jax.random.key(7), (3, 10), 1, ar.VOCAB_SIZE))
    ref = _reference_forward(params, toks, MODEL)
    full = np.asarray(MODEL.apply(params, jnp.asarray(toks)), np.float64)
    np.testing.assert_allclose(full, ref, atol=2e-4)
    lm = tr.lm_functions(MODEL, params)
    cache = lm.init_cache(3, 10)  # exactly the 10 tokens
    logits, cache = lm.prefill(cache, jnp.asarray(toks[:, :prompt_len]), jnp.ones((3, prompt_len)))
    got = [logits]
    for i in range(prompt_len, 10):
        logits, cache = lm.decode_step(cache, jnp.asarray(toks[:, i]), jnp.ones(3, bool))
        got.append(logits)
    np.testing.assert_allclose(np.asarray(got[-1], np.float64), ref[:, -1], atol=2e-4)
    np.testing.assert_allclose(
        np.stack([np.asarray(g, np.float64) for g in got], 1), ref[:, prompt_len - 1 :], atol=2e-4
    )
    assert int(cache["fill"].max()) == 10  # every slot used: the cache was exactly full
    # Negative control: the reference without the last position attending to itself
    # differs by far more than the tolerance, so the check can see that fault.
    faulty = _reference_forward(params, toks, MODEL, drop_last_self=True)
    assert np.abs(faulty[:, -1] - ref[:, -1]).max() > 50 * 2e-4
    np.testing.assert_allclose(faulty[:, :-1], ref[:, :-1])  # only the last position moves
