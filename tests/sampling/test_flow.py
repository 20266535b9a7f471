"""The ODE sampler against exact flows, plus its promises: jit, devices, batches, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.models import gmm
from inferax.sampling import flow, schedules

GAUSS = gmm.gaussian_mixture([1.0], [[1.0, -0.5]], [[[0.6, 0.2], [0.2, 0.3]]])


def test_euler_many_steps_reproduces_mixture_moments():
    mix = gmm.eight_gaussians()
    x0 = flow.noise(jax.random.key(0), 20_000, (2,))
    x1, info = jax.jit(lambda x: flow.sample(mix.velocity, x, schedules.uniform(200)))(x0)
    assert int(info.nfe) == 200 and int(info.num_steps) == 200
    # Monte Carlo error of the mean with 20k samples and variance ~2: SE ~ 0.01.
    np.testing.assert_allclose(x1.mean(0), mix.mean(), atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(x1).T), mix.covariance(), atol=0.1)
    # Mass lands on the modes: the exact log-density of the samples is close to the entropy bound.
    ref = mix.sample(jax.random.key(1), 20_000)
    assert abs(float(mix.log_prob(x1).mean() - mix.log_prob(ref).mean())) < 0.1


MIX = gmm.gaussian_mixture(
    [0.3, 0.7], [[1.5, -0.5], [-1.0, 1.0]], [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.5]]]
)


def _orders(velocity, exact_fn, solver, ns):
    """Mean errors on grids of ``ns`` steps and the observed orders between them."""
    x0 = flow.noise(jax.random.key(2), 256, (2,))
    exact = exact_fn(x0)
    errs = []
    for n in ns:
        x1, _ = flow.sample(velocity, x0, schedules.uniform(n), solver=solver)
        errs.append(float(jnp.mean(jnp.linalg.norm(x1 - exact, axis=-1))))
    errs = np.array(errs)
    return errs, -np.diff(np.log(errs)) / np.log(2.0)


# The order tests run from the solver table: a solver added to flow.SOLVERS is tested here.
TABLE = list(flow.SOLVERS.values())


@pytest.mark.parametrize("solver", TABLE, ids=[s.name for s in TABLE])
def test_convergence_order_on_closed_form_gaussian_flow(solver):
    # x_1 = mu + Sigma^{1/2} x_0 exactly. On this linear flow the midpoint rule
    # happens to superconverge (observed order ~3), so the bound is one-sided.
    errs, slopes = _orders(
        GAUSS.velocity, lambda x0: GAUSS.flow_map(x0, 1.0), solver, [4, 8, 16, 32]
    )
    assert slopes[-1] > solver.order - 0.2, (solver.name, errs, slopes)
    assert np.all(slopes < solver.order + 1.2), (solver.name, errs, slopes)  # not of higher order


@pytest.mark.parametrize("solver", TABLE, ids=[s.name for s in TABLE])
def test_convergence_order_on_two_component_mixture(solver):
    # Reference: Heun on a 4096-step grid (error ~1e-7, below float32 round-off).
    def reference(x0):
        return flow.sample(MIX.velocity, x0, schedules.uniform(4096), solver="heun")[0]

    errs, slopes = _orders(MIX.velocity, reference, solver, [16, 32, 64, 128])
    assert abs(slopes[-1] - solver.order) < 0.3, (solver.name, errs, slopes)


def _rk4(v, x, t0, t1, v0=None):
    dt = t1 - t0
    k1 = v(x, t0) if v0 is None else v0
    k2 = v(x + dt / 2 * k1, t0 + dt / 2)
    k3 = v(x + dt / 2 * k2, t0 + dt / 2)
    k4 = v(x + dt * k3, t1)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_a_user_solver_plugs_in_with_its_order_and_cost():
    rk4 = flow.Solver("rk4", _rk4, evals_per_step=4, order=4)
    with jax.enable_x64(True):  # order 4 drops below float32 round-off within a few halvings

        def reference(x0):
            return flow.sample(MIX.velocity, x0, schedules.uniform(2048), solver=rk4)[0]

        x0 = flow.noise(jax.random.key(2), 64, (2,))
        assert x0.dtype == jnp.float64
        exact = reference(x0)
        errs = []
        for n in [8, 16, 32]:
            x1, info = flow.sample(MIX.velocity, x0, schedules.uniform(n), solver=rk4)
            assert int(info.nfe) == 4 * n == flow.cost(n, rk4)
            errs.append(float(jnp.max(jnp.abs(x1 - exact))))
        slopes = -np.diff(np.log(errs)) / np.log(2.0)
    assert abs(slopes[-1] - 4) < 0.4, (errs, slopes)
    with pytest.raises(ValueError, match="evals_per_step"):
        flow.sample(MIX.velocity, x0, schedules.uniform(4), solver=rk4._replace(evals_per_step=0))
    with pytest.raises(TypeError, match="solver"):
        flow.sample(MIX.velocity, x0, schedules.uniform(4), solver=_rk4)


# --- one step at a time -------------------------------------------------------------


def _counting(velocity):
    calls = []

    def v(x, t):
        calls.append(1)
        return velocity(x, t)

    return v, calls


@pytest.mark.parametrize("solver", TABLE, ids=[s.name for s in TABLE])
def test_step_is_one_step_of_sample_and_reuses_a_given_velocity(solver):
    x = flow.noise(jax.random.key(4), 8, (2,))
    t0, t1 = 0.25, 0.5
    whole, _ = flow.sample(MIX.velocity, x, jnp.array([t0, t1]), solver=solver)
    v, calls = _counting(MIX.velocity)
    one = flow.step(v, x, t0, t1, solver=solver)
    np.testing.assert_allclose(np.asarray(one), np.asarray(whole), rtol=1e-6, atol=1e-7)
    assert len(calls) == solver.evals_per_step
    u = MIX.velocity(x, jnp.float32(t0))  # e.g. computed for a lookahead reward
    calls.clear()
    reused = flow.step(v, x, t0, t1, solver=solver.name, velocity=u)
    np.testing.assert_array_equal(np.asarray(reused), np.asarray(one))
    assert len(calls) == solver.evals_per_step - 1
    with pytest.raises(ValueError, match="velocity"):
        flow.step(v, x, t0, t1, solver=solver, velocity=u[:, :1])


def test_euler_step_by_hand():
    x0 = jnp.array([[0.5, -1.0]])
    ts = jnp.array([0.0, 0.25, 1.0])
    x1, info = flow.sample(GAUSS.velocity, x0, ts, return_trajectory=True)
    x_a = x0 + 0.25 * GAUSS.velocity(x0, 0.0)
    x_b = x_a + 0.75 * GAUSS.velocity(x_a, 0.25)
    np.testing.assert_allclose(x1, x_b, rtol=1e-6)
    assert info.trajectory.shape == (3, 1, 2)
    np.testing.assert_allclose(info.trajectory[1], x_a, rtol=1e-6)
    np.testing.assert_allclose(info.trajectory[0], x0)


def test_nfe_counts():
    x0 = jnp.zeros((3, 2))
    ts = schedules.uniform(5)
    assert int(flow.sample(GAUSS.velocity, x0, ts, solver="midpoint")[1].nfe) == 10
    assert int(flow.sample(GAUSS.velocity, x0, ts, solver="heun")[1].nfe) == 10
    assert int(flow.sample(GAUSS.velocity, x0, ts, nfe_per_call=2)[1].nfe) == 10


def test_jit_traces_once_per_shape():
    traces = []

    def velocity(x, t):
        traces.append(1)
        return GAUSS.velocity(x, t)

    run = jax.jit(lambda x, ts: flow.sample(velocity, x, ts, solver="midpoint")[0])
    ts = schedules.sway(8)
    run(jnp.zeros((16, 2)), ts)
    n_first = len(traces)
    run(jnp.ones((16, 2)), schedules.uniform(8))
    assert len(traces) == n_first  # same shapes: no retrace
    run(jnp.ones((8, 2)), ts)
    assert len(traces) > n_first  # new shape: one new trace


def test_vmap_over_batches_of_populations():
    x0 = flow.noise(jax.random.key(5), 12, (2,)).reshape(3, 4, 2)
    out = jax.vmap(lambda x: flow.sample(GAUSS.velocity, x, schedules.uniform(4))[0])(x0)
    ref = flow.sample(GAUSS.velocity, x0.reshape(12, 2), schedules.uniform(4))[0]
    np.testing.assert_allclose(out.reshape(12, 2), ref, rtol=1e-6, atol=1e-6)


def test_same_key_same_samples_in_one_batch_or_two():
    key = jax.random.key(7)
    ts = schedules.sway(16)
    whole = flow.sample(GAUSS.velocity, flow.noise(key, 64, (2,)), ts)[0]
    a = flow.sample(GAUSS.velocity, flow.noise(key, 40, (2,)), ts)[0]
    b = flow.sample(GAUSS.velocity, flow.noise(key, 24, (2,), offset=40), ts)[0]
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)


def test_same_key_same_samples_on_one_and_four_devices(devices):
    key = jax.random.key(11)
    ts = schedules.sway(16)
    run = jax.jit(lambda x: flow.sample(GAUSS.velocity, x, ts, solver="heun")[0])
    one = run(flow.noise(key, 64, (2,)))
    mesh = jax.make_mesh((4,), ("particles",), devices=devices)
    x_sharded = jax.device_put(flow.noise(key, 64, (2,)), NamedSharding(mesh, P("particles")))
    four = run(x_sharded)
    assert len(four.sharding.device_set) == 4
    np.testing.assert_array_equal(np.asarray(one), np.asarray(four))


def test_bad_inputs_raise():
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="solver"):
        flow.sample(GAUSS.velocity, x0, schedules.uniform(4), solver="rk45")
    with pytest.raises(ValueError, match="strictly increasing"):
        flow.sample(GAUSS.velocity, x0, jnp.array([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        flow.sample(GAUSS.velocity, x0, jnp.array([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flow.sample(GAUSS.velocity, x0, jnp.array([0.0, 0.5, 1.5]))
    with pytest.raises(ValueError, match="ts"):
        flow.sample(GAUSS.velocity, x0, jnp.array([0.0]))
    with pytest.raises(ValueError, match="velocity_fn.*shape"):
        flow.sample(lambda x, t: x[:, :1], x0, schedules.uniform(4))
    with pytest.raises(TypeError, match="velocity_fn"):
        flow.sample("not callable", x0, schedules.uniform(4))
    with pytest.raises(TypeError, match="x0"):
        flow.sample(GAUSS.velocity, jnp.zeros((4, 2), jnp.int32), schedules.uniform(4))
    with pytest.raises(ValueError, match="num_samples"):
        flow.noise(jax.random.key(0), 0, (2,))


# --- masked active steps -------------------------------------------------------------

PADDED = jnp.concatenate([schedules.sway(6), jnp.ones(5)])  # 6 real steps + 5 of padding


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_num_active_steps_equals_the_unpadded_grid(solver):
    x0 = flow.noise(jax.random.key(3), 32, (2,))
    ref, ref_info = flow.sample(GAUSS.velocity, x0, schedules.sway(6), solver=solver)
    # A Python int: a scan over the active part.
    got, info = flow.sample(GAUSS.velocity, x0, PADDED, solver=solver, num_active_steps=6)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    assert int(info.nfe) == int(ref_info.nfe) == 6 * flow.SOLVERS[solver].evals_per_step
    # A traced count: one compiled sampler serves every count.
    run = jax.jit(
        lambda x, n: flow.sample(
            GAUSS.velocity, x, PADDED, solver=solver, num_active_steps=n, return_trajectory=True
        )
    )
    got, info = run(x0, 6)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
    assert int(info.nfe) == int(ref_info.nfe) and int(info.num_steps) == 6
    assert info.trajectory.shape == (12, 32, 2)
    np.testing.assert_allclose(info.trajectory[-1], got)  # final state repeated after step 6
    short, info3 = run(x0, 3)
    ref3, _ = flow.sample(GAUSS.velocity, x0, schedules.sway(6)[:4], solver=solver)
    np.testing.assert_allclose(np.asarray(short), np.asarray(ref3), rtol=1e-6, atol=1e-6)
    assert int(info3.nfe) == 3 * flow.SOLVERS[solver].evals_per_step


def test_inactive_steps_evaluate_nothing_even_under_vmap():
    calls = []

    def velocity(x, t):
        jax.debug.callback(lambda t: calls.append(float(t)), t)
        return GAUSS.velocity(x, t)

    run = jax.jit(
        jax.vmap(
            lambda x, n: flow.sample(velocity, x, PADDED, num_active_steps=n)[0], in_axes=(0, None)
        )
    )
    jax.block_until_ready(run(jnp.zeros((3, 4, 2)), 2))
    assert len(calls) == 2 and max(calls) < float(PADDED[2])
    calls.clear()
    # Without a count every interval is integrated (the padding costs evaluations).
    jax.block_until_ready(
        jax.jit(lambda x: flow.sample(velocity, x, PADDED[:7])[0])(jnp.zeros((4, 2)))
    )
    assert len(calls) == 6


def test_num_active_steps_checks_only_the_active_part():
    x0 = jnp.zeros((4, 2))
    bad_tail = jnp.array([0.0, 0.5, 1.0, 0.3, jnp.nan])  # padding may hold anything
    _, info = flow.sample(GAUSS.velocity, x0, bad_tail, num_active_steps=2)
    assert int(info.nfe) == 2
    with pytest.raises(ValueError, match="strictly increasing"):
        flow.sample(GAUSS.velocity, x0, bad_tail, num_active_steps=3)
    with pytest.raises(ValueError, match=r"num_active_steps.*\[0, 4\]"):
        flow.sample(GAUSS.velocity, x0, bad_tail, num_active_steps=5)
    for bad in (2.0, True, jnp.array([1, 2])):
        with pytest.raises(TypeError, match="num_active_steps"):
            flow.sample(GAUSS.velocity, x0, bad_tail, num_active_steps=bad)
