"""inferax.search.flow: reward-guided search on flow models, budgeted in NFE.

Search over the initial noise and over paths (Ma et al. 2025), reward-guided
particle methods on flow SDEs (best-of-N, SVDD, CoDe, SMC; Kim et al. 2025) and
Rollover Budget Forcing, and beam search over SDE paths, all called as
``method(key, dynamics, reward_fn, budget, *, options)`` with a
``core.Budget`` in NFE (or an int) and returning ``(samples, SearchInfo)``;
none spends more than its budget. Each is an entry of
``inferax.search.core.FLOW_SEARCHES`` (``registry``, registered on import)
with a static plan of what a budget buys.

Example:
    The examples of this package's functions start from this setup: a Gaussian
    target in 2-D (``inferax.models.gmm``, exact velocity on the linear
    interpolant), a reward peaked at (1, 1), its VP-SDE ``Dynamics`` on a 4-step
    grid (4 NFE per sample) and a key.

    >>> import jax, jax.numpy as jnp
    >>> from inferax.models import gmm
    >>> from inferax.search.flow import make_dynamics
    >>> target = gmm.gaussian_mixture(jnp.array([1.0]), jnp.array([[1.0, -1.0]]), scale=0.5)
    >>> reward_fn = lambda x: -jnp.sum((x - 1.0) ** 2, axis=-1)
    >>> dynamics = make_dynamics(target.velocity, "vp", num_steps=4)
    >>> key = jax.random.key(0)
"""

from inferax.search.flow import (
    base,
    beam,
    dynamics,
    noise,
    particles,
    paths,
    registry,
    rollover,
    verifiers,
)
from inferax.search.flow.base import SearchInfo, ensemble, expand, rank_normalize
from inferax.search.flow.beam import beam_search, beam_search_plan
from inferax.search.flow.dynamics import DYNAMICS, Dynamics, make_dynamics
from inferax.search.flow.noise import (
    neighbors,
    random_search,
    random_search_plan,
    zero_order_plan,
    zero_order_search,
)
from inferax.search.flow.particles import (
    best_of_n,
    best_of_n_plan,
    branching_plan,
    branching_search,
    code,
    smc,
    smc_plan,
    svdd,
)
from inferax.search.flow.paths import (
    search_over_paths,
    search_over_paths_cost,
    search_over_paths_plan,
)
from inferax.search.flow.rollover import rbf, rbf_cost, rbf_plan, rbf_quota

__all__ = [
    "DYNAMICS",
    "Dynamics",
    "SearchInfo",
    "base",
    "beam",
    "beam_search",
    "beam_search_plan",
    "best_of_n",
    "best_of_n_plan",
    "branching_plan",
    "branching_search",
    "code",
    "dynamics",
    "ensemble",
    "expand",
    "make_dynamics",
    "neighbors",
    "noise",
    "particles",
    "paths",
    "random_search",
    "random_search_plan",
    "rank_normalize",
    "rbf",
    "rbf_cost",
    "rbf_plan",
    "rbf_quota",
    "registry",
    "rollover",
    "search_over_paths",
    "search_over_paths_cost",
    "search_over_paths_plan",
    "smc",
    "smc_plan",
    "svdd",
    "verifiers",
    "zero_order_plan",
    "zero_order_search",
]
