"""Registry-driven tests of every flow search (``core.FLOW_SEARCHES``): a method added to the
registry is checked here with no new test code.

Truths: the network and reward evaluations counted at run time (a host callback
adds each call's batch size) equal ``info.spent()`` and fit the plan and the
budget, at random budgets and every option value the entry lists; methods that
target an exact tilted law match it in closed form (a Gaussian tilted by a
linear reward is a shifted Gaussian), and a flipped sign or a wrong tilt fails
the same check; the same key gives the same sample on 1 and 4 devices and in
another process with another hash seed; bad budgets and options are refused
with the argument named.
"""

import os
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import distributed
from inferax.search import core
from inferax.search import flow as fsearch

REG = core.FLOW_SEARCHES
NAMES = sorted(REG)
STEPS = 3
MIX = gmm.gaussian_mixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), scale=0.5)


def reward(x):
    return jnp.sin(3.0 * x[:, 0])  # a rugged reward: searches make different choices


def configs(entry):
    """Every option value once, the others at their first value (``SearchEntry.options``)."""
    first = {k: v[0] for k, v in entry.options.items()}
    out = [first]
    for k, values in entry.options.items():
        out += [first | {k: v} for v in values[1:]]
    return out


def run_kwargs(entry, options):
    return {"event_shape": (1,), **entry.fixed, **options}


def counting(fn, calls):
    """``fn`` that adds its batch size to ``calls`` at run time (inside scan / while_loop)."""

    def counted(x, *args):
        jax.debug.callback(lambda n: calls.append(int(n)), x.shape[0])
        return fn(x, *args)

    return counted


@pytest.mark.parametrize("name", NAMES)
def test_run_time_work_equals_spent_and_fits_the_budget(name):
    entry = REG[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    nfe_calls, reward_calls = [], []
    dyn = fsearch.make_dynamics(counting(MIX.velocity, nfe_calls), "linear", STEPS)
    counted_reward = counting(reward, reward_calls)
    for i, options in enumerate(configs(entry)):
        limit = int(rng.integers(30, 90))
        budget = core.Budget(nfe=limit) if i % 2 else limit  # both forms are accepted
        kw = run_kwargs(entry, options)
        plan = entry.plan(budget, num_steps=STEPS, **{k: v for k, v in kw.items()
                                                      if k != "event_shape"})  # fmt: skip
        assert plan["nfe"] <= limit and plan["population"] >= 1, (name, options, plan)
        nfe_calls.clear()
        reward_calls.clear()
        run = jax.jit(lambda k, b=budget, kw=kw: entry.fn(k, dyn, counted_reward, b, **kw))
        x, info = run(jax.random.key(i))
        jax.effects_barrier()
        spent = {u: int(v) for u, v in info.spent().items()}
        assert spent == {"nfe": sum(nfe_calls), "reward_evals": sum(reward_calls)}, (
            name,
            options,
            limit,
        )
        assert spent["nfe"] <= plan["nfe"] <= limit, (name, options, limit, spent, plan)
        assert spent["reward_evals"] <= plan["reward_evals"], (name, options, spent, plan)
        assert info.budget == limit and x.shape == (1,)
        assert float(info.reward) == pytest.approx(float(reward(x[None])[0]), abs=1e-5)


EXACT = [n for n in NAMES if REG[n].target == "exact"]
SIGMA, MEAN0, TILT = 0.5, 0.3, 2.0
GAUSS = gmm.gaussian_mixture(jnp.ones(1), jnp.array([[MEAN0]]), scale=SIGMA)


def tilted_ok(x, alpha):
    """N(m, s^2) exp(alpha x) / Z = N(m + alpha s^2, s^2): mean and variance within tolerance."""
    x = np.asarray(x).reshape(-1)
    mean, var = MEAN0 + alpha * SIGMA**2, SIGMA**2
    return abs(x.mean() - mean) < 0.06 and abs(x.var() - var) < 0.25 * var


@pytest.mark.parametrize("name", EXACT)
def test_exact_methods_sample_the_tilted_gaussian(name):
    entry = REG[name]
    steps, n = 12, 1000
    dyn = fsearch.make_dynamics(GAUSS.velocity, "linear", steps, g="sqrt")
    kw = run_kwargs(entry, {})

    @jax.jit
    def run(key, sign, alpha):
        return entry.fn(key, dyn, lambda x: sign * x[:, 0], n * steps, alpha=alpha, **kw)[1]

    pop = lambda *a: run(jax.random.key(0), *a).population[0]  # noqa: E731
    x = np.asarray(pop(1.0, TILT))
    assert tilted_ok(x, TILT), (x.mean(), x.var())
    # Negative controls: the flipped reward and a wrong tilt miss the same target.
    assert not tilted_ok(pop(-1.0, TILT), TILT)
    assert not tilted_ok(pop(1.0, 1.0), TILT)


def sharded_when_even(fn, mesh):
    """``fn`` with its rows spread over ``mesh`` when their number divides evenly (else as is).

    (Padding a 1-row batch to the mesh size and constraining it let XLA's partitioner
    compute garbage on 4 CPU devices, so uneven batches are left replicated.)
    """
    size = mesh.devices.size
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("particles"))

    def wrapped(x, *args):
        if x.shape[0] % size:
            return fn(x, *args)
        x = jax.lax.with_sharding_constraint(x, spec)
        return jax.lax.with_sharding_constraint(fn(x, *args), spec)

    return wrapped


def run_on_mesh(name, mesh, budget=48):
    entry = REG[name]
    dyn = fsearch.make_dynamics(sharded_when_even(MIX.velocity, mesh), "linear", STEPS)
    kw = run_kwargs(entry, configs(entry)[-1])  # the last option value: the most batching

    @jax.jit
    def run(key):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return entry.fn(key, dyn, sharded_when_even(reward, mesh), budget, **kw)

    x, info = run(jax.random.key(11))
    return np.asarray(x), float(info.reward), {u: int(v) for u, v in info.spent().items()}


@pytest.fixture(scope="module")
def one_device_results(devices):
    mesh = distributed.particle_mesh(devices[:1])
    return {name: run_on_mesh(name, mesh) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_result_on_1_and_4_devices(devices, one_device_results, name):
    x1, r1, s1 = one_device_results[name]
    x4, r4, s4 = run_on_mesh(name, distributed.particle_mesh(devices))
    # The same decisions and counts; the floats up to the fusion order of the partitioned
    # program (a few float32 roundings over the steps).
    assert s1 == s4
    np.testing.assert_allclose(x4, x1, rtol=2e-6, atol=1e-6)
    assert r4 == pytest.approx(r1, rel=2e-6, abs=1e-6)


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from inferax.sampling import distributed
from test_flow_registry import NAMES, run_on_mesh
mesh = distributed.particle_mesh(jax.devices()[:1])
print(json.dumps({{n: run_on_mesh(n, mesh)[0].tolist() for n in NAMES}}))
"""


def test_same_key_same_result_in_another_process(one_device_results):
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = CHILD.format(tests=os.path.dirname(__file__))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(got) == NAMES
    for name in NAMES:
        np.testing.assert_array_equal(
            np.asarray(got[name], np.float32), one_device_results[name][0]
        )


@pytest.mark.parametrize("name", NAMES)
def test_bad_budgets_and_options_name_the_argument(name):
    entry = REG[name]
    dyn = fsearch.make_dynamics(MIX.velocity, "linear", STEPS)
    kw = run_kwargs(entry, configs(entry)[0])
    key = jax.random.key(0)
    bad = [
        (0, ValueError),
        (-1, ValueError),
        (2.5, TypeError),
        (core.Budget(reward_evals=100), ValueError),
        (STEPS - 1, ValueError),  # less than one solve
    ]
    for budget, err in bad:
        with pytest.raises(err, match="budget"):
            entry.fn(key, dyn, reward, budget, **kw)
        with pytest.raises(err, match="budget"):
            entry.plan(budget, num_steps=STEPS, **entry.fixed, **configs(entry)[0])
    for option in entry.options:
        for value in (0, -2, 1.5):
            if option == "pivot_policy" or option == "solver":
                value = "nonsense"
            with pytest.raises((ValueError, TypeError), match=option):
                entry.fn(key, dyn, reward, 10_000, **(kw | {option: value}))
    with pytest.raises(TypeError, match="options"):
        entry.plan(100, num_steps=STEPS, no_such_option=1)
