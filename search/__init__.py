"""inferax.search: budgeted search with verifiers and rewards.

Flow models (issue 7): search over the initial noise and over paths (Ma et al.
2025), reward-guided particle methods on flow SDEs (best-of-N, SVDD, CoDe,
SMC) and Rollover Budget Forcing (Kim et al. 2025), all returning a
``SearchInfo`` (``search.base``) and never spending more than their budget.
"""

from inferax.search import (
    base,
    decoding,
    dynamics,
    lm_beam,
    lm_gibbs,
    lm_mcts,
    lm_particle,
    lm_sampling,
    lm_steer,
    noise,
    particles,
    paths,
    rollover,
    verifiers,
)
from inferax.search.base import SearchInfo, ensemble, rank_normalize
from inferax.search.decoding import DecodeInfo, DecodeState, budget_forcing
from inferax.search.dynamics import DYNAMICS, Dynamics, make_dynamics
from inferax.search.lm_beam import beam_search, dvts
from inferax.search.lm_gibbs import particle_gibbs
from inferax.search.lm_mcts import mcts
from inferax.search.lm_particle import particle_filter
from inferax.search.lm_sampling import fit_coverage, majority_vote, pass_at_k, weighted_vote
from inferax.search.lm_steer import arithmetic_format_hook, no_repeated_result, smc_steer
from inferax.search.noise import neighbors, random_search, zero_order_search
from inferax.search.particles import best_of_n, code, smc, svdd
from inferax.search.paths import search_over_paths, search_over_paths_cost
from inferax.search.rollover import rbf, rbf_cost, rbf_quota

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
    "DecodeInfo",
    "DecodeState",
    "budget_forcing",
    "decoding",
    "fit_coverage",
    "lm_mcts",
    "lm_sampling",
    "mcts",
    "majority_vote",
    "pass_at_k",
    "weighted_vote",
    "arithmetic_format_hook",
    "beam_search",
    "dvts",
    "lm_beam",
    "lm_gibbs",
    "lm_particle",
    "lm_steer",
    "no_repeated_result",
    "particle_filter",
    "particle_gibbs",
    "smc_steer",
]
