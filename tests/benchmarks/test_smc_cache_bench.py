"""Tests of the KV-cache SMC case of the SMC benchmark (``benchmarks.smc_cache``).

Timings are not asserted. What is checked: the cache oracle catches a gather
that separates cache rows from their tokens (negative control), ours equals
the bare transitions when no step resamples and keeps rows aligned when steps
do, the shared decode index is never gathered, ``vmap`` over runs changes no
run, and the table helpers keep their promises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common, smc_cache

CFG = smc_cache.QUICK


@pytest.fixture(scope="module")
def sides():
    """The toy decoder and every side, jitted once for the module."""
    params = smc_cache.init_params(jax.random.key(0), CFG)
    transition = smc_cache.make_transition(params, CFG)
    fns = {
        name: jax.jit(make(transition, CFG))
        for name, make in (
            ("ours", smc_cache.make_ours),
            ("bare", smc_cache.make_bare),
            ("every", smc_cache.make_gather_every),
        )
    }
    fns["vmap"] = jax.jit(smc_cache._vmapped(smc_cache.make_ours, transition, CFG, 2))
    fns["transition"] = jax.jit(transition)
    return params, smc_cache.init_particles(CFG), fns


def _equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))


def test_cache_oracle_catches_rows_that_leave_their_tokens(sides):
    params, p, fns = sides
    for i in range(4):
        p, inc = fns["transition"](jax.random.key(i), p, 1.0)
    assert int(p["index"]) == 5 and inc.shape == (CFG.n,)
    assert len(np.unique(np.asarray(p["tokens"][:, 1:5]))) > 4  # particles differ
    assert smc_cache.cache_error(params, p, CFG) < 1e-5
    perm = jnp.roll(jnp.arange(CFG.n), 1)
    assert smc_cache.cache_error(params, smc_cache.gather(p, perm), CFG) < 1e-5
    # Negative controls: tokens moved without their cache rows, or the cache
    # gathered on the layer axis instead of the particle axis.
    moved = dict(p, tokens=p["tokens"][perm])
    assert smc_cache.cache_error(params, moved, CFG) > 0.1
    layers = jnp.array([1, 0])
    wrong = dict(p, cache=jax.tree.map(lambda a: jnp.take(a, layers, axis=0), p["cache"]))
    assert smc_cache.cache_error(params, wrong, CFG) > 0.1


def test_ours_is_the_bare_run_without_resampling_and_keeps_rows_when_resampling(sides):
    params, p0, fns = sides
    key = jax.random.key(3)
    p_bare, _ = fns["bare"](key, p0, 0.0)
    p_ours, resampled = fns["ours"](key, p0, 0.0)
    assert not bool(jnp.any(resampled)) and _equal(p_ours, p_bare)
    p_ours, resampled = fns["ours"](key, p0, smc_cache.EVERY)
    assert float(jnp.mean(resampled)) > 0.5
    assert not _equal(p_ours["tokens"], p_bare["tokens"])  # resampling changed the population
    for p in (p_ours, fns["every"](key, p0, smc_cache.EVERY)[0]):
        assert smc_cache.cache_error(params, p, CFG) < 1e-5
        assert int(p["index"]) == CFG.steps + 1 and jnp.shape(p["index"]) == ()


def test_vmapped_runs_equal_single_runs_with_their_keys(sides):
    _, p0, fns = sides
    key = jax.random.key(4)
    parts, resampled = fns["vmap"](key, p0, smc_cache.TRIGGERED)
    assert resampled.shape == (2, CFG.steps)
    for r in range(2):
        want, want_res = fns["ours"](jax.random.fold_in(key, r), p0, smc_cache.TRIGGERED)
        assert _equal(jax.tree.map(lambda a, r=r: a[r], parts), want)
        np.testing.assert_array_equal(np.asarray(resampled[r]), np.asarray(want_res))


def test_kv_table():
    rows = [
        smc_cache.KVRow("1 run", "none resample", 0.0, 0.0, 0.0, 2e-3, 1e-3, 3e-3, 5, 1.5),
        smc_cache.KVRow("vmap 8 runs", "ESS-triggered", 0.5, 0.25, 0.75, 4e-3, 2e-3, 5e-3, 3),
    ]
    (table,) = common.parse_tables(smc_cache.kv_table(rows))
    assert table[0] == list(smc_cache.KV_HEADERS)
    assert table[1] == ["1 run", "none resample (0)", "0%", "0%", "2.000", "1.000", "2.00"] + [
        "1.50",
        "3.000",
        "3.00",
        "5",
    ]
    assert table[2][1:4] == ["ESS-triggered (0.5)", "25%", "75%"]


def test_expected_ratio():
    row = smc_cache.KVRow("1 run", "ESS-triggered", 0.5, 0.25, 0.25, 1.0, 1.0, 3.0)
    assert smc_cache.expected_ratio(row) == pytest.approx(1.5)  # 1 + 0.25 * (3 - 1)
    never = smc_cache.KVRow("1 run", "none resample", 0.0, 0.0, 0.0, 1.0, 1.0, 3.0)
    assert smc_cache.expected_ratio(never) == 1.0  # no gather runs: the bare cost
