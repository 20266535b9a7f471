"""The bytes-per-step count of ``benchmarks.distributed``, on the 4 CPU devices of conftest.

The full benchmark launches processes per layout (``make bench``); here only
its byte accounting is checked against what global and island resampling
must move: the particle array and the log-weights for the global step,
nothing per step for the islands.
"""

import jax
import jax.numpy as jnp

from benchmarks import distributed as bench
from inferax.sampling import distributed, smc


def test_bytes_moved_per_step(devices):
    n, dim = 64, 8

    def transition(key, x, _):
        x = x + 0.1 * jax.random.normal(key, x.shape)
        return x, -0.5 * jnp.sum(x * x, axis=1)

    alg = smc.build(transition, resampling="systematic", ess_threshold=1.0)
    mesh = distributed.particle_mesh(devices)
    state = distributed.shard_state(alg.init(jnp.zeros((n, dim))), mesh)
    inputs = distributed.replicate(jnp.zeros(3), mesh)
    key = jax.random.key(0)
    hlo = distributed._sharded_run.lower(alg, key, state, inputs, mesh, True).compile().as_text()
    gathered = bench._loop_all_gather_bytes(hlo)
    # The resampling gathers every particle row and the [N] log-weights (float32).
    assert gathered >= n * dim * 4 + n * 4
    assert gathered <= n * dim * 4 + 4 * n * 4
    lowered = distributed._island_run.lower(alg, key, state, inputs, mesh, 4, True)
    assert bench._loop_all_gather_bytes(lowered.compile().as_text()) == 0
    assert bench._fmt_bytes(3 * 2**20) == "3.0 MiB" and bench._fmt_bytes(100) == "100 B"
