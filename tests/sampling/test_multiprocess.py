"""Tests for inferax.sampling.multiprocess: populations across processes.

One launch of 2 local processes x 2 CPU devices (``_mp_worker.py``, loopback
coordinator, gloo collectives) runs sharded SMC, island SMC, a Feynman-Kac
corrector and a flow search (``fsearch.random_search`` on ``shard_model``
callables) on one 4-device ``"particles"`` mesh; the gathered results must
equal, bit for bit, the same computation in this process on the 4 devices of
conftest. That run is itself checked against the single-device algorithms
(``smc.run``, ``feynman_kac.sample``, ``fsearch.random_search`` unsharded). Then
process 1 is killed and process 0 must fail with the runtime's error within a
bounded time instead of hanging.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from inferax.sampling import distributed, feynman_kac, multiprocess, smc
from inferax.search import flow as fsearch

sys.path.insert(0, str(Path(__file__).parent))
import _mp_worker as worker  # noqa: E402

WORKER = Path(__file__).parent / "_mp_worker.py"
LAUNCH_DEADLINE_S = 300  # compile + run on 2 busy cores; ~30 s on an idle machine
DEATH_DEADLINE_S = 60  # heartbeat timeout 5 s in the workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else "<no log>"
    return text[-n:]


@contextlib.contextmanager
def _launched(tmp: Path):
    """Starts 2 worker processes x 2 devices; kills whatever is left at the end."""
    out = tmp / "result.npz"
    port = _free_port()
    env = dict(os.environ, JAX_ENABLE_X64="0", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    procs, logs = [], []
    for pid in range(2):
        log = tmp / f"worker{pid}.log"
        cmd = [sys.executable, str(WORKER), "loop", "--process-id", str(pid)]
        cmd += ["--num-processes", "2", "--port", str(port), "--local-devices", "2"]
        cmd += ["--out", str(out), "--heartbeat-timeout", "5"]
        with open(log, "w") as f:
            procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env))
        logs.append(log)
    try:
        yield procs, logs, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def _wait_for(paths, procs, logs, deadline_s):
    start = time.monotonic()
    while not all(p.exists() for p in paths):
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                pytest.fail(f"worker exited with {p.returncode} before finishing:\n{_tail(log)}")
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"workers did not finish within {deadline_s} s:\n{_tail(logs[0])}")
        time.sleep(0.2)


def test_two_processes_match_one_process_bit_for_bit_and_a_dead_peer_fails_fast(tmp_path, devices):
    # One test, so that pytest-xdist keeps the launch and its checks in one worker.
    with _launched(tmp_path) as (procs, logs, out):
        with jax.enable_x64(False):  # the same computation here, while the workers run
            reference = worker.compute(distributed.particle_mesh(devices))
        _check_reference_is_the_single_device_algorithm(reference)
        ready = [Path(f"{out}.ready{pid}") for pid in range(2)]
        _wait_for([out, *ready], procs, logs, LAUNCH_DEADLINE_S)
        got = dict(np.load(out))
        # A dead process makes the other one fail with the runtime's error, fast.
        procs[1].kill()
        start = time.monotonic()
        try:
            rc = procs[0].wait(timeout=DEATH_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {DEATH_DEADLINE_S} s after its peer died")
        log = _tail(logs[0], 20000)
        assert rc != 0, log
        assert "another task died" in log or "unhealthy" in log, log
        assert time.monotonic() - start < DEATH_DEADLINE_S

    # Orbax's multi-host path: each process saved and restored its own shards.
    ckpt = got.pop("checkpoint_particles")
    pop = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.key(11), k), (3,)))
    np.testing.assert_array_equal(ckpt, pop(jnp.arange(worker.N)))
    # 2 processes x 2 devices == 1 process x 4 devices, bit for bit.
    assert sorted(got) == sorted(reference)
    for name, ref in reference.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
    # The runs did something a wrong layout would change: resampling happened
    # (ESS-triggered, so not at every step) and the particles moved.
    assert 0 < got["smc_resampled"].sum() < got["smc_resampled"].size
    assert 0 < got["fk_resampled"].sum() < got["fk_resampled"].size
    resampled_rows = got["smc_ancestors"][got["smc_resampled"]]
    assert not np.array_equal(
        resampled_rows, np.broadcast_to(np.arange(worker.N), resampled_rows.shape)
    )
    assert np.isfinite(got["smc_log_Z"]) and np.isfinite(got["island_log_Z"])
    assert got["smc_log_Z"] != got["island_log_Z"]
    best = np.argmax(got["search_rewards"])
    np.testing.assert_array_equal(got["search_best"], got["search_samples"][best])


def _check_reference_is_the_single_device_algorithm(reference):
    """The 4-device run (which the processes must match) computes smc.run / feynman_kac.sample."""
    key = jax.random.key(7)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        jax.random.fold_in(key, 0), jnp.arange(worker.N)
    )
    pop = jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys)
    np.testing.assert_array_equal(reference["population"], pop)
    alg = smc.build(worker._transition, resampling="systematic", ess_threshold=0.5)
    ys = jnp.asarray(worker.YS, jnp.float32)
    final, infos = jax.jit(alg.run)(jax.random.fold_in(key, 1), alg.init(pop), ys)
    np.testing.assert_array_equal(reference["smc_ancestors"], infos.ancestors)
    np.testing.assert_allclose(reference["smc_particles"], final.particles, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reference["smc_log_Z"], final.log_Z, rtol=1e-6)
    transition = feynman_kac.anneal(worker.gaussian_velocity, 2.0)
    x, lw, info = feynman_kac.sample(
        jax.random.fold_in(key, 3), transition, worker.N, jnp.linspace(0.0, 1.0, 9),
        event_shape=(2,), ess_threshold=0.7, dtype=jnp.float32,
    )  # fmt: skip
    np.testing.assert_array_equal(reference["fk_resampled"], info.resampled)
    np.testing.assert_allclose(reference["fk_particles"], x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference["fk_log_weights"], lw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference["fk_log_Z"], info.log_Z, rtol=1e-5, atol=1e-5)
    best, search_info = fsearch.random_search(
        jax.random.fold_in(key, 4), worker.gaussian_velocity, worker.reward, **worker.SEARCH
    )
    rewards = np.asarray(search_info.trace["reward"])
    np.testing.assert_allclose(reference["search_rewards"], rewards, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference["search_best"], best, rtol=1e-5, atol=1e-5)
    assert rewards.shape == (worker.N,) and np.ptp(rewards) > 0.1  # a real choice was made


def test_population_is_the_same_on_any_layout(devices):
    def sample_fn(k):
        k1, k2 = jax.random.split(k)
        return {"x": jax.random.normal(k1, (2,)), "label": jax.random.randint(k2, (), 0, 9)}

    key = jax.random.key(3)
    one = multiprocess.population(key, sample_fn, 8, distributed.particle_mesh(devices[:1]))
    four = multiprocess.population(key, sample_fn, 8, distributed.particle_mesh(devices))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four), strict=True):
        np.testing.assert_array_equal(a, b)
        assert b.sharding.spec == P("particles") and len(b.sharding.device_set) == 4
    # Particle i depends on i only: the first 4 of a population of 8 are those of 4.
    half = multiprocess.population(key, sample_fn, 4, distributed.particle_mesh(devices))
    np.testing.assert_array_equal(half["x"], four["x"][:4])
    other = multiprocess.population(jax.random.key(4), sample_fn, 8, distributed.particle_mesh())
    assert not np.array_equal(other["x"], four["x"])
    with pytest.raises(ValueError, match="num_particles.*multiple of the 4 devices.*6"):
        multiprocess.population(key, sample_fn, 6, distributed.particle_mesh(devices))
    with pytest.raises(TypeError, match="sample_fn"):
        multiprocess.population(key, None, 8, distributed.particle_mesh(devices))


def test_process_rows_from_process_local_and_gather(devices):
    mesh = distributed.particle_mesh(devices)
    assert multiprocess.process_rows(8, mesh) == slice(0, 8)  # one process holds all rows
    assert multiprocess.is_main_process()
    local = {"tokens": np.arange(24).reshape(8, 3), "index": np.int32(5)}
    tree = multiprocess.from_process_local(
        local, mesh, 8, particle_axes={"tokens": 0, "index": None}
    )
    assert tree["tokens"].sharding.spec == P("particles")
    assert tree["index"].sharding.is_fully_replicated
    back = multiprocess.gather(tree)
    assert isinstance(back["tokens"], np.ndarray)
    np.testing.assert_array_equal(back["tokens"], local["tokens"])
    assert int(back["index"]) == 5
    with pytest.raises(ValueError, match="local: expected 8 rows.*shape \\(6, 3\\)"):
        multiprocess.from_process_local({"tokens": np.zeros((6, 3))}, mesh, 8)
    with pytest.raises(ValueError, match="num_particles.*multiple"):
        multiprocess.process_rows(10, mesh)


def test_initialize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="process_id.*\\[0, 2\\).*got 2"):
        multiprocess.initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        multiprocess.initialize("127.0.0.1:1", 2, 0, heartbeat_timeout=0)
    with pytest.raises(TypeError, match="initialization_timeout"):
        multiprocess.initialize(initialization_timeout=1.5)
    with pytest.raises(TypeError, match="fn: expected a batched callable"):
        multiprocess.shard_model(None, distributed.particle_mesh())
    with pytest.raises(TypeError, match="transition"):
        multiprocess.fk_sample(jax.random.key(0), None, 8, jnp.linspace(0, 1, 3), None)


def test_experiment_binaries_single_process_defaults(monkeypatch):
    from absl import flags

    from inferax.experiments import multihost

    assert multihost.is_main_process()  # no runtime started: this process writes
    multihost.start(False)  # nothing to do
    with pytest.raises(ValueError, match="--distributed"):
        multihost.start(False, "127.0.0.1:1234", 2, 0)
    monkeypatch.setenv("INFERAX_DISTRIBUTED", "1")
    fv = flags.FlagValues()
    enabled, address, num, pid = multihost.define_flags(fv)
    fv(["prog", "--num_processes=2"])
    assert enabled.value is True and address.value is None and num.value == 2
