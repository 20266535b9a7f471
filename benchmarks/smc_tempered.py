"""The tempered-SMC case of ``benchmarks.smc``: the problem, its exact answer, both sides.

Annealing ``prior(x) L(x)^lambda`` from a Gaussian prior to a Gaussian-mixture
posterior along a fixed schedule, with random-walk Metropolis moves; ours is
``smc.build``, the peer ``blackjax.tempered_smc`` with the same move.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import smc


class TemperedProblem:
    """prior N(0, s0^2 I_d) times a likelihood L(x) = sum_k pi_k N(x; mu_k, s^2 I_d).

    The posterior p(x) L(x) / Z is a Gaussian mixture with, per component,
    precision 1/s0^2 + 1/s^2, mean (mu_k / s^2) / precision and weight
    proportional to pi_k N(mu_k; 0, (s0^2 + s^2) I), so ``Z`` and the posterior
    mean are exact (``log_z``, ``posterior_mean``).
    """

    def __init__(self, dim: int = 2, prior_scale: float = 4.0, scale: float = 0.5):
        angles = 2 * np.pi * np.arange(4) / 4
        means = np.zeros((4, dim))
        means[:, 0], means[:, 1] = 3.0 * np.cos(angles) + 1.0, 3.0 * np.sin(angles)
        self.means, self.pis = means, np.array([0.4, 0.3, 0.2, 0.1])
        self.dim, self.s0, self.s = dim, prior_scale, scale

    def logprior(self, x):
        """log N(x; 0, s0^2 I) for x of shape [..., d]."""
        return -0.5 * jnp.sum(x**2, -1) / self.s0**2 - self.dim * math.log(
            math.sqrt(2 * math.pi) * self.s0
        )

    def loglik(self, x):
        """log L(x) for x of shape [..., d]."""
        sq = jnp.sum((x[..., None, :] - jnp.asarray(self.means, x.dtype)) ** 2, -1)
        comp = -0.5 * sq / self.s**2 - self.dim * math.log(math.sqrt(2 * math.pi) * self.s)
        return jax.nn.logsumexp(comp + jnp.log(jnp.asarray(self.pis, x.dtype)), -1)

    def _posterior(self):
        v = self.s0**2 + self.s**2
        log_c = np.log(self.pis) - 0.5 * np.sum(self.means**2, 1) / v
        log_c -= 0.5 * self.dim * np.log(2 * np.pi * v)
        mean_k = self.means * self.s0**2 / v
        return log_c, mean_k

    @property
    def log_z(self) -> float:
        log_c, _ = self._posterior()
        return float(np.log(np.sum(np.exp(log_c))))

    @property
    def posterior_mean(self) -> np.ndarray:
        log_c, mean_k = self._posterior()
        r = np.exp(log_c - log_c.max())
        return (r / r.sum()) @ mean_k


def rwm(key, x, logdensity, sigma: float, num_steps: int):
    """``num_steps`` random-walk Metropolis steps of every row of ``x [N, d]``.

    Proposal ``x + sigma * z``, ``z ~ N(0, I)``; accept if ``log u < logdensity(x')
    - logdensity(x)`` (Metropolis et al. 1953). The current log-density is
    carried, so a run costs ``num_steps + 1`` evaluations.
    """

    def body(carry, k):
        x, ld = carry
        k_prop, k_acc = jax.random.split(k)
        prop = x + sigma * jax.random.normal(k_prop, x.shape, x.dtype)
        ld_prop = logdensity(prop)
        accept = jnp.log(jax.random.uniform(k_acc, ld.shape, ld.dtype)) < ld_prop - ld
        return (jnp.where(accept[:, None], prop, x), jnp.where(accept, ld_prop, ld)), None

    (x, _), _ = jax.lax.scan(body, (x, logdensity(x)), jax.random.split(key, num_steps))
    return x


def make_tempered_ours(problem: TemperedProblem, lambdas, sigma: float, mcmc_steps: int):
    """inferax ``smc.build`` tempered SMC; ``(key, x0 [N, d]) -> (particles, log_Z)``."""

    def transition(key, x, step_input):
        lam0, lam1 = step_input
        x = rwm(key, x, lambda y: problem.logprior(y) + lam0 * problem.loglik(y), sigma, mcmc_steps)
        return x, (lam1 - lam0) * problem.loglik(x)

    algo = smc.build(transition, resampling="systematic", ess_threshold=1.0)
    lam = jnp.asarray(lambdas, jnp.float32)

    def run(key, x0):
        state, _ = algo.run(key, smc.init(x0), (lam[:-1], lam[1:]))
        return state.particles, state.log_Z

    return run


def make_tempered_blackjax(problem: TemperedProblem, lambdas, sigma: float, mcmc_steps: int):
    """``blackjax.tempered_smc`` with the same RWM move; ``(key, x0) -> (particles, log_Z)``."""
    import blackjax
    from blackjax.mcmc.random_walk import normal

    kernel = functools.partial(
        blackjax.additive_step_random_walk.build_kernel(),
        random_step=normal(jnp.full((problem.dim,), sigma, jnp.float32)),
    )
    tsmc = blackjax.tempered_smc(
        problem.logprior,
        problem.loglik,
        kernel,
        blackjax.additive_step_random_walk.init,
        mcmc_parameters={},
        resampling_fn=blackjax.smc.resampling.systematic,
        num_mcmc_steps=mcmc_steps,
    )
    lam = jnp.asarray(lambdas, jnp.float32)

    def run(key, x0):
        def body(state, xs):
            i, lam1 = xs
            state, info = tsmc.step(jax.random.fold_in(key, i), state, lam1)
            return state, info.log_likelihood_increment

        state, incs = jax.lax.scan(body, tsmc.init(x0), (jnp.arange(lam.shape[0] - 1), lam[1:]))
        return state.particles, jnp.sum(incs)

    return run
