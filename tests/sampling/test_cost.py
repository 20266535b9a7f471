"""Static costs: the helpers say before tracing what the samplers report in ``info.nfe``."""

import functools

import jax
import jax.numpy as jnp
import pytest

from inferax.models import gmm
from inferax.sampling import cost, flow, guidance, interpolants, schedules, sde

GAUSS = gmm.gaussian_mixture([1.0], [[1.0, -0.5]], [[[0.6, 0.2], [0.2, 0.3]]])
X0 = jnp.zeros((3, 2))


def cond_velocity(x, t, labels):
    return -x + labels[:, None].astype(x.dtype) + t


@pytest.mark.parametrize("solver", list(flow.SOLVERS))
@pytest.mark.parametrize("per_call", [1, 3])
def test_flow_cost_equals_the_reported_nfe_for_every_solver(solver, per_call):
    ts = schedules.uniform(5)
    _, info = flow.sample(GAUSS.velocity, X0, ts, solver=solver, nfe_per_call=per_call)
    expected = 5 * flow.SOLVERS[solver].evals_per_step * per_call
    assert (
        int(info.nfe)
        == expected
        == flow.cost(5, solver, per_call)
        == flow.cost(ts, solver, per_call)
    )
    padded = jnp.concatenate([ts, jnp.ones(3)])
    _, info = flow.sample(
        GAUSS.velocity, X0, padded, solver=solver, nfe_per_call=per_call, num_active_steps=4
    )
    assert int(info.nfe) == flow.cost(4, solver, per_call)


def test_sde_cost_equals_the_reported_nfe():
    ts = schedules.uniform(7)
    guided = guidance.cfg(cond_velocity, jnp.array([0, 1, 2]), 3)
    _, info = sde.sample(jax.random.key(0), guided, X0, ts)
    assert int(info.nfe) == 14 == sde.cost(7, nfe_per_call=cost.nfe_per_call(guided))
    assert sde.cost(ts) == 7


def test_guided_velocity_counts_two_through_jit_and_wraps_but_not_a_bare_lambda():
    guided = guidance.cfg(cond_velocity, jnp.array([0, 1, 2]), 3)
    assert isinstance(guided, cost.Costed) and cost.nfe_per_call(guided) == 2

    @functools.wraps(guided)
    def wrapped(x, t):
        return guided(x, t)

    ts = schedules.uniform(4)
    for fn in (guided, jax.jit(guided), wrapped):
        assert int(flow.sample(fn, X0, ts)[1].nfe) == 8, fn
    hidden = lambda x, t: guided(x, t)  # noqa: E731 - a lambda hides the cost (documented)
    assert int(flow.sample(hidden, X0, ts)[1].nfe) == 4
    assert int(flow.sample(cost.with_cost(hidden, 2), X0, ts)[1].nfe) == 8
    assert int(flow.sample(hidden, X0, ts, nfe_per_call=2)[1].nfe) == 8
    # A converted (e.g. VP) guided velocity keeps its cost.
    vp_guided = interpolants.convert_velocity(guided, interpolants.vp())
    assert int(flow.sample(vp_guided, X0, ts * 0.9)[1].nfe) == 8


def test_a_bare_attribute_is_not_a_cost():
    def v(x, t):
        return -x

    v.nfe_per_call = 2  # the old convention, lost through jit and lambdas: now ignored
    assert int(flow.sample(v, X0, schedules.uniform(4))[1].nfe) == 4


@pytest.mark.parametrize(
    "bad, error", [(-1, ValueError), (0, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_costs_are_rejected(bad, error):
    ts = schedules.uniform(4)
    with pytest.raises(error, match="nfe_per_call"):
        flow.sample(GAUSS.velocity, X0, ts, nfe_per_call=bad)
    with pytest.raises(error, match="nfe_per_call"):
        sde.sample(jax.random.key(0), GAUSS.velocity, X0, ts, nfe_per_call=bad)
    with pytest.raises(error, match="nfe_per_call"):
        flow.cost(4, "euler", bad)
    with pytest.raises(error, match="nfe_per_call"):
        sde.cost(4, bad)
    with pytest.raises(error, match="nfe_per_call"):
        cost.with_cost(GAUSS.velocity, bad)


def test_cost_helper_arguments_are_checked():
    with pytest.raises(ValueError, match="num_steps"):
        flow.cost(-2)
    with pytest.raises(TypeError, match="num_steps"):
        flow.cost(2.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        flow.cost(jnp.array([0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="solver"):
        flow.cost(4, "rk45")
    assert flow.cost(0) == 0
