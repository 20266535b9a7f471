"""inferax.search.lm: language-model search through the decoding protocol.

A language model enters through ``decoding`` (init cache / prefill / decode
step over a cache pytree); a process reward model through
``prm_fn(state, prompt_index) -> [R]``. Sample-level methods (best-of-N,
majority and weighted voting, pass@k) are in ``voting``; step-level searches
(particle filtering and Gibbs, SMC steering, beam search, DVTS, MCTS) share the
step plumbing of ``steps`` and are policies of one round driver (``driver``).
Each method module registers itself (``core.register``) at its bottom; importing
this package fills ``core.LM_SEARCHES``.

Example:
    The examples of this package's functions start from this setup: a tiny
    random-weight transformer through the decoding protocol (vocabulary 8; EOS 1,
    step delimiter 2), two prompts of three tokens, a constant PRM and a config.

    >>> import jax, jax.numpy as jnp
    >>> from inferax.models import transformer
    >>> from inferax.search.lm import steps
    >>> model = transformer.Transformer(8, num_layers=1, d_model=8, num_heads=1)
    >>> lm = transformer.lm_functions(model, transformer.init_params(model, jax.random.key(0)))
    >>> prompts = jnp.array([[3, 4, 5], [0, 6, 7]])
    >>> prm_fn = lambda state, prompt_index: jnp.full(prompt_index.shape, 0.5)
    >>> config = steps.StepConfig(eos_id=1, step_id=2, max_new_tokens=4, max_steps=2)
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
