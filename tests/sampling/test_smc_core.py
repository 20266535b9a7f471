"""Tests for the population-generic SMC core: per-leaf particle axes (KV-cache
shaped pytrees), auxiliary output, custom resamplers, expand-then-resample,
stop-when-done runs, numerical-failure counts and lineage diagnostics.

Truths: an exact row bookkeeping (every per-particle leaf carries its particle's
id, so a gather of the wrong rows or along the wrong axis shows), the fixed-length
run (``run_until_done`` must equal it bit for bit), NumPy re-simulation of
weights, and the unbiasedness of expand-then-resample in Z.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import particles, resampling, smc

N, LAYERS, HEADS, L, D = 8, 3, 2, 5, 4


def kv_population(n=N):
    ids = jnp.arange(n, dtype=jnp.float32)
    return {
        "tokens": jnp.tile(jnp.arange(n, dtype=jnp.int32)[:, None], (1, L)),  # [N, L]
        # layer-major cache [layers, N, heads, L, d]: row i holds i + 100 * layer
        "cache": ids[None, :, None, None, None]
        + 100.0 * jnp.arange(LAYERS, dtype=jnp.float32)[:, None, None, None, None]
        + jnp.zeros((LAYERS, n, HEADS, L, D)),
        "index": jnp.int32(0),  # decode position, shared by all particles
    }


AXES = {"tokens": 0, "cache": 1, "index": None}


def decode_transition(key, pop, inc):
    """A decoding step: each particle appends (keeps) its id, the shared index advances."""
    new = dict(pop)
    new["index"] = pop["index"] + 1
    new["cache"] = pop["cache"] + 0.0
    return new, inc, {"index": new["index"], "reward": -inc}


def check_rows(pop, ids):
    ids = np.asarray(ids)
    np.testing.assert_array_equal(np.asarray(pop["tokens"])[:, 0], ids)
    cache = np.asarray(pop["cache"])
    for layer in range(LAYERS):
        np.testing.assert_array_equal(cache[layer, :, 0, 0, 0], ids + 100.0 * layer)
        assert np.all(cache[layer] == cache[layer, :, :1, :1, :1])


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_kv_cache_pytree_resampling_gathers_the_right_rows(threshold):
    rng = np.random.default_rng(1)
    incs = jnp.asarray(rng.normal(size=(6, N)) * 1.5, jnp.float32)
    alg = smc.build(decode_transition, ess_threshold=threshold, particle_axes=AXES)
    state = alg.init(kv_population())
    final, infos = jax.jit(alg.run)(jax.random.key(0), state, incs)
    ids = np.arange(N)
    for t in range(6):
        ids = ids[np.asarray(infos.ancestors[t])]
    check_rows(final.particles, ids)
    assert int(final.particles["index"]) == 6  # shared leaf: advanced, never gathered
    np.testing.assert_array_equal(infos.aux["index"], np.arange(1, 7))
    np.testing.assert_allclose(infos.aux["reward"], -np.asarray(incs))
    assert bool(jnp.any(infos.resampled))
    np.testing.assert_array_equal(smc.lineage(infos.ancestors), ids)


def test_kv_cache_gather_axis_is_not_the_leading_axis():
    # Negative control: treating the layer-major cache as leading-axis gathers layers.
    pop = kv_population()
    anc = jnp.array([7, 7, 0, 1, 2, 3, 4, 5])
    right = particles.take(pop, anc, particles.leaf_axes(AXES, pop))
    check_rows(right, np.asarray(anc))
    with pytest.raises(ValueError, match="particles.*leading axis"):
        smc.init(pop)  # the scalar leaf needs particle_axes None
    wrong_axes = {"tokens": 0, "cache": 0, "index": None}
    with pytest.raises(ValueError, match="share the leading axis"):
        smc.init(pop, particle_axes=wrong_axes)


def test_vmapped_step_gathers_only_when_a_member_resamples():
    # Under vmap the gather sits in a while loop whose batched predicate is
    # false when no member resamples: the jaxpr has no gather outside that loop.
    alg = smc.build(decode_transition, particle_axes=AXES, ess_threshold=0.5)
    pop = kv_population()

    def one(key, inc):
        return alg.step(key, alg.init(pop), inc)

    keys = jax.random.split(jax.random.key(0), 3)
    jaxpr = jax.make_jaxpr(jax.vmap(one))(keys, jnp.zeros((3, N)))
    top = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert "gather" not in top and "while" in top
    # and the results: member 1 degenerates and resamples; members 0, 2 do not.
    incs = jnp.zeros((3, N)).at[1].set(jnp.where(jnp.arange(N) == 3, 0.0, -50.0))
    out, info = jax.jit(jax.vmap(one))(keys, incs)
    np.testing.assert_array_equal(info.resampled, [False, True, False])
    check_rows(jax.tree.map(lambda a: a[0], out.particles), np.arange(N))
    check_rows(jax.tree.map(lambda a: a[1], out.particles), np.full(N, 3))


def test_custom_resampler_is_used():
    calls = []

    def keep_first(key, log_weights, num_samples):
        calls.append(num_samples)
        return jnp.zeros((num_samples,), jnp.int32)

    alg = smc.build(decode_transition, resampling=keep_first, ess_threshold=1.0, particle_axes=AXES)
    final, _ = alg.step(jax.random.key(0), alg.init(kv_population()), jnp.zeros(N))
    check_rows(final.particles, np.zeros(N, int))
    assert calls == [N]
    bad = smc.build(lambda k, x, s: (x, s), resampling=lambda k, l, m: jnp.zeros(m + 1, jnp.int32))
    with pytest.raises(ValueError, match="resampling.*shape \\(8,\\)"):
        bad.step(jax.random.key(0), bad.init(jnp.zeros((N, 2))), jnp.zeros(N))


def _gaussian_step(key, x, y):
    x_new = 0.9 * x + np.sqrt(0.5) * jax.random.normal(key, x.shape)
    return x_new, -0.5 * (jnp.log(2 * jnp.pi * 0.3) + (y - x_new) ** 2 / 0.3)


def test_expand_then_resample_is_unbiased_in_z():
    # K children per particle, each a fresh bootstrap proposal: Z stays unbiased
    # (Kalman evidence), and the population returns to N after every step.
    from tests.sampling.test_smc import YS, kalman_log_evidence

    k = 3

    def expand(key, x, y):
        return _gaussian_step(key, jnp.repeat(x, k), y)

    alg = smc.build(expand, resampling="multinomial")

    @jax.jit
    def one(key):
        k0, k1 = jax.random.split(key)
        final, infos = alg.run(k1, alg.init(jax.random.normal(k0, (16,))), jnp.asarray(YS))
        return final.log_Z, final.particles.shape[0], infos.resampled

    log_z, n_out, resampled = jax.vmap(one)(jax.random.split(jax.random.key(3), 3000))
    assert int(n_out[0]) == 16 and bool(jnp.all(resampled))
    ratio = np.exp(np.asarray(log_z, np.float64) - kalman_log_evidence(YS))
    se = ratio.std() / np.sqrt(ratio.size)
    assert abs(ratio.mean() - 1.0) < 5 * se and se < 0.02, (ratio.mean(), se)
    # Negative control: forgetting the log K share (children keep the full parent
    # weight) is off by exactly log K per step.
    assert abs(np.exp(len(YS) * np.log(k)) * ratio.mean() - 1.0) > 5 * se


def _count_to(limit):
    def transition(key, pop, _):
        x, steps = pop
        return (x + jax.random.normal(key, x.shape), steps + 1), -(x**2)

    def done(pop):
        return pop[1] >= limit

    return transition, done


@pytest.mark.parametrize("resample_last", [True, False])
def test_run_until_done_equals_fixed_run_when_all_finish_at_the_last_step(resample_last):
    transition, done = _count_to(5)
    alg = smc.build(transition, ess_threshold=0.9)
    state = alg.init((jnp.linspace(-2, 2, N), jnp.zeros(N, jnp.int32)))
    key = jax.random.key(4)
    run = jax.jit(alg.run, static_argnames=("resample_last",))
    fixed, fixed_infos = run(key, state, jnp.arange(5), resample_last=resample_last)
    run_until = jax.jit(
        alg.run_until_done, static_argnames=("done_fn", "max_steps", "resample_last")
    )
    final, infos, num = run_until(key, state, done, max_steps=9, resample_last=resample_last)
    assert int(num) == 5
    # Same steps, keys and decisions; floats agree to rounding (a while loop and a
    # scan are compiled differently, so the last bit may move).
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(fixed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for name in ("resampled", "ancestors"):
        np.testing.assert_array_equal(getattr(infos, name)[:5], getattr(fixed_infos, name))
    for name in ("ess", "log_Z_increment"):
        np.testing.assert_allclose(getattr(infos, name)[:5], getattr(fixed_infos, name), 1e-6)
    assert bool(jnp.any(fixed_infos.resampled[:4]))
    assert resample_last or not bool(fixed_infos.resampled[4])
    for name in ("ess", "resampled", "ancestors", "log_Z_increment"):
        assert not np.any(np.asarray(getattr(infos, name)[5:]))  # unused rows stay zero


def test_done_particles_stand_still_and_max_steps_bounds_the_run():
    def transition(key, pop, _):
        x, steps = pop
        return (x + 1.0, steps + 1), jnp.zeros_like(x)

    limits = jnp.array([1, 2, 3, 50])
    alg = smc.build(transition, ess_threshold=0.0)
    state = alg.init((jnp.zeros(4), jnp.zeros(4, jnp.int32)))
    final, _, num = alg.run_until_done(
        jax.random.key(0), state, lambda p: p[1] >= limits, max_steps=6
    )
    assert int(num) == 6  # the 4th particle never finishes: stopped by max_steps
    np.testing.assert_array_equal(final.particles[0], [1.0, 2.0, 3.0, 6.0])


def test_nan_and_posinf_weights_are_counted_and_posinf_makes_log_z_infinite():
    def transition(key, x, inc):
        return x, inc

    alg = smc.build(transition, ess_threshold=0.0)
    state = alg.init(jnp.zeros((4, 1)))
    half_nan = jnp.array([0.0, 0.0, jnp.nan, jnp.nan])
    s1, info = alg.step(jax.random.key(0), state, half_nan)
    assert int(info.num_nan) == 2 and int(info.num_posinf) == 0
    # log Z = log(mean of the valid weights, NaN counted as 0) = log(1/2): flagged.
    np.testing.assert_allclose(float(s1.log_Z), np.log(0.5), rtol=1e-6)
    _, info = alg.step(jax.random.key(0), state, jnp.array([0.0, jnp.inf, 1.0, 0.0]))
    assert int(info.num_posinf) == 1 and float(info.log_Z_increment) == np.inf


def test_transition_that_changes_dtype_or_shape_is_named():
    alg = smc.build(lambda k, x, s: (x.astype(jnp.float16), jnp.zeros(4)))
    with pytest.raises(TypeError, match="transition_fn.*dtype float32.*float16"):
        alg.step(jax.random.key(0), alg.init(jnp.zeros((4, 2))), None)
    alg = smc.build(lambda k, x, s: (x[:, :1], jnp.zeros(4)))
    with pytest.raises(ValueError, match="transition_fn.*shape \\(4, 2\\)"):
        alg.step(jax.random.key(0), alg.init(jnp.zeros((4, 2))), None)
    shared = smc.build(lambda k, p, s: ((p[0], p[1][None]), jnp.zeros(4)), particle_axes=(0, None))
    with pytest.raises(ValueError, match="shared leaf"):
        shared.step(jax.random.key(0), shared.init((jnp.zeros(4), jnp.int32(0))), None)
    with pytest.raises(ValueError, match="transition_fn.*\\(new_particles"):
        smc.build(lambda k, x, s: x).step(jax.random.key(0), smc.init(jnp.zeros(4)), None)


def test_lineage_counts_distinct_ancestors():
    anc = jnp.array([[0, 0, 2, 3], [1, 1, 1, 3], [0, 3, 3, 3]])
    # final i <- a2[i] <- a1[.] <- a0[.]
    np.testing.assert_array_equal(smc.lineage(anc), [0, 3, 3, 3])
    assert int(smc.num_distinct_ancestors(anc)) == 2
    assert int(smc.num_distinct_ancestors(jnp.tile(jnp.arange(4), (5, 1)))) == 4


def test_ess_is_exact_at_large_log_weights():
    l = jnp.array([1e6, 1e6 - 1.0, 1e6 - 2.0, 1e6 - 0.5], jnp.float32)
    w = np.exp(np.array([0.0, -1.0, -2.0, -0.5]))
    exact = w.sum() ** 2 / (w**2).sum()
    np.testing.assert_allclose(float(resampling.ess(l)), exact, rtol=1e-6)
