"""Registry-driven tests of the LM searches (``core.LM_SEARCHES``), no per-method code.

For every entry on the LM call shape ``fn(key, lm, prm_fn, budget, *, prompts, config,
...)``: (1) at random budgets and every value of ``entry.options``, the work counted at
run time by a counting LM / PRM (tests/search/step_tree.counting) equals
``info.spent()`` and never exceeds the budget nor ``entry.plan``; (2) every entry whose
target is ``"exact"`` matches exact enumeration of a stopping step tree at tau = 0.5
(``gamma = p(path) prod_{t <= T(path)} g(r_t)``), with negative controls; (3) same key,
same result on 1 and 4 devices; (4) bad budgets are one clear error naming ``budget``.
"""

import inspect
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax.search.lm  # noqa: F401  (fills the registry)
from inferax.sampling import distributed
from inferax.search import core
from inferax.search.lm import steps
from tests.search import step_tree as st
from tests.search import test_lm_driver as exact

LM, VALUES = st.make_stopping(2, k=3, depth=3, problems=2, scale=0.7)
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=6, max_steps=3)


def on_call_shape(entry):
    return "prompts" in inspect.signature(entry.fn).parameters


ENTRIES = [e for e in core.LM_SEARCHES.values() if on_call_shape(e)]


def option_sets(entry):
    first = {k: v[0] for k, v in entry.options.items()}
    out = [first]
    for k, values in entry.options.items():
        out += [dict(first, **{k: v}) for v in values[1:]]
    return out


CASES = [(e.name, i, o) for e in ENTRIES for i, o in enumerate(option_sets(e))]


def call(entry, key, lm, prm, budget, prompts, **options):
    kw = dict(entry.fixed, **options)
    return entry.fn(key, lm, prm, budget, prompts=prompts, config=CFG, **kw)


@pytest.mark.parametrize("name, i, options", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_counted_work_equals_spent_and_fits_the_budget(name, i, options):
    entry = core.get("lm", name)
    rng = np.random.default_rng(zlib.crc32(f"{name}{i}".encode()))
    budget = core.Budget(
        sequences=int(rng.integers(2, 7)),
        tokens=int(rng.integers(3, 30)),
        prm_calls=int(rng.integers(2, 16)),
    )
    prm = st.prm_fn(LM, VALUES, jnp.arange(2))
    clm, cprm, counter = st.counting(LM, prm, 2)
    _, info = call(entry, jax.random.key(i), clm, cprm, budget, st.prompts([0, 1]), **options)
    jax.effects_barrier()
    spent = {k: np.asarray(v) for k, v in info.spent().items()}
    np.testing.assert_array_equal(spent["tokens"], counter.tokens)
    np.testing.assert_array_equal(spent["prm_calls"], counter.prm_calls)
    plan = entry.plan(budget, config=CFG, **dict(entry.fixed, **options))
    for unit in ("sequences", "tokens", "prm_calls"):
        assert np.all(spent[unit] <= getattr(budget, unit)), unit
        assert np.all(spent[unit] <= plan[unit]), unit
    assert info.budget == budget


EXACT = [e.name for e in ENTRIES if e.target == "exact"]


@pytest.mark.parametrize("name", EXACT)
def test_exact_targets_match_enumeration(name):
    entry = core.get("lm", name)
    options = option_sets(entry)[0]
    g_, n = 2048, 4

    @st.jit
    def run(key):
        prm = st.prm_fn(exact.LM, exact.VALUES, jnp.zeros(g_, jnp.int32))
        res, info = entry.fn(
            key, exact.LM, prm, n * options.get("num_iterations", 1),
            prompts=st.prompts(np.zeros(g_, np.int32)), config=exact.CFG, tau=0.5,
            **dict(entry.fixed, **options),
        )  # fmt: skip
        return res, info.trace["log_Z"][-1], st.end_nodes(exact.LM, res.tokens, res.num_tokens)

    res, log_z, ends = run(jax.random.key(11))
    onehot = np.eye(st.num_nodes(exact.K, exact.D))[np.asarray(ends)]
    z = np.exp(np.asarray(log_z, np.float64))
    est = z[:, None] * np.einsum("gn,gnl->gl", np.asarray(res.weights, np.float64), onehot)
    assert np.max(np.abs(exact.z_scores(est, exact.gamma(0.5)))) < exact.Z_CRIT
    assert np.max(np.abs(exact.z_scores(est, exact.gamma(0.5, reapply=True)))) > exact.Z_CRIT
    assert np.max(np.abs(exact.z_scores(est, exact.gamma(2.0)))) > exact.Z_CRIT


MESHED = [e.name for e in ENTRIES if "mesh" in inspect.signature(e.fn).parameters]


@pytest.mark.parametrize("name", MESHED)
def test_same_result_on_1_and_4_devices(name, devices):
    entry = core.get("lm", name)
    options = option_sets(entry)[0]
    prm = st.prm_fn(LM, VALUES, jnp.array([0, 1, 0, 1]))
    mesh = distributed.particle_mesh(devices[:4])
    budget = 2 * options.get("num_iterations", 1)

    def go(m):
        f = st.jit(lambda k: call(entry, k, LM, prm, budget, st.prompts([0, 1, 0, 1]),
                                  mesh=m, **options))  # fmt: skip
        return f(jax.random.key(5))

    (r1, i1), (r4, i4) = go(None), go(mesh)
    np.testing.assert_array_equal(np.asarray(r1.tokens), np.asarray(r4.tokens))
    np.testing.assert_allclose(np.asarray(r1.weights), np.asarray(r4.weights), atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(i1.tokens_per_prompt), np.asarray(i4.tokens_per_prompt)
    )


@pytest.mark.parametrize("name", [e.name for e in ENTRIES])
@pytest.mark.parametrize("budget", [0, -3, 2.5, "16", core.Budget(tokens=40)])
def test_bad_budgets_name_the_argument(name, budget):
    entry = core.get("lm", name)
    prm = st.prm_fn(LM, VALUES, jnp.arange(1))
    with pytest.raises((ValueError, TypeError), match="budget"):
        call(entry, jax.random.key(0), LM, prm, budget, st.prompts([0]), **option_sets(entry)[0])
