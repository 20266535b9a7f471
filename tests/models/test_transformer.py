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
