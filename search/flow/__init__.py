"""inferax.search.flow: reward-guided search on flow models, budgeted in NFE.

Search over the initial noise and over paths (Ma et al. 2025), reward-guided
particle methods on flow SDEs (best-of-N, SVDD, CoDe, SMC; Kim et al. 2025) and
Rollover Budget Forcing, all called as ``method(key, dynamics, reward_fn,
budget, *, options)`` and returning ``(samples, SearchInfo)``; none spends more
than its budget.
"""

from inferax.search.flow import base, dynamics, noise, particles, paths, rollover, verifiers
from inferax.search.flow.base import SearchInfo, ensemble, rank_normalize
from inferax.search.flow.dynamics import DYNAMICS, Dynamics, make_dynamics
from inferax.search.flow.noise import neighbors, random_search, zero_order_search
from inferax.search.flow.particles import best_of_n, code, smc, svdd
from inferax.search.flow.paths import search_over_paths, search_over_paths_cost
from inferax.search.flow.rollover import rbf, rbf_cost, rbf_quota

__all__ = [
    "DYNAMICS",
    "Dynamics",
    "SearchInfo",
    "base",
    "best_of_n",
    "code",
    "dynamics",
    "ensemble",
    "make_dynamics",
    "neighbors",
    "noise",
    "particles",
    "paths",
    "random_search",
    "rank_normalize",
    "rbf",
    "rbf_cost",
    "rbf_quota",
    "rollover",
    "search_over_paths",
    "search_over_paths_cost",
    "smc",
    "svdd",
    "verifiers",
    "zero_order_search",
]
