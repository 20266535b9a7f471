"""penzai transformers through the decoding protocol (inferax.models.penzai_lm).

Tiny random-weight Gemma, Gemma 2 and Llama configurations built locally. The
conformance kit passes in float32 and bfloat16; a particle filter and a beam
search run on the adapter and give exactly the result they give on an uncached
reference adapter that recomputes the full forward pass at every token.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("penzai")

from inferax.models import penzai_lm  # noqa: E402
from inferax.search.lm import beam, conformance, decoding, particle, steps  # noqa: E402

V = 16
PROMPTS = jnp.array([[0, 0, 5, 6, 7], [3, 0, 4, 9, 8]], jnp.int32)
# Row 1's second token equals the pad id 0 but is real: padding is by mask, not value.
MASK = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)


@functools.cache
def tiny(family, dtype=jnp.float32):
    return penzai_lm.tiny_model(jax.random.key(0), family, vocab_size=V, dtype=dtype)


@pytest.mark.parametrize(
    "family, dtype, tol",
    [
        ("gemma", jnp.float32, 1e-4),
        ("gemma2", jnp.float32, 1e-4),
        ("llama", jnp.float32, 1e-4),
        pytest.param("gemma2", jnp.bfloat16, 3e-2, marks=pytest.mark.slow),
        pytest.param("llama", jnp.bfloat16, 3e-2, marks=pytest.mark.slow),
    ],
)
def test_conformance(family, dtype, tol):
    lm = penzai_lm.lm_functions(tiny(family, dtype))
    rep = conformance.check_lm(
        lm, prompts=PROMPTS, prompt_mask=MASK, max_new_tokens=6, key=jax.random.key(1),
        forward=lm.forward, atol=tol, rtol=tol,
    )  # fmt: skip
    assert rep.capacity == 11 and rep.held_calls >= 1
    assert max(rep.prefill_error, rep.decode_error) <= tol


def test_the_pad_id_is_a_real_token_when_the_mask_says_so():
    model = tiny("gemma")
    lm = penzai_lm.lm_functions(model)
    logits, _ = jax.jit(lm.prefill)(lm.init_cache(2, 5), PROMPTS, MASK)
    # row 1 alone, unpadded; the token 0 at column 1 must count
    forward = jax.jit(lm.forward)
    full = forward(PROMPTS[1:])
    np.testing.assert_allclose(logits[1], full[0, -1], atol=1e-5)
    dropped = forward(jnp.array([[3, 4, 9, 8]]))
    assert np.max(np.abs(logits[1] - dropped[0, -1])) > 1e-3


def test_a_held_row_writes_no_slot():
    lm = penzai_lm.lm_functions(tiny("llama"))
    _, cache = jax.jit(lm.prefill)(lm.init_cache(2, 7), PROMPTS, MASK)
    _, cache = jax.jit(lm.decode_step)(cache, jnp.array([1, 2]), jnp.array([True, False]))
    np.testing.assert_array_equal(cache["fill"], [6, 5])
    np.testing.assert_array_equal(cache["length"], [4, 5])
    assert conformance.cache_capacity(lm, 2, 7) == (7, "leaf ['k'][0], axis 1")


def test_bad_input():
    with pytest.raises(TypeError, match="model: expected a penzai"):
        penzai_lm.lm_functions(object())
    with pytest.raises(ValueError, match="family: expected one of"):
        penzai_lm.tiny_config("gpt5")
    stacked = penzai_lm.tiny_config("gemma")
    stacked.use_layer_stack = True
    from penzai.models.transformer.variants import llamalike_common

    # init_base_rng=None: uninitialised parameters (nothing is computed); refused before use
    model = llamalike_common.build_llamalike_transformer(stacked, init_base_rng=None)
    with pytest.raises(ValueError, match="use_layer_stack=False"):
        penzai_lm.lm_functions(model)


def reference_lm(forward, vocab_size):
    """An uncached adapter: the cache is the token buffer, every call reruns ``forward``."""

    def init_cache(batch_size, max_len):
        return {
            "tokens": jnp.zeros((batch_size, max_len), jnp.int32),
            "mask": jnp.zeros((batch_size, max_len), bool),
            "fill": jnp.zeros((batch_size,), jnp.int32),
        }

    def step(cache, tokens, valid):
        n, t = tokens.shape
        moves = jnp.any(valid, axis=1)
        slots = jnp.where(moves[:, None], cache["fill"][:, None] + jnp.arange(t), 10**6)
        rows = jnp.arange(n)[:, None]
        buf = cache["tokens"].at[rows, slots].set(tokens, mode="drop")
        mask = cache["mask"].at[rows, slots].set(valid, mode="drop")
        logits = forward(buf, mask)
        last = jnp.where(moves, cache["fill"] + t - 1, 0)
        new = {"tokens": buf, "mask": mask, "fill": cache["fill"] + jnp.where(moves, t, 0)}
        return logits[jnp.arange(n), last], new

    return decoding_protocol(
        init_cache=init_cache,
        prefill=step,
        decode_step=lambda c, tok, v: step(c, tok[:, None], v[:, None]),
        vocab_size=vocab_size,
    )


def decoding_protocol(**kw):
    from inferax.models.transformer import LMFunctions

    return LMFunctions(cache_axes=0, max_len=None, **kw)


CFG = steps.StepConfig(eos_id=1, step_id=2, max_new_tokens=8, max_steps=4)


def prm_fn(state, prompt_index):
    """Share of even tokens among a row's generated tokens (a toy PRM in [0, 1])."""
    cols = jnp.arange(state.tokens.shape[1])[None]
    real = cols < state.num_tokens[:, None]
    even = real & (state.tokens % 2 == 0)
    return (jnp.sum(even, 1) + 0.5) / (state.num_tokens + 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["particle_filter", "beam_search"])
def test_searches_run_on_penzai_and_match_an_uncached_reference(method):
    model = tiny("gemma2")
    lm = penzai_lm.lm_functions(model)
    ref = reference_lm(lm.forward, V)
    if method == "particle_filter":
        run = lambda m: particle.particle_filter(  # noqa: E731
            jax.random.key(3), m, prm_fn, 4, prompts=PROMPTS, prompt_mask=MASK, config=CFG
        )
    else:
        run = lambda m: beam.beam_search(  # noqa: E731
            jax.random.key(3), m, prm_fn, 4, prompts=PROMPTS, prompt_mask=MASK, config=CFG,
            beam_width=2,
        )  # fmt: skip
    res, info = run(lm)
    ref_res, ref_info = run(ref)
    assert res.tokens.shape == (2, 4, CFG.max_new_tokens)
    assert int(info.generated_tokens) > 0 and int(info.prm_calls) > 0
    assert np.all((np.asarray(res.tokens) >= 0) & (np.asarray(res.tokens) < V))
    np.testing.assert_array_equal(res.tokens, ref_res.tokens)
    np.testing.assert_array_equal(res.choice, ref_res.choice)
    np.testing.assert_allclose(res.scores, ref_res.scores, atol=1e-6)
    assert int(info.generated_tokens) == int(ref_info.generated_tokens)


@pytest.mark.slow
def test_generate_matches_the_uncached_reference():
    lm = penzai_lm.lm_functions(tiny("llama"))
    ref = reference_lm(lm.forward, V)
    a, _ = decoding.sample(jax.random.key(5), lm, PROMPTS, MASK, num_samples=2,
                           max_new_tokens=6, eos_id=1)  # fmt: skip
    b, _ = decoding.sample(jax.random.key(5), ref, PROMPTS, MASK, num_samples=2,
                           max_new_tokens=6, eos_id=1)  # fmt: skip
    np.testing.assert_array_equal(a.tokens, b.tokens)
