"""inferax.search.lm: language-model search through the decoding protocol.

A language model enters through ``decoding`` (init cache / prefill / decode
step over a cache pytree); a process reward model through
``prm_fn(state, prompt_index) -> [R]``. Sample-level methods (best-of-N,
majority and weighted voting, pass@k) are in ``voting``; step-level searches
(particle filtering and Gibbs, SMC steering, beam search, DVTS, MCTS) share the
step plumbing of ``steps`` and are policies of one round driver (``driver``).
Each method module registers itself (``core.register``) at its bottom; importing
this package fills ``core.LM_SEARCHES``.
"""

from inferax.search.lm import (
    beam,
    conformance,
    decoding,
    driver,
    gibbs,
    mcts,
    particle,
    rebase,
    steer,
    steps,
    voting,
)
from inferax.search.lm.beam import beam_search, dvts
from inferax.search.lm.decoding import DecodeInfo, DecodeState, budget_forcing
from inferax.search.lm.gibbs import particle_gibbs
from inferax.search.lm.mcts import mcts as mcts_search
from inferax.search.lm.particle import particle_filter
from inferax.search.lm.rebase import rebase as rebase_search
from inferax.search.lm.steer import smc_steer
from inferax.search.lm.steps import LMSearchInfo, LMSearchResult, StepConfig
from inferax.search.lm.voting import fit_coverage, majority_vote, pass_at_k, weighted_vote

__all__ = [
    "DecodeInfo",
    "DecodeState",
    "LMSearchInfo",
    "LMSearchResult",
    "StepConfig",
    "beam",
    "beam_search",
    "budget_forcing",
    "conformance",
    "decoding",
    "driver",
    "dvts",
    "fit_coverage",
    "gibbs",
    "majority_vote",
    "mcts",
    "mcts_search",
    "particle",
    "particle_filter",
    "particle_gibbs",
    "pass_at_k",
    "rebase",
    "rebase_search",
    "smc_steer",
    "steer",
    "steps",
    "voting",
    "weighted_vote",
]
