"""Search over noise and paths (Ma et al. 2025) and the shared search vocabulary.

Truths: the best-of-N reward has CDF F^N where F is the exact reward CDF of
the base sampler (an affine ODE map of Gaussian noise, computed exactly);
zero-order neighbours keep the pivot's norm and the angle arccos c; rank
ensembles follow their definition on hand-made scores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from inferax.models import gmm
from inferax.sampling import cost, flow
from inferax.search import flow as fsearch
from inferax.search.flow import base, verifiers


def test_neighbors_keep_norm_and_angle():
    pivot = jax.random.normal(jax.random.key(0), (3, 4, 2))
    for c in (0.95, 0.5, -0.3):
        nb = fsearch.neighbors(jax.random.key(1), pivot, 64, c)
        flat = nb.reshape(64, -1)
        p = pivot.reshape(-1)
        np.testing.assert_allclose(np.linalg.norm(flat, axis=1), np.linalg.norm(p), rtol=2e-6)
        cos = flat @ p / (np.linalg.norm(flat, axis=1) * np.linalg.norm(p))
        np.testing.assert_allclose(cos, c, atol=3e-6)
        # Distinct directions (not one neighbour repeated).
        assert np.min(np.linalg.norm(flat[1:] - flat[0], axis=1)) > 1e-3
    with pytest.raises(ValueError, match="c: expected a cosine"):
        fsearch.neighbors(jax.random.key(1), pivot, 4, 1.5)


def _gaussian_setup():
    mix = gmm.gaussian_mixture(jnp.ones(1), jnp.array([[1.0, -0.5]]), scale=0.7)
    w = jnp.array([1.0, 2.0])
    steps = 4
    # The Euler map of a Gaussian's (linear) velocity is affine: x1 = A x0 + b.
    ts = jnp.linspace(0.0, 1.0, steps + 1)
    probe = jnp.concatenate([jnp.zeros((1, 2)), jnp.eye(2)])
    out = flow.sample(mix.velocity, probe, ts)[0]
    b, a = np.asarray(out[0]), np.asarray(out[1:] - out[0]).T
    mean = float(np.asarray(w) @ b)
    std = float(np.sqrt(np.asarray(w) @ a @ a.T @ np.asarray(w)))
    return mix, (lambda x: x @ w), steps, mean, std


def test_random_search_reward_cdf_is_f_to_the_n():
    mix, reward, steps, mean, std = _gaussian_setup()
    n = 5

    @jax.jit
    def run(keys):
        return jax.vmap(
            lambda k: (
                fsearch.random_search(
                    k, mix.velocity, reward, n * steps, event_shape=(2,), num_steps=steps
                )[1].reward
            )
        )(keys)

    r = np.asarray(run(jax.random.split(jax.random.key(3), 3000)), np.float64)
    f = stats.norm.cdf(r, mean, std)
    assert stats.kstest(f**n, "uniform").pvalue > 0.01
    assert stats.kstest(f ** (n - 1), "uniform").pvalue < 1e-4  # negative control


def test_random_search_info_and_budget():
    mix, reward, steps, _, _ = _gaussian_setup()
    x, info = fsearch.random_search(
        jax.random.key(0), mix.velocity, reward, 23, event_shape=(2,), num_steps=steps
    )
    assert x.shape == (2,) and int(info.nfe) == 20 and int(info.reward_evals) == 5
    assert float(info.reward) == pytest.approx(float(jnp.max(info.trace["reward"])))
    with pytest.raises(ValueError, match="budget: expected at least 4 NFE"):
        fsearch.random_search(
            jax.random.key(0), mix.velocity, reward, 3, event_shape=(2,), num_steps=steps
        )
    guided = cost.with_cost(mix.velocity, 2)  # a guided pair costs 2 per call
    _, info = fsearch.random_search(
        jax.random.key(0), guided, reward, 23, event_shape=(2,), num_steps=steps
    )
    assert int(info.nfe) == 16


def test_zero_order_search_improves_monotonically_and_counts():
    mix, reward, steps, _, _ = _gaussian_setup()
    for policy in ("keep", "fresh"):
        f = jax.jit(
            lambda k, p=policy: fsearch.zero_order_search(
                k,
                mix.velocity,
                reward,
                4 * 13,
                event_shape=(2,),
                num_neighbors=3,
                num_steps=steps,
                pivot_policy=p,
            )
        )
        x, info = f(jax.random.key(5))
        best = np.asarray(info.trace["best_reward"])
        assert best.shape == (4,) and np.all(np.diff(best) >= 0)
        assert int(info.nfe) == 4 * 13 and float(info.reward) == pytest.approx(best[-1])
        assert float(reward(x[None])[0]) == pytest.approx(best[-1], rel=1e-5)
    with pytest.raises(ValueError, match="pivot_policy"):
        fsearch.zero_order_search(
            jax.random.key(0), mix.velocity, reward, 100, event_shape=(2,), pivot_policy="restart"
        )
    with pytest.raises(ValueError, match="a pivot and 3 neighbours"):
        fsearch.zero_order_search(
            jax.random.key(0),
            mix.velocity,
            reward,
            15,
            event_shape=(2,),
            num_neighbors=3,
            num_steps=steps,
        )


def test_search_over_paths_cost_and_trace():
    mix, reward, _, _, _ = _gaussian_setup()
    kw = dict(
        num_paths=2, num_branches=3, num_steps=8, start_step=2, backward_steps=1, forward_steps=3
    )
    need = fsearch.search_over_paths_cost(**kw)
    # 2 x 2 to the start; rounds (1,4), (3,6), (5,8): 3 x 6 copies x (3 steps + lookahead but last)
    assert need == 4 + 6 * 4 + 6 * 4 + 6 * 3
    f = jax.jit(
        lambda k: fsearch.search_over_paths(k, mix.velocity, reward, need, event_shape=(2,), **kw)
    )
    x, info = f(jax.random.key(0))
    assert int(info.nfe) == need and int(info.reward_evals) == 18
    assert info.trace["best_reward"].shape == (3,)
    assert float(info.reward) == pytest.approx(float(reward(x[None])[0]), rel=1e-5)
    with pytest.raises(ValueError, match="budget: expected at least"):
        fsearch.search_over_paths(
            jax.random.key(0), mix.velocity, reward, need - 1, event_shape=(2,), **kw
        )
    with pytest.raises(ValueError, match="forward_steps"):
        fsearch.search_over_paths_cost(2, 2, 8, 2, 2, 2)


def test_rank_ensemble():
    r1 = jnp.array([0.0, 5.0, 5.0, -1.0])
    r2 = jnp.array([10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(base.rank_normalize(r1), [1 / 3, 2.5 / 3, 2.5 / 3, 0.0])
    np.testing.assert_allclose(base.rank_normalize(jnp.ones(3)), [0.5, 0.5, 0.5])
    ens = base.ensemble([lambda x: r1, lambda x: r2], weights=[1.0, 3.0])
    assert cost.nfe_per_call(ens) == 2
    np.testing.assert_allclose(
        ens(jnp.zeros((4, 1))), 0.25 * base.rank_normalize(r1) + 0.75 * base.rank_normalize(r2)
    )
    with pytest.raises(ValueError, match="reward_fns"):
        base.ensemble([])
    with pytest.raises(ValueError, match="weights"):
        base.ensemble([lambda x: r1], weights=[-1.0])


def test_nan_rewards_are_counted_and_never_win():
    mix, _, steps, _, _ = _gaussian_setup()

    def reward(x):
        return jnp.where(x[:, 0] > 1.0, jnp.nan, x[:, 0])

    _, info = fsearch.random_search(
        jax.random.key(1), mix.velocity, reward, 40 * steps, event_shape=(2,), num_steps=steps
    )
    assert int(info.num_nan) > 0 and np.isfinite(float(info.reward))
    assert float(info.reward) <= 1.0


def test_classifier_reward_and_checks():
    logits = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    r = verifiers.classifier_log_prob(lambda x: logits, 2)(jnp.zeros((2, 5)))
    np.testing.assert_allclose(r, jax.nn.log_softmax(logits)[:, 2], rtol=1e-6)
    with pytest.raises(ValueError, match="target"):
        verifiers.classifier_log_prob(lambda x: logits, 3, num_classes=3)
    with pytest.raises(ValueError, match="reward_fn: expected rewards of shape"):
        base.safe_rewards(lambda x: jnp.zeros((3,)), jnp.zeros((2, 1)))
