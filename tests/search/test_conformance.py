"""The decoding-protocol conformance kit (inferax.search.lm.conformance).

It passes on the project's transformer (with the full forward pass as reference
and with the default prefill reference) and fails, naming what differed, on
adapters that break one rule each: held rows that move, a cache slot that is
lost, a gather over the wrong axes, a cache too small for the search.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from inferax.models import transformer as tr
from inferax.search.lm import conformance as cf

V = 13
MODEL = tr.Transformer(vocab_size=V, num_layers=2, d_model=32, num_heads=4, max_len=24)
PARAMS = tr.init_params(MODEL, jax.random.key(0))
LM = tr.lm_functions(MODEL, PARAMS)
PROMPTS = jnp.array([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 7, 8, 9, 10]], jnp.int32)
MASK = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], bool)


def forward(tokens, mask):
    return MODEL.apply(PARAMS, tokens, mask)


def check(lm, m=5, **kwargs):
    args = dict(prompts=PROMPTS, prompt_mask=MASK, max_new_tokens=m, key=jax.random.key(1))
    return cf.check_lm(lm, **{**args, **kwargs})


def test_required_capacity_is_prompt_plus_new_tokens():
    assert cf.required_capacity(5, 7) == 12
    with pytest.raises(ValueError, match="max_new_tokens"):
        cf.required_capacity(5, 0)


def test_the_project_transformer_conforms_against_its_full_forward_pass():
    rep = check(LM, m=6, forward=forward)
    assert rep.capacity == 5 + 6
    # every prefill row and every fed token (the gather copies rows' counts, so not 3 * 6)
    assert 3 + 3 * 6 // 2 <= rep.positions_checked <= 3 + 3 * 6 + 6
    assert rep.held_calls >= 1
    assert max(rep.prefill_error, rep.decode_error, rep.gather_error) < 1e-5


def test_the_default_reference_is_a_fresh_unpadded_prefill():
    rep = check(LM, m=2)
    assert rep.positions_checked >= 3 + 3 and rep.decode_error < 1e-5


def wrapped(**changes):
    return LM._replace(**changes)


def test_fails_when_held_rows_move():
    # negative control: decode_step treats every row as valid (a held row advances
    # its position and writes the token it was passed)
    lm = wrapped(decode_step=lambda c, t, v: LM.decode_step(c, t, jnp.ones_like(v)))
    with pytest.raises(
        AssertionError, match=r"decode.*row \d, position \d+ \(call \d+, after [1-9]"
    ):
        check(lm, forward=forward)


def test_fails_when_the_last_cache_slot_is_lost():
    # negative control: decode_step runs the model on all but the cache's last slot (its
    # write there is dropped), the cache keeps its full shape: only the last token is wrong
    def decode_step(cache, token, valid):
        short = {
            **cache,
            "k": cache["k"][:, :, :-1],
            "v": cache["v"][:, :, :-1],
            "mask": cache["mask"][:, :-1],
        }
        logits, out = LM.decode_step(short, token, valid)
        return logits, {
            **out,
            "k": jnp.concatenate([out["k"], cache["k"][:, :, -1:]], axis=2),
            "v": jnp.concatenate([out["v"], cache["v"][:, :, -1:]], axis=2),
            "mask": jnp.concatenate([out["mask"], cache["mask"][:, -1:]], axis=1),
        }

    with pytest.raises(AssertionError, match=r"decode.*position [789] \(call \d+.*max \|cached"):
        check(wrapped(decode_step=decode_step), forward=forward)


def test_fails_when_the_cache_axes_are_wrong():
    # negative control: k and v are layer-major ([layers, N, ...]) but declared on axis 0
    lm = wrapped(cache_axes={**tr.CACHE_AXES, "k": 0, "v": 0})
    with pytest.raises(AssertionError, match="particles.take over lm.cache_axes"):
        check(lm, forward=forward)


def test_fails_on_logits_of_the_wrong_shape():
    lm = wrapped(prefill=lambda c, t, m: (LM.prefill(c, t, m)[0][:, :-1], LM.prefill(c, t, m)[1]))
    with pytest.raises(AssertionError, match=r"prefill: expected logits of shape \(3, 13\)"):
        check(lm, forward=forward)


def capped(slots):
    def init_cache(batch_size, max_len):
        return LM.init_cache(batch_size, min(max_len, slots))

    return wrapped(init_cache=init_cache)


def test_an_over_full_cache_is_one_clear_error_before_tracing():
    lm = capped(8)
    msg = (
        r"lm.init_cache: expected a cache of at least 11 slots per row \(required_capacity = "
        r"prompt_len 5 \+ max_new_tokens 6; held rows use none\), got 8 slots \(leaf \['k'\], "
        r"axis 2\)"
    )
    with pytest.raises(ValueError, match=msg):
        cf.check_capacity(lm, prompt_len=5, max_new_tokens=6)
    with pytest.raises(ValueError, match="got 8 slots"):
        check(lm, m=6, forward=forward)
    assert cf.check_capacity(lm, prompt_len=5, max_new_tokens=3) == 8
    assert cf.cache_capacity(LM, 2, 11) == (11, "leaf ['k'], axis 2")


def test_model_max_len_and_recurrent_states():
    with pytest.raises(ValueError, match=r"lm.max_len 24, got 20 \+ 5 = 25"):
        cf.check_capacity(LM, prompt_len=20, max_new_tokens=5)

    # a recurrent state does not depend on max_len: no slot limit
    rnn = wrapped(init_cache=lambda b, n: {"h": jnp.zeros((b, 4))}, max_len=None)
    assert cf.cache_capacity(rnn, 1, 100) is None
    assert cf.check_capacity(rnn, prompt_len=90, max_new_tokens=10) == 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt_mask=MASK[:, ::-1]), "prompt_mask: expected left padding"),
        (dict(prompt_mask=MASK[:2]), r"prompt_mask: expected shape \(3, 5\)"),
        (dict(prompts=PROMPTS.astype(jnp.float32)), "prompts: expected int tokens"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(hold_prob=1.0), "hold_prob"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check(LM, **kwargs)


def test_bad_input_not_a_protocol():
    with pytest.raises(TypeError, match="missing 'init_cache'"):
        cf.check_lm(object(), prompts=PROMPTS, max_new_tokens=2, key=jax.random.key(0))


def test_every_search_refuses_a_cache_too_small_before_tracing():
    """The capacity rule is checked where every search allocates its cache
    (``decoding.start``), so an over-full cache never reaches a search as wrong logits."""
    from inferax.search.lm import decoding, particle, steps

    lm = capped(8)
    prompts = jnp.ones((2, 5), jnp.int32)
    with pytest.raises(ValueError, match="lm.init_cache: expected a cache of at least 11 slots"):
        decoding.sample(jax.random.key(0), lm, prompts, num_samples=2, max_new_tokens=6, eos_id=1)
    config = steps.StepConfig(eos_id=1, step_id=2, max_new_tokens=6, max_steps=2)
    with pytest.raises(ValueError, match="got 8 slots"):
        particle.particle_filter(
            jax.random.key(0), lm, lambda s, i: jnp.full(s.num_tokens.shape, 0.5), 2,
            prompts=prompts, config=config,
        )  # fmt: skip
