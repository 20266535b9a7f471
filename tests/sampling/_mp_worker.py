"""One process of a multi-process run, launched by tests/sampling/test_multiprocess.py.

``python _mp_worker.py compute --process-id I --num-processes P --port PORT
--local-devices D --out FILE`` starts the runtime on a loopback coordinator,
runs ``compute`` (SMC, island SMC, a Feynman-Kac corrector and a flow search,
random search over initial noises, on a ``"particles"`` mesh over all
``P x D`` devices), gathers the results and, on process 0, writes them to
``FILE`` (``.npz``). ``loop`` does the same, then writes a ready file and runs
small collectives forever: the test kills one process and checks that the
other one fails within a bounded time.

``compute`` is also imported by the test and run in the pytest process (one
process, 4 devices), the layout the multi-process results must match bit for bit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

N = 64  # particles: 16 per device on 4 devices
NUM_ISLANDS = 8
A, Q, R = 0.9, 0.5, 0.3
YS = [0.4, -0.3, 1.1, 0.8, -0.5, 0.2] * 2
MEAN, STD = 1.5, 0.6  # FK data: N(MEAN, STD^2) per coordinate, annealed to beta = 2
SEARCH = dict(budget=N * 8, event_shape=(2,), num_steps=8)  # random search: N candidates


def _transition(key, x, y):
    import jax
    import jax.numpy as jnp

    x_new = A * x + jnp.sqrt(Q) * jax.random.normal(key, x.shape)
    return x_new, -0.5 * (jnp.log(2 * jnp.pi * R) + (y - x_new[:, 0]) ** 2 / R)


def gaussian_velocity(x, t):
    """Exact velocity of the linear interpolant for data N(MEAN, STD^2 I)."""
    var = t**2 * STD**2 + (1 - t) ** 2
    resid = x - t * MEAN
    return MEAN + (t * STD**2 - (1 - t)) * resid / var


def reward(x):
    """Flow-search reward: closeness to a point of the data distribution's tail."""
    import jax.numpy as jnp

    return -jnp.sum((x - jnp.asarray([2.5, 0.5], x.dtype)) ** 2, axis=-1)


def compute(mesh) -> dict:
    """Runs the population algorithms on ``mesh``; gathered NumPy results."""
    import jax
    import jax.numpy as jnp

    from inferax.sampling import distributed, feynman_kac, multiprocess, smc
    from inferax.search import flow as fsearch

    alg = smc.build(_transition, resampling="systematic", ess_threshold=0.5)
    ys = jnp.asarray(YS, jnp.float32)
    key = jax.random.key(7)
    pop = multiprocess.population(
        jax.random.fold_in(key, 0), lambda k: jax.random.normal(k, (3,)), N, mesh
    )
    state = alg.init(pop)
    final, infos = distributed.sharded_run(alg, jax.random.fold_in(key, 1), state, ys, mesh)
    island, island_infos = distributed.island_smc_run(
        alg, jax.random.fold_in(key, 2), state, ys, mesh, num_islands=NUM_ISLANDS
    )
    transition = feynman_kac.anneal(gaussian_velocity, 2.0)
    fk_x, fk_lw, fk_info = multiprocess.fk_sample(
        jax.random.fold_in(key, 3), transition, N, jnp.linspace(0.0, 1.0, 9), mesh,
        event_shape=(2,), ess_threshold=0.7,
    )  # fmt: skip
    best, search_info = jax.jit(
        partial(
            fsearch.random_search,
            velocity_fn=multiprocess.shard_model(gaussian_velocity, mesh),
            reward_fn=multiprocess.shard_model(reward, mesh),
            **SEARCH,
        )
    )(jax.random.fold_in(key, 4))
    out = {
        "population": pop,
        "smc_particles": final.particles,
        "smc_log_weights": final.log_weights,
        "smc_log_Z": final.log_Z,
        "smc_ancestors": infos.ancestors,
        "smc_resampled": infos.resampled,
        "island_particles": island.particles,
        "island_log_weights": island.log_weights,
        "island_log_Z": island.log_Z,
        "island_ancestors": island_infos.ancestors,
        "fk_particles": fk_x,
        "fk_log_weights": fk_lw,
        "fk_log_Z": fk_info.log_Z,
        "fk_resampled": fk_info.resampled,
        "fk_ess": fk_info.ess,
        "search_best": best,
        "search_rewards": search_info.trace["reward"],
        "search_samples": search_info.population[0],
    }
    return multiprocess.gather(out)


def checkpoint_round_trip(mesh, directory):
    """Saves a population sharded over all processes through orbax's multi-host path
    (``models.checkpoint.Checkpointer``) and restores it onto the same sharding."""
    import jax
    import numpy as np

    from inferax.models.checkpoint import Checkpointer
    from inferax.sampling import distributed, multiprocess

    pop = multiprocess.population(jax.random.key(11), lambda k: jax.random.normal(k, (3,)), N, mesh)
    tree = {"particles": pop, "step": distributed.replicate(np.int32(5), mesh)}
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, tree)
        ckpt.wait()
        restored = ckpt.restore(1, jax.eval_shape(lambda: tree))
    assert restored["particles"].sharding == pop.sharding, restored["particles"].sharding
    assert int(multiprocess.gather(restored["step"])) == 5
    return multiprocess.gather(restored["particles"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("compute", "loop"))
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--local-devices", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--heartbeat-timeout", type=int, default=10)
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={args.local_devices} "
        "--xla_cpu_use_fusion_emitters=false"  # as conftest
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import jax.numpy as jnp
    import numpy as np

    from inferax.sampling import distributed, multiprocess

    multiprocess.initialize(
        f"127.0.0.1:{args.port}",
        args.num_processes,
        args.process_id,
        initialization_timeout=60,
        heartbeat_timeout=args.heartbeat_timeout,
    )
    assert jax.process_count() == args.num_processes, jax.process_count()
    mesh = distributed.particle_mesh()
    result = compute(mesh)
    result["checkpoint_particles"] = checkpoint_round_trip(mesh, args.out + ".ckpt")
    if multiprocess.is_main_process():
        np.savez(args.out + ".tmp.npz", **result)
        os.replace(args.out + ".tmp.npz", args.out)
    if args.mode == "loop":  # collectives until a peer dies (the test kills one)
        ones = distributed.shard_particles(np.ones(2 * jax.device_count(), np.float32), mesh)
        total = jax.jit(lambda x: jnp.sum(x))
        for i in range(10**9):
            multiprocess.gather(total(ones))
            if i == 10:
                with open(f"{args.out}.ready{args.process_id}", "w") as f:
                    f.write(str(time.time()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
