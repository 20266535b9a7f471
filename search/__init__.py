"""inferax.search: budgeted search with verifiers and rewards.

Two families over one contract (``inferax.search.core``):

- ``inferax.search.flow``: search over the noise and paths of flow models, and
  reward-guided particle methods on flow SDEs (best-of-N, SVDD, CoDe, SMC,
  Rollover Budget Forcing), budgeted in NFE;
- ``inferax.search.lm``: language-model search through the decoding protocol
  (best-of-N and voting, beam search, DVTS, particle filtering and Gibbs, SMC
  steering, MCTS, REBASE), budgeted in sequences, tokens, PRM calls and
  simulations.

Every method is ``method(key, model, verifier, budget, *, options) -> (result,
info)`` and an entry of ``FLOW_SEARCHES`` or ``LM_SEARCHES``.
"""

from inferax.search import core, flow, lm
from inferax.search.core import (
    FLOW_SEARCHES,
    LM_SEARCHES,
    UNITS,
    Budget,
    SearchEntry,
    as_budget,
    register,
)

__all__ = [
    "FLOW_SEARCHES",
    "LM_SEARCHES",
    "UNITS",
    "Budget",
    "SearchEntry",
    "as_budget",
    "core",
    "flow",
    "lm",
    "register",
]
