"""What an LM search can only see at run time (issue 18): out-of-vocabulary ids of
prompts traced under ``jit``, and non-finite logits.

Concrete prompts with an id outside ``[0, lm.vocab_size)`` are refused before
tracing (tests/test_bad_inputs.py). A prompt traced under the caller's ``jit``
cannot be refused then: ``decoding.start`` counts its out-of-range ids at unmasked
positions, ``DecodeInfo.bad_prompt_tokens`` and ``LMSearchInfo.bad_prompt_tokens``
report them (every registered LM search: they all prefill through
``steps.start``), and ``runtime_checks`` (``decoding.sample(runtime_checks=True)``,
``StepConfig(runtime_checks=True)``) makes them a ``checkify`` error naming
``prompts``. Driven from the registry: a new search is covered by its entry.

The SMC-based searches count rows with NaN/inf next-token logits per round
(``trace["num_non_finite_logits"]``); the KV cache is not looked at
(``particle.FINITE_LEAVES``), so a NaN only in the cache is not counted.
"""

import inspect

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import inferax.search.lm  # noqa: F401  (fills the registry)
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import steps
from tests.search import step_tree as st

LM, _ = st.make(k=2, depth=2, problems=2)  # vocabulary 5
PROMPTS = st.prompts([0, 1])
MASK = jnp.ones(PROMPTS.shape, bool)
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=4, max_steps=2)
BUDGET = core.Budget(sequences=2, tokens=16, prm_calls=8)
PRM = lambda state, prompt_index: jnp.full(prompt_index.shape, 0.5)  # noqa: E731
ENTRIES = [e for e in core.LM_SEARCHES.values() if "prompts" in inspect.signature(e.fn).parameters]


def _search(entry, config=CFG):
    def run(prompts, mask):
        kw = {k: v[0] for k, v in entry.options.items()} | dict(entry.fixed)
        return entry.fn(jax.random.key(0), LM, PRM, BUDGET, prompts=prompts, prompt_mask=mask,
                        config=config, **kw)[1]  # fmt: skip

    return run


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_search_counts_traced_bad_prompt_ids(entry):
    run = st.jit(lambda p, m: _search(entry)(p, m).bad_prompt_tokens)
    assert int(run(PROMPTS, MASK)) == 0
    bad = PROMPTS.at[0, 1].set(999).at[1, 0].set(-3)
    assert int(run(bad, MASK)) == 2
    assert int(run(bad, MASK.at[1, 0].set(False))) == 1  # a pad is not looked at
    with pytest.raises(ValueError, match=r"prompts: expected token ids in \[0, 5\)"):
        _search(entry)(bad, MASK)  # concrete: refused before tracing, as before


def test_runtime_checks_make_traced_bad_prompt_ids_an_error():
    pf = core.get("lm", "particle_filter")
    checked = st.jit(checkify.checkify(_search(pf, CFG._replace(runtime_checks=True))))
    err, info = checked(PROMPTS, MASK)
    err.throw()  # good ids: nothing raised
    assert int(info.bad_prompt_tokens) == 0
    err, _ = checked(PROMPTS.at[1, 1].set(999), MASK)
    with pytest.raises(checkify.JaxRuntimeError, match=r"prompts: expected token ids .* got 1 "):
        err.throw()
    with pytest.raises(TypeError, match="config.runtime_checks: expected a Python bool"):
        _search(pf, CFG._replace(runtime_checks=1))(PROMPTS, MASK)


def test_sample_runtime_checks():
    def sample(prompts, checks):
        return dec.sample(jax.random.key(0), LM, prompts, max_new_tokens=4, eos_id=st.EOS,
                          runtime_checks=checks)[1]  # fmt: skip

    err, info = st.jit(checkify.checkify(lambda p: sample(p, True)))(PROMPTS.at[0, 0].set(-3))
    with pytest.raises(checkify.JaxRuntimeError, match=r"prompts: expected token ids in \[0, 5\)"):
        err.throw()
    assert int(info.bad_prompt_tokens) == 1
    plain = st.jit(lambda p: sample(p, False))(PROMPTS.at[0, 0].set(-3))
    assert int(plain.bad_prompt_tokens) == 1  # counted without the checks too
    with pytest.raises(TypeError, match="runtime_checks: expected a Python bool"):
        sample(PROMPTS, "yes")


@pytest.mark.parametrize("name", ["particle_filter", "smc_steer"])
def test_smc_searches_count_non_finite_logits_not_the_cache(name, broken_lm):
    entry = core.get("lm", name)

    def run(mode, config=CFG):
        kw = {k: v[0] for k, v in entry.options.items()} | dict(entry.fixed)
        lm = broken_lm(LM, mode)
        return entry.fn(jax.random.key(0), lm, PRM, BUDGET, prompts=PROMPTS, config=config, **kw)

    count = st.jit(lambda mode: run(mode)[1].trace["num_non_finite_logits"])
    assert count(0).shape == (CFG.max_steps, 2)
    for mode, expected in ((0, [0, 0]), (1, [0, 0]), (2, [0, 2])):  # the cache is not looked at
        assert count(mode)[0].tolist() == expected, mode
    if name == "particle_filter":  # runtime_checks: the NaN logits are an error
        checked = st.jit(checkify.checkify(lambda: run(2, CFG._replace(runtime_checks=True))))
        err, _ = checked()
        with pytest.raises(checkify.JaxRuntimeError, match="expected finite particles, got 2"):
            err.throw()
