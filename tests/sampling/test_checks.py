"""Checks that hold under jit: known values are checked at trace time, traced ones on request."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from inferax.models import gmm
from inferax.sampling import flow, guidance, schedules, sde

GAUSS = gmm.gaussian_mixture([1.0], [[1.0, -0.5]], [[[0.6, 0.2], [0.2, 0.3]]])
X0 = jnp.zeros((4, 2))
KEY = jax.random.key(0)
DECREASING = jnp.array([0.0, 0.5, 0.4, 1.0])


@pytest.mark.parametrize(
    "grid, match",
    [
        (DECREASING, "strictly increasing"),
        (jnp.array([0.0, jnp.nan, 1.0]), "NaN"),
        (jnp.array([0.0, 0.5, 1.5]), r"\[0, 1\]"),
    ],
)
def test_a_known_grid_is_checked_inside_jit(grid, match):
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x: flow.sample(GAUSS.velocity, x, grid)[0])(X0)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x: sde.sample(KEY, GAUSS.velocity, x, grid)[0])(X0)


def test_a_schedule_built_inside_jit_is_a_checked_constant():
    def run(x, points):
        ts = schedules.sway_warp(points, 0.0)  # the identity warp: ts = points
        assert isinstance(ts, jax.Array) and not isinstance(ts, jax.core.Tracer)
        return flow.sample(GAUSS.velocity, x, ts)[0]

    jax.jit(run, static_argnums=1)(X0, (0.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        jax.jit(run, static_argnums=1)(X0, (0.0, 0.5, 0.4, 1.0))


def _checked(sampler):
    return jax.jit(checkify.checkify(sampler))


def test_a_traced_grid_gets_the_opt_in_runtime_check():
    good = schedules.uniform(3)
    run = _checked(lambda x, ts: flow.sample(GAUSS.velocity, x, ts, runtime_checks=True)[0])
    err, out = run(X0, good)
    err.throw()  # no error
    np.testing.assert_allclose(out, flow.sample(GAUSS.velocity, X0, good)[0], rtol=1e-6)
    err, _ = run(X0, DECREASING)
    with pytest.raises(checkify.JaxRuntimeError, match="ts: expected times in"):
        err.throw()
    err, _ = run(X0, jnp.array([0.0, jnp.nan, 0.5, 1.0]))
    with pytest.raises(checkify.JaxRuntimeError, match="ts"):
        err.throw()
    # Off by default: nothing is added to the program, the garbage goes through.
    out = jax.jit(lambda x, ts: flow.sample(GAUSS.velocity, x, ts)[0])(X0, DECREASING)
    assert out.shape == X0.shape
    # The same for the SDE sampler, and for a traced step count.
    run_sde = _checked(lambda x, ts: sde.sample(KEY, GAUSS.velocity, x, ts, runtime_checks=True)[0])
    err, _ = run_sde(X0, DECREASING)
    with pytest.raises(checkify.JaxRuntimeError, match="ts"):
        err.throw()
    padded = jnp.array([0.0, 0.5, 1.0, 1.0, 0.2])
    run_n = _checked(
        lambda n: flow.sample(GAUSS.velocity, X0, padded, num_active_steps=n, runtime_checks=True)[
            0
        ]
    )
    run_n(2)[0].throw()  # the padding after the active part is not checked
    with pytest.raises(checkify.JaxRuntimeError, match="ts"):
        run_n(3)[0].throw()
    with pytest.raises(checkify.JaxRuntimeError, match="num_active_steps"):
        run_n(7)[0].throw()


def test_negative_g_is_rejected_under_jit_and_traced_g_at_run_time():
    ts = schedules.uniform(4)
    for g in (lambda t: t - 0.5, jnp.float32(-1.0), -1.0):
        with pytest.raises(ValueError, match="g"):
            jax.jit(lambda x, g=g: sde.sample(KEY, GAUSS.velocity, x, ts, g=g)[0])(X0)
    run = _checked(lambda x, g: sde.sample(KEY, GAUSS.velocity, x, ts, g=g, runtime_checks=True)[0])
    run(X0, 0.5)[0].throw()
    with pytest.raises(checkify.JaxRuntimeError, match="g"):
        run(X0, -0.5)[0].throw()
    # A traced noise level that is fine gives the same result as the constant.
    out = jax.jit(lambda g: sde.sample(KEY, GAUSS.velocity, X0, ts, g=g)[0])(0.5)
    np.testing.assert_allclose(out, sde.sample(KEY, GAUSS.velocity, X0, ts, g=0.5)[0], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(name="uniform", coef=-1.0), "coef"),
        (dict(name="epss", coef=-1.0), "coef"),
        (dict(name="epss", t_start=0.2), "t_start"),
        (dict(name="epss_sway", t_start=0.2), "t_start"),
    ],
)
def test_schedules_make_refuses_arguments_it_would_ignore(kwargs, name):
    n = 7
    with pytest.raises(ValueError, match=f"{name}: the '{kwargs['name']}' grid does not use it"):
        schedules.make(num_steps=n, **kwargs)


def test_schedules_make_passes_the_arguments_it_uses():
    np.testing.assert_allclose(
        schedules.make("sway", 6, coef=0.5, t_start=0.2), schedules.sway(6, 0.5, 0.2)
    )
    np.testing.assert_allclose(schedules.make("uniform", 4, t_start=0.5), schedules.uniform(4, 0.5))
    np.testing.assert_allclose(
        schedules.make("epss_sway", 7), schedules.sway_warp(schedules.epss(7))
    )
    np.testing.assert_allclose(schedules.make("sway", 8), schedules.sway(8, -1.0))


def test_cfg_checks_the_condition_batch_against_x():
    def cond_velocity(x, t, labels):
        return -x + labels[:, None].astype(x.dtype)

    guided = guidance.cfg(cond_velocity, jnp.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"cond: expected a leading \(batch\) axis of 4"):
        flow.sample(guided, X0, schedules.uniform(2))
    with pytest.raises(ValueError, match="cond"):
        jax.jit(lambda x: guided(x, 0.5))(X0)
    with pytest.raises(ValueError, match="cond: expected leaves with a leading batch axis"):
        guidance.cfg(cond_velocity, jnp.array(1), 3)
    with pytest.raises(TypeError, match="velocity_fn"):
        guidance.cfg("v", jnp.array([0, 1]), 3)


def test_integer_arguments_accept_numpy_and_jax_integers():
    assert flow.noise(KEY, np.int64(3), (2,)).shape == (3, 2)
    assert schedules.uniform(jnp.int32(4)).shape == (5,)
    _, info = flow.sample(GAUSS.velocity, X0, schedules.uniform(4), num_active_steps=np.int32(2))
    assert int(info.nfe) == 2
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="num_samples"):
            flow.noise(KEY, bad, (2,))
        with pytest.raises(TypeError, match="num_steps"):
            schedules.uniform(bad)
