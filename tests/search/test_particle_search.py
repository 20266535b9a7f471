"""Reward-guided particle methods and RBF (Kim et al. 2025) on the Gaussian-mixture oracle.

Truths: p(x) exp(alpha r(x)) for a Gaussian mixture p and a quadratic r is a
Gaussian mixture in closed form (SMC must match it, the plain SDE and a
flipped sign must not); a flat reward leaves the model's marginals; the NFE
reported equals the network evaluations counted at run time; RBF's blocked
proposals make the one-at-a-time decisions; no budget is ever exceeded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from inferax.models import gmm
from inferax.search import flow as fsearch
from inferax.search.flow import verifiers

SIGMA = 0.5
MIX = gmm.gaussian_mixture(jnp.array([0.5, 0.5]), jnp.array([[-2.0], [2.0]]), scale=SIGMA)
CENTER, ALPHA = 1.0, 1.0


def tilted(alpha):
    """Weights, means, variances of p(x) exp(-alpha (x - c)^2 / 2) / Z (1-D, closed form)."""
    mu = np.array([-2.0, 2.0])
    prec = 1 / SIGMA**2 + alpha
    means = (mu / SIGMA**2 + alpha * CENTER) / prec
    log_w = -0.5 * (CENTER - mu) ** 2 / (SIGMA**2 + 1 / alpha)
    w = np.exp(log_w - log_w.max())
    return w / w.sum(), means, np.full(2, 1 / prec)


def moments(x):
    x = np.asarray(x).reshape(-1)
    return np.mean(x > 0), np.mean(x), np.var(x)


def check_target(x, weights, means, variances, tol_w=0.03, tol_m=0.1, tol_v=0.3):
    w_hat, m_hat, v_hat = moments(x)
    mean = weights @ means
    var = weights @ (variances + means**2) - mean**2
    return (
        abs(w_hat - weights[1]) < tol_w
        and abs(m_hat - mean) < tol_m
        and abs(v_hat - var) < tol_v * max(var, 0.5)
    )


@pytest.fixture(scope="module")
def smc_populations():
    steps, n = 32, 2000
    dyn = fsearch.make_dynamics(MIX.velocity, "linear", steps, g="sqrt")
    quad = verifiers.quadratic(jnp.array([CENTER]), 1.0)
    f = jax.jit(
        lambda k, sign, a: fsearch.smc(
            k,
            dyn,
            lambda x: sign * quad(x),
            n * steps,
            event_shape=(1,),
            alpha=a,
            dtype=jnp.float32,
        )
    )
    cases = {"tilted": (1.0, ALPHA), "plain": (1.0, 0.0), "flipped": (-1.0, ALPHA)}
    return {name: f(jax.random.key(0), *args)[1] for name, args in cases.items()}


def test_smc_samples_the_reward_tilted_mixture(smc_populations):
    w, m, v = tilted(ALPHA)
    info = smc_populations["tilted"]
    assert check_target(info.population[0], w, m, v), moments(info.population[0])
    assert int(info.nfe) == 2000 * 32 and int(info.num_nan) == 0
    assert bool(jnp.any(info.trace["resampled"]))


def test_plain_sde_and_flipped_sign_miss_the_tilted_target(smc_populations):
    w, m, v = tilted(ALPHA)
    for name in ("plain", "flipped"):
        x = smc_populations[name].population[0]
        assert not check_target(x, w, m, v), (name, moments(x))
    # The plain SDE (alpha = 0) samples the model itself.
    x = smc_populations["plain"].population[0]
    assert check_target(x, *MODEL), moments(x)


MODEL = (np.array([0.5, 0.5]), np.array([-2.0, 2.0]), np.full(2, SIGMA**2))
LOOSE = dict(tol_w=0.1, tol_m=0.3, tol_v=0.2)
FLAT_CASES = [("svdd", "linear"), ("code", "ode"), ("smc", "vp"), ("rbf", "vp")]


def _method(name, dyn, reward, budget, **kw):
    fn = {
        "best_of_n": fsearch.best_of_n,
        "svdd": fsearch.svdd,
        "code": fsearch.code,
        "smc": fsearch.smc,
        "rbf": fsearch.rbf,
    }[name]
    return lambda k: fn(k, dyn, reward, budget, event_shape=(1,), **kw)


def _base_samples(kind):
    """Plain samples of the dynamics: best-of-1 with a flat reward is the sampler itself."""
    dyn = fsearch.make_dynamics(MIX.velocity, kind, 16)
    run = jax.jit(jax.vmap(_method("best_of_n", dyn, verifiers.flat(), 16)))
    return np.asarray(run(jax.random.split(jax.random.key(9), 400))[0]).reshape(-1)


@pytest.mark.parametrize("name,kind", FLAT_CASES)
def test_flat_reward_returns_the_model_marginals(name, kind):
    base = _base_samples(kind)
    assert check_target(base, *MODEL, **LOOSE), moments(base)  # the dynamics' own accuracy
    dyn = fsearch.make_dynamics(MIX.velocity, kind, 16)
    run = jax.jit(jax.vmap(_method(name, dyn, verifiers.flat(), 64)))
    x, info = run(jax.random.split(jax.random.key(1), 400))
    x = np.asarray(x).reshape(-1)
    assert np.all(np.asarray(info.nfe) <= 64)
    assert stats.ks_2samp(x, base).pvalue > 1e-3, moments(x)
    if name == "svdd":  # negative control: a real reward moves the samples
        xr, _ = jax.jit(jax.vmap(_method(name, dyn, lambda y: y[:, 0], 64)))(
            jax.random.split(jax.random.key(1), 400)
        )
        assert stats.ks_2samp(np.asarray(xr).reshape(-1), base).pvalue < 1e-4


def test_noise_searches_with_flat_reward_keep_the_marginals():
    flat = verifiers.flat()
    runs = {
        "random": lambda k: fsearch.random_search(
            k, MIX.velocity, flat, 64, event_shape=(1,), num_steps=16
        ),
        "zero_order": lambda k: fsearch.zero_order_search(
            k, MIX.velocity, flat, 64, event_shape=(1,), num_steps=16, num_neighbors=3
        ),
        "paths": lambda k: fsearch.search_over_paths(
            k,
            MIX.velocity,
            flat,
            64,
            event_shape=(1,),
            num_steps=16,
            num_paths=1,
            num_branches=1,
            start_step=4,
            backward_steps=2,
            forward_steps=4,
        ),
    }
    for name, f in runs.items():
        x, _ = jax.jit(jax.vmap(f))(jax.random.split(jax.random.key(2), 400))
        assert check_target(x, *MODEL, **LOOSE), (name, moments(x))


def _counting(fn):
    calls = []

    def counted(x, t):
        jax.debug.callback(lambda n: calls.append(int(n)), x.shape[0])
        return fn(x, t)

    return counted, calls


@pytest.mark.parametrize("name", ["best_of_n", "svdd", "code", "smc", "rbf"])
def test_reported_nfe_equals_network_evaluations(name):
    vel, calls = _counting(MIX.velocity)
    dyn = fsearch.make_dynamics(vel, "vp", 6)
    kw = {"num_chains": 1, "num_initial": 3} if name == "rbf" else {}
    _, info = jax.jit(_method(name, dyn, lambda y: y[:, 0], 100, **kw))(jax.random.key(4))
    jax.effects_barrier()
    assert int(info.nfe) == sum(calls) <= 100


def test_rbf_blocked_makes_the_one_at_a_time_decisions():
    dyn = fsearch.make_dynamics(MIX.velocity, "linear", 8)
    reward = verifiers.quadratic(jnp.array([CENTER]))
    out = {}
    for block in (1, 4):
        f = jax.jit(
            lambda k, b=block: fsearch.rbf(
                k,
                dyn,
                reward,
                400,
                event_shape=(1,),
                num_chains=2,
                num_initial=3,
                quota=6,
                block_size=b,
            )
        )
        out[block] = f(jax.random.key(7))
    x1, i1 = out[1]
    assert np.any(np.asarray(i1.trace["accepted"]) >= 0)  # some proposals were accepted early
    assert np.any(np.asarray(i1.trace["rollover"]) > 0)  # and their quota rolled over
    for block in (4,):
        xb, ib = out[block]
        np.testing.assert_array_equal(ib.trace["accepted"], i1.trace["accepted"])
        np.testing.assert_array_equal(ib.trace["rollover"], i1.trace["rollover"])
        np.testing.assert_allclose(xb, x1, rtol=1e-5)
        assert int(i1.nfe) <= int(ib.nfe) <= 400
    assert fsearch.rbf_quota(400, 2, 3, 8, 4) == (400 - 6) // (14 * 4) * 4


def test_budgets_are_never_exceeded():
    rng = np.random.default_rng(0)
    reward = lambda y: jnp.sin(5 * y[:, 0])  # noqa: E731  (a rugged reward)
    dyn = fsearch.make_dynamics(MIX.velocity, "linear", 3)
    cases = [
        ("svdd", lambda: {"num_chains": int(rng.integers(1, 4))}),
        ("smc", dict),
        (
            "rbf",
            lambda: {
                "num_chains": int(rng.integers(1, 4)),
                "num_initial": 2,
                "block_size": int(rng.integers(1, 4)),
            },
        ),
    ]
    for name, make_kw in cases:  # one random budget and population per method
        budget, kw = int(rng.integers(12, 60)), make_kw()
        try:
            _, info = jax.jit(_method(name, dyn, reward, budget, **kw))(jax.random.key(budget))
        except ValueError as err:  # a population the budget cannot pay for: refused
            assert "budget" in str(err)
            continue
        assert 0 < int(info.nfe) <= budget, (name, budget, kw, int(info.nfe))
    with pytest.raises(ValueError, match="budget: expected at least 6 NFE"):
        fsearch.svdd(jax.random.key(0), dyn, reward, 5, event_shape=(1,), num_chains=2)
    with pytest.raises(ValueError, match="budget: expected at least"):
        fsearch.rbf(jax.random.key(0), dyn, reward, 11, event_shape=(1,))
    with pytest.raises(TypeError, match="dynamics"):
        fsearch.smc(jax.random.key(0), MIX.velocity, reward, 100, event_shape=(1,))
    with pytest.raises(ValueError, match="kind"):
        fsearch.make_dynamics(MIX.velocity, "ve", 5)


def test_rbf_lockstep_rows_are_counted_and_capped_at_the_budget():
    """Regression: with several chains or blocks every chain's block is evaluated until the
    slowest chain is done; those rows were not counted (2 chains, budget 150: 214 network
    evaluations made, 143 reported). Now every row is counted and the rows are capped."""
    vel, calls = _counting(MIX.velocity)
    dyn = fsearch.make_dynamics(vel, "linear", 8)
    reward = lambda y: jnp.sin(5 * y[:, 0])  # noqa: E731
    for chains, block in ((2, 1), (2, 2), (3, 4)):
        calls.clear()
        _, info = jax.jit(
            lambda k, c=chains, b=block: fsearch.rbf(
                k, dyn, reward, 150, event_shape=(1,), num_chains=c, block_size=b
            )
        )(jax.random.key(0))
        jax.effects_barrier()
        assert int(info.nfe) == sum(calls) <= 150, (chains, block, sum(calls), int(info.nfe))
        rows = np.asarray(info.trace["rows"])
        assert int(info.nfe) == chains * 4 + rows[:-1].sum()


def test_rbf_spends_its_rollover():
    """A chain that accepts early draws more than its quota at a later step (the rollover
    is spent, not only computed), and never more than quota + rollover."""
    dyn = fsearch.make_dynamics(MIX.velocity, "linear", 8)
    reward = lambda y: jnp.sin(5 * y[:, 0])  # noqa: E731
    quota = 2
    _, info = jax.jit(
        lambda k: fsearch.rbf(
            k, dyn, reward, 400, event_shape=(1,), num_chains=2, num_initial=2, quota=quota
        )
    )(jax.random.key(3))
    drawn = np.asarray(info.trace["drawn"])
    roll = np.asarray(info.trace["rollover"])
    assert np.any(drawn > quota), drawn
    assert np.all(drawn[1:] <= quota + roll[:-1]) and np.all(drawn[0] <= quota)


def test_expand_keeps_children_with_their_parent():
    """Child row i descends from parent i // m (repeat, not tile): per-parent weights travel
    with their children, and SVDD's per-chain groups hold one chain's children."""
    w = jnp.array([0.1, 0.6, 0.3])  # non-uniform parent weights
    x = jnp.arange(3.0)[:, None]
    ew, ex = fsearch.expand((w, x), 2)
    np.testing.assert_array_equal(ew, w[jnp.array([0, 0, 1, 1, 2, 2])])
    np.testing.assert_array_equal(ex[:, 0], [0, 0, 1, 1, 2, 2])
    # On the ODE every child of a chain is the chain itself: SVDD's chains must stay the
    # 3 distinct ODE solutions (children grouped across chains would duplicate the best).
    dyn = fsearch.make_dynamics(MIX.velocity, "ode", 4)
    _, info = fsearch.svdd(
        jax.random.key(2), dyn, lambda y: y[:, 0], 3 * 4 * 2, event_shape=(1,), num_chains=3
    )
    pop = np.asarray(info.population[0]).reshape(-1)
    assert len(np.unique(pop)) == 3, pop
