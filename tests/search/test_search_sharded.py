"""Same key, same result: the particle flow searches (SMC, RBF) with their population sharded over 1
or 4 devices (``multiprocess.shard_model`` pins the model's inputs and outputs to the
``"particles"`` mesh; the weight reductions run replicated under the ambient mesh)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import distributed, multiprocess
from inferax.search import flow as fsearch
from inferax.search.flow import verifiers

MIX = gmm.gaussian_mixture(jnp.array([0.5, 0.5]), jnp.array([[-2.0], [2.0]]), scale=0.5)
REWARD = verifiers.quadratic(jnp.array([1.0]), 1.0)

METHODS = {
    "smc": lambda k, dyn, r: fsearch.smc(k, dyn, r, 64 * 8, event_shape=(1,), num_particles=64),
    "rbf": lambda k, dyn, r: fsearch.rbf(k, dyn, r, 64 * 8, event_shape=(1,)),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_particle_search_same_on_1_and_4_devices(devices, name):
    outs = []
    for d in (1, 4):
        mesh = distributed.particle_mesh(devices[:d])
        velocity = multiprocess.shard_model(MIX.velocity, mesh)
        reward = multiprocess.shard_model(REWARD, mesh)
        dyn = fsearch.make_dynamics(velocity, "linear", 8, g="sqrt")

        @partial(jax.jit)
        def run(key, dyn=dyn, reward=reward, mesh=mesh):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return METHODS[name](key, dyn, reward)

        x, info = run(jax.random.key(3))
        outs.append((np.asarray(x), np.asarray(info.reward), int(info.nfe)))
        if d == 4:  # the program really is partitioned over the 4 devices
            hlo = run.lower(jax.random.key(3)).compile().as_text()
            assert "all-gather" in hlo or "all-reduce" in hlo or "collective-permute" in hlo
    # The same decisions; since RBF counts and caps its lockstep rows, its partitioned
    # program rounds its sample differently by one float32 ulp (1.0481489 vs 1.0481488;
    # the fusion order, not a decision), so the floats are compared to 3e-7.
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=3e-7, atol=0)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=3e-7, atol=1e-7)
    assert outs[0][2] == outs[1][2] <= 64 * 8
    # and the same algorithm as the plain, unsharded run (floats up to fusion order)
    plain = jax.jit(
        lambda k: METHODS[name](
            k, fsearch.make_dynamics(MIX.velocity, "linear", 8, g="sqrt"), REWARD
        )
    )
    x, info = plain(jax.random.key(3))
    np.testing.assert_allclose(outs[1][1], np.asarray(info.reward), rtol=1e-4, atol=1e-4)
