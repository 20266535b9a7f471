"""Non-finite model outputs in every step-level LM search (issue 18).

Every registered LM search that takes prompts reports ``trace["num_non_finite_logits"]``
``[max_steps, B]``: rows whose next-token logits hold a NaN/inf after the round's
step (``steps.non_finite_logits``; beam, DVTS and REBASE through ``steps.extend``
and the round driver, steering through its own ledger, MCTS per expanded node, the
SMC-based ones through the SMC core). The KV cache is not looked at, so a NaN only
in the cache is not counted; a good model reports 0 everywhere; and
``StepConfig(runtime_checks=True)`` makes a non-finite count a ``checkify`` error
(MCTS refuses it before tracing: checkify cannot transform its vmapped decode loops).
Driven from the registry: a new search is covered by its entry.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import inferax.search.lm  # noqa: F401  (fills the registry)
from inferax.search import core
from inferax.search.lm import steps
from tests.search import step_tree as st

LM, _ = st.make(k=2, depth=2, problems=2)  # vocabulary 5
PROMPTS = st.prompts([0, 1])
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=4, max_steps=2)
BUDGET = core.Budget(sequences=2, tokens=16, prm_calls=8)
PRM = lambda state, prompt_index: jnp.full(prompt_index.shape, 0.5)  # noqa: E731
ENTRIES = [e for e in core.LM_SEARCHES.values() if "prompts" in inspect.signature(e.fn).parameters]
# Searches whose rounds extend every row of a population once (exact counts below).
ROUNDS = {"beam_search", "dvts", "rebase", "particle_filter", "particle_gibbs", "smc_steer"}


def _run(entry, lm, config=CFG):
    kw = {k: v[0] for k, v in entry.options.items()} | dict(entry.fixed)
    return entry.fn(jax.random.key(0), lm, PRM, BUDGET, prompts=PROMPTS,
                    config=config, **kw)[1]  # fmt: skip


def test_every_step_search_is_covered():
    names = {e.name for e in ENTRIES}
    assert ROUNDS | {"mcts"} <= names, names


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_search_counts_non_finite_logits_not_the_cache(entry, broken_lm):
    count = st.jit(lambda mode: _run(entry, broken_lm(LM, mode)).trace["num_non_finite_logits"])
    good, cache_only, bad = (np.asarray(count(m)) for m in (0, 1, 2))
    assert good.shape == (CFG.max_steps, 2) and good.dtype == np.int32
    assert good.sum() == 0  # a good model: nothing counted
    assert cache_only.sum() == 0  # a NaN only in the cache is not looked at
    assert bad[:, 0].sum() == 0  # prompt 0's rows are fine
    assert bad[0, 1] > 0  # prompt 1's rows go NaN in the first round
    if entry.name in ROUNDS:  # both rows of prompt 1, every round it ran
        assert bad[0].tolist() == [0, 2], bad


@pytest.mark.parametrize("name", ["beam_search", "rebase"])
def test_runtime_checks_make_non_finite_logits_an_error(name, broken_lm):
    entry = core.get("lm", name)
    checked = st.jit(
        checkify.checkify(
            lambda mode: _run(entry, broken_lm(LM, mode), CFG._replace(runtime_checks=True))
        )
    )
    err, _ = checked(0)
    err.throw()  # a good model: nothing raised
    err, _ = checked(1)
    err.throw()  # a NaN only in the cache is no error
    err, info = checked(2)
    with pytest.raises(checkify.JaxRuntimeError, match="lm: expected finite next-token logits"):
        err.throw()
    assert int(info.trace["num_non_finite_logits"].sum()) > 0


def test_mcts_refuses_runtime_checks(broken_lm):
    with pytest.raises(ValueError, match="config.runtime_checks: mcts cannot run under checkify"):
        _run(core.get("lm", "mcts"), broken_lm(LM, 0), CFG._replace(runtime_checks=True))


def test_non_finite_logits_helper():
    logits = jnp.array([[0.0, 1.0], [jnp.nan, 0.0], [-jnp.inf, 0.0], [0.0, jnp.inf]])
    assert steps.non_finite_logits(logits).tolist() == [False, True, True, True]
    steps.check_finite_logits(jnp.ones(3, jnp.int32), False)  # nothing added without checks


def test_decoding_sample_counts_tokens_drawn_from_non_finite_logits(broken_lm):
    """``decoding.sample`` (best-of-N, voting, pass@k): ``info.non_finite_logits`` counts
    every token drawn from a NaN/inf model output (exactly: prompt 1's 3 rows each draw
    tokens 2-4 after its logits go NaN), none for a good model or a NaN only in the
    cache, none for a hook's ``-inf`` mask; ``runtime_checks`` makes it an error."""
    from inferax.search.lm import decoding as dec

    def run(mode, hook=None, checks=False):
        return dec.sample(jax.random.key(2), broken_lm(LM, mode), PROMPTS, num_samples=3,
                          max_new_tokens=4, eos_id=None, logits_hook=hook,
                          runtime_checks=checks)[1]  # fmt: skip

    count = jax.jit(lambda mode: run(mode).non_finite_logits)
    assert [int(count(m)) for m in (0, 1, 2)] == [0, 0, 9]
    # Off the defaults: other sample counts, temperature, top-p and top-k count the same
    # way (2 rows x 3 tokens; the count is taken before sampling settings apply).
    two = jax.jit(
        lambda mode: (
            dec.sample(
                jax.random.key(5),
                broken_lm(LM, mode),
                PROMPTS,
                num_samples=2,
                max_new_tokens=4,
                eos_id=None,
                temperature=0.5,
                top_p=0.7,
                top_k=3,
            )[1].non_finite_logits
        )  # fmt: skip
    )
    assert [int(two(m)) for m in (0, 2)] == [0, 6]
    mask = lambda logits, state: logits.at[:, 0].set(-jnp.inf)  # noqa: E731
    assert int(jax.jit(lambda m: run(m, mask).non_finite_logits)(0)) == 0
    err, _ = jax.jit(checkify.checkify(lambda m: run(m, checks=True)))(2)
    with pytest.raises(checkify.JaxRuntimeError, match="9 tokens sampled from NaN/inf logits"):
        err.throw()
    err, _ = jax.jit(checkify.checkify(lambda m: run(m, checks=True)))(0)
    err.throw()  # a good model passes
