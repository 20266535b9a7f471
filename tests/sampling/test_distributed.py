"""Tests for inferax.sampling.distributed on the 4 CPU devices of conftest.

Truths used: the single-device algorithm (bit-identical results on 1 and 4
devices), each island equal to ``smc.run`` on its own block, the exact
evidence of a linear-Gaussian state-space model (Kalman filter, float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from inferax.sampling import distributed, resampling, smc

A, Q, R = 0.9, 0.5, 0.3
YS = jnp.array([0.4, -0.3, 1.1, 0.8, -0.5, 0.2] * 3, jnp.float32)


def kalman_log_evidence(ys):
    m, p, total = 0.0, 1.0, 0.0
    for y in np.asarray(ys, np.float64):
        m, p = A * m, A * A * p + Q
        s = p + R
        total += -0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s)
        m, p = m + p / s * (y - m), (1 - p / s) * p
    return total


def transition(key, x, y):
    """Bootstrap filter on a 3-D state whose first coordinate is observed."""
    x_new = A * x + np.sqrt(Q) * jax.random.normal(key, x.shape)
    return x_new, -0.5 * (jnp.log(2 * jnp.pi * R) + (y - x_new[:, 0]) ** 2 / R)


ALG = smc.build(transition, resampling="systematic", ess_threshold=0.5)


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _assert_trees_equal(a, b):
    for x, y in zip(
        jax.tree_util.tree_leaves(_np(a)), jax.tree_util.tree_leaves(_np(b)), strict=True
    ):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def meshes(devices):
    return distributed.particle_mesh(devices[:1]), distributed.particle_mesh(devices)


def test_mesh_and_sharding(meshes):
    _, mesh4 = meshes
    assert mesh4.axis_names == ("particles",) and mesh4.shape["particles"] == 4
    tree = {"x": jnp.zeros((8, 3)), "w": jnp.zeros(8)}
    sharded = distributed.shard_particles(tree, mesh4)
    for leaf in jax.tree_util.tree_leaves(sharded):
        assert leaf.sharding.spec == P("particles")
        assert len(leaf.sharding.device_set) == 4
    params = distributed.replicate({"w": jnp.ones((2, 2))}, mesh4)
    assert params["w"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match="particles.*divisible.*4.*N = 6"):
        distributed.shard_particles(jnp.zeros((6, 2)), mesh4)
    with pytest.raises(ValueError, match="mesh.*'particles'"):
        distributed.shard_particles(tree, jax.make_mesh((4,), ("x",)))
    with pytest.raises(ValueError, match="devices"):
        distributed.particle_mesh([])


def test_global_view_same_on_1_and_4_devices(meshes):
    mesh1, mesh4 = meshes
    state = ALG.init(jax.random.normal(jax.random.key(0), (1024, 3)))
    key = jax.random.key(1)
    out1 = distributed.sharded_run(ALG, key, state, YS, mesh1)
    out4 = distributed.sharded_run(ALG, key, state, YS, mesh4)
    # Bit-identical: the [N] weight computations run replicated (shard_map with
    # P()) in the same order on every device; moves are elementwise.
    _assert_trees_equal(out1, out4)
    assert out4[0].particles.sharding.spec == P("particles")
    assert len(out4[0].particles.sharding.device_set) == 4
    infos = out4[1]
    assert 0 < int(jnp.sum(infos.resampled)) < YS.shape[0]  # ESS-triggered, not every step
    # Same algorithm as the plain single-device run: same ancestors, same floats
    # up to fusion differences.
    ref = jax.jit(ALG.run)(key, state, YS)
    np.testing.assert_array_equal(infos.ancestors, ref[1].ancestors)
    np.testing.assert_allclose(out4[0].particles, ref[0].particles, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out4[0].log_Z, ref[0].log_Z, rtol=1e-6)


def test_explicit_mesh_same_on_1_and_4_devices(devices):
    # A user's own jax.make_mesh (Explicit axes by default) + jax.set_mesh + jit.
    state = ALG.init(jax.random.normal(jax.random.key(0), (512, 3)))
    outs = []
    for d in (1, 4):
        mesh = jax.make_mesh((d,), ("particles",), devices=devices[:d])
        with jax.set_mesh(mesh):
            sharded = distributed.shard_state(state, mesh)
            outs.append(_np(jax.jit(ALG.run)(jax.random.key(1), sharded, YS)))
    _assert_trees_equal(outs[0], outs[1])
    assert 0 < int(np.sum(outs[1][1].resampled)) < YS.shape[0]


def test_sharded_run_traces_once(meshes):
    _, mesh4 = meshes
    traces = []

    def counted(key, x, y):
        traces.append(1)
        return transition(key, x, y)

    alg = smc.build(counted)
    state = alg.init(jnp.zeros((64, 3)))
    a = distributed.sharded_run(alg, jax.random.key(0), state, YS, mesh4)
    b = distributed.sharded_run(alg, jax.random.key(1), state, YS + 0.5, mesh4)
    assert len(traces) == 1
    assert not np.array_equal(np.asarray(a[0].particles), np.asarray(b[0].particles))


def test_each_island_is_an_independent_smc(meshes):
    _, mesh4 = meshes
    n, k = 64, 8
    state = ALG.init(jax.random.normal(jax.random.key(0), (n, 3)))
    key = jax.random.key(2)
    final, infos = distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=k)
    size = n // k
    run = jax.jit(ALG.run)
    island_log_z = []
    for i in range(k):
        block = ALG.init(state.particles[i * size : (i + 1) * size])
        ref, ref_infos = run(jax.random.fold_in(key, i), block, YS)
        sl = slice(i * size, (i + 1) * size)
        np.testing.assert_allclose(final.particles[sl], ref.particles, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(infos.ancestors[:, sl], ref_infos.ancestors + i * size)
        np.testing.assert_array_equal(infos.resampled[:, i], ref_infos.resampled)
        np.testing.assert_allclose(infos.ess[:, i], ref_infos.ess, rtol=1e-5)
        island_log_z.append(float(ref.log_Z))
        # Global log-weights: log Z_k + log w_ik - log sum_j w_jk - log Z.
        within = np.asarray(resampling.log_normalize(ref.log_weights)[0], np.float64)
        expected = within + float(ref.log_Z) - float(final.log_Z)
        np.testing.assert_allclose(final.log_weights[sl], expected, rtol=1e-4, atol=1e-4)
    island_log_z = np.array(island_log_z)
    combined = np.log(np.mean(np.exp(island_log_z - island_log_z.max()))) + island_log_z.max()
    np.testing.assert_allclose(float(final.log_Z), combined, rtol=1e-5)
    assert infos.ess.shape == (YS.shape[0], k) and infos.ancestors.shape == (YS.shape[0], n)


@pytest.mark.parametrize("num_islands", [4, 8])
def test_islands_do_not_depend_on_device_count(meshes, num_islands):
    mesh1, mesh4 = meshes
    state = ALG.init(jax.random.normal(jax.random.key(0), (256, 3)))
    key = jax.random.key(3)
    out1 = distributed.island_smc_run(ALG, key, state, YS, mesh1, num_islands=num_islands)
    out4 = distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=num_islands)
    _assert_trees_equal(out1, out4)  # bit-identical (islands run by lax.map)
    # What the result does depend on: the number of islands.
    other = distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=4 + 8 - num_islands)
    assert not np.array_equal(np.asarray(other[0].particles), np.asarray(out4[0].particles))


def test_island_evidence_is_unbiased(meshes):
    _, mesh4 = meshes
    n, num_keys = 32, 2000
    ys = YS[:6]

    def log_z(key):
        k0, k1 = jax.random.split(key)
        state = ALG.init(jax.random.normal(k0, (n, 3)))
        return distributed.island_smc_run(ALG, k1, state, ys, mesh4)[0].log_Z

    log_zs = jax.jit(jax.vmap(log_z))(jax.random.split(jax.random.key(4), num_keys))
    ratio = np.exp(np.asarray(log_zs, np.float64) - kalman_log_evidence(ys))
    se = ratio.std() / np.sqrt(num_keys)
    assert abs(ratio.mean() - 1.0) < 5 * se, (ratio.mean(), se)
    assert abs(ratio.mean() - 1.1) > 5 * se  # power: a 10% error would be caught


def test_island_bad_input(meshes):
    _, mesh4 = meshes
    state = ALG.init(jnp.zeros((24, 3)))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_islands.*multiple of the 4 devices.*6"):
        distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=6)
    with pytest.raises(ValueError, match="num_islands.*divisor.*N = 24.*16"):
        distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=16)
    with pytest.raises(ValueError, match="num_islands.*positive"):
        distributed.island_smc_run(ALG, key, state, YS, mesh4, num_islands=0)


def test_legacy_pmap_wraps_a_per_device_run(devices):
    # A user's jax.pmap over a leading device axis of independent SMC runs gives
    # the same numbers as vmap; nothing in the library is built on pmap.
    def per_device(key, x0):
        final, infos = ALG.run(key, ALG.init(x0), YS)
        return final.particles, final.log_Z, infos.ancestors

    keys = jax.random.split(jax.random.key(5), 4)
    x0 = jax.random.normal(jax.random.key(6), (4, 128, 3))
    with_pmap = jax.pmap(per_device)(keys, x0)
    with_vmap = jax.jit(jax.vmap(per_device))(keys, x0)
    np.testing.assert_array_equal(with_pmap[2], with_vmap[2])
    np.testing.assert_allclose(with_pmap[0], with_vmap[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(with_pmap[1], with_vmap[1], rtol=1e-6)


def test_kv_cache_population_same_on_1_and_4_devices(meshes):
    """Per-leaf particle axes on a mesh: tokens [N, L] (axis 0), a layer-major cache
    [layers, N, d] (axis 1) sharded on its particle axis, a shared decode index
    replicated. Same key, same result on 1 and 4 devices; rows stay aligned."""
    n, layers = 64, 2

    def step(key, pop, y):
        x = A * pop["x"] + np.sqrt(Q) * jax.random.normal(key, pop["x"].shape)
        cache = pop["cache"] + x[None, :, :1]  # every layer row follows its particle
        new = {"x": x, "cache": cache, "index": pop["index"] + 1}
        return new, -0.5 * (jnp.log(2 * jnp.pi * R) + (y - x[:, 0]) ** 2 / R)

    axes = {"x": 0, "cache": 1, "index": None}
    alg = smc.build(step, ess_threshold=0.5, particle_axes=axes)
    x0 = jax.random.normal(jax.random.key(0), (n, 3))
    pop = {"x": x0, "cache": jnp.zeros((layers, n, 4)), "index": jnp.int32(0)}
    state = alg.init(pop)
    outs = [distributed.sharded_run(alg, jax.random.key(1), state, YS, m) for m in meshes]
    _assert_trees_equal(outs[0], outs[1])
    final, infos = outs[1]
    assert final.particles["cache"].sharding.spec == P(None, "particles")
    assert final.particles["index"].sharding.is_fully_replicated
    assert int(final.particles["index"]) == YS.shape[0]
    assert 0 < int(jnp.sum(infos.resampled)) < YS.shape[0]
    # the cache rows moved with their particles: replay the bookkeeping on one device
    ref, _ = jax.jit(alg.run)(jax.random.key(1), state, YS)
    np.testing.assert_allclose(final.particles["cache"], ref.particles["cache"], 1e-5, 1e-5)
    np.testing.assert_allclose(
        final.particles["cache"][0], final.particles["cache"][1], rtol=0, atol=0
    )
