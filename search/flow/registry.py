"""The flow searches as ``core.FLOW_SEARCHES`` entries (registered on import of the package).

Every entry's ``fn`` is called as ``fn(key, dynamics, reward_fn, budget, *,
event_shape, **options)`` with a ``Dynamics`` (``make_dynamics``; the noise
and path searches solve its ODE) and a ``core.Budget`` with ``nfe`` (or an int).
Every entry's ``plan`` is called as ``plan(budget, *, num_steps, nfe_per_call=1,
reward_cost=1, **options)``: ``num_steps`` and ``nfe_per_call`` describe the
dynamics, ``reward_cost`` the verifier (``base.reward_cost``), and the options
are the method's own keywords (those that do not change the plan are accepted
and ignored; unknown ones are a TypeError naming ``options``). It returns the
population the budget buys and the most ``nfe`` and ``reward_evals`` the run
can spend, and raises ``ValueError`` naming ``budget`` when the budget is too
small.

A flow method whose target is ``"exact"`` samples p(x) exp(alpha r(x)) / Z as
its population grows (up to the SDE's discretisation) and takes the inverse
temperature as the keyword ``alpha``; its final population is
``info.population``.

Adding a method: one file with ``fn`` and its plan, plus one ``_entry`` call
below; ``tests/search/test_flow_registry.py`` then checks its budget, its
determinism across devices and processes and its errors with no new test code.
"""

from __future__ import annotations

import inspect

from inferax.search import core
from inferax.search.flow import beam, noise, particles, paths, rollover

__all__ = ["ENTRIES"]


def _planner(plan_fn, method):
    """``plan_fn`` with the registry's call shape: options not given take the method's
    defaults (e.g. CoDe's ``block_length=2``); the method's other keywords are ignored."""
    params = inspect.signature(method).parameters
    taken = set(params) - {"key", "reward_fn", "budget"}
    own = set(inspect.signature(plan_fn).parameters) - {"num_steps", "nfe_per_call", "reward_cost"}
    defaults = {k: p.default for k, p in params.items() if k in own and p.default is not p.empty}

    def plan(budget, *, num_steps, nfe_per_call=1, reward_cost=1, **options):
        unknown = sorted(set(options) - taken)
        if unknown:
            raise TypeError(f"options: {method.__name__} takes no keyword(s) {unknown}")
        kw = defaults | {k: v for k, v in options.items() if k in own}
        return plan_fn(
            budget, num_steps=num_steps, nfe_per_call=nfe_per_call, reward_cost=reward_cost, **kw
        )

    plan.__doc__ = plan_fn.__doc__
    plan.__name__ = plan_fn.__name__
    return plan


def _entry(name, fn, plan_fn, target, options, reference, summary, fixed=None):
    return core.register(
        core.SearchEntry(
            name=name,
            family="flow",
            fn=fn,
            units=("nfe",),
            target=target,
            plan=_planner(plan_fn, fn),
            options=options,
            fixed=fixed or {},
            reference=reference,
            summary=summary,
        )
    )


ENTRIES = [
    _entry(
        "random_search",
        noise.random_search,
        noise.random_search_plan,
        "argmax",
        {"solver": ("euler", "midpoint")},
        "Ma et al. 2025",
        "best of N initial noises through the ODE",
    ),
    _entry(
        "zero_order_search",
        noise.zero_order_search,
        noise.zero_order_plan,
        "argmax",
        {"num_neighbors": (2, 3), "pivot_policy": ("fresh", "keep")},
        "Ma et al. 2025",
        "local search on the shell around a pivot noise",
    ),
    _entry(
        "search_over_paths",
        paths.search_over_paths,
        paths.search_over_paths_plan,
        "argmax",
        {"num_paths": (1, 2), "num_branches": (2, 3)},
        "Ma et al. 2025",
        "re-noise N states M times back along the path, solve forward, keep the top N",
        fixed={"start_step": 1, "backward_steps": 1, "forward_steps": 2},
    ),
    _entry(
        "best_of_n",
        particles.best_of_n,
        particles.best_of_n_plan,
        "argmax",
        {},
        "Kim et al. 2025 (baseline)",
        "N independent SDE samples, the best final reward",
    ),
    _entry(
        "svdd",
        particles.svdd,
        particles.branching_plan,
        "argmax",
        {"num_chains": (1, 3), "num_children": (None, 2)},
        "Li et al. 2024; Kim et al. 2025",
        "per step, K children per chain, keep each chain's best lookahead reward",
    ),
    _entry(
        "code",
        particles.code,
        particles.branching_plan,
        "argmax",
        {"num_chains": (1, 2), "block_length": (2, 3)},
        "Singh et al. 2024; Kim et al. 2025",
        "SVDD selecting every block_length steps",
    ),
    _entry(
        "smc",
        particles.smc,
        particles.smc_plan,
        "exact",
        {"num_particles": (None, 4)},
        "Kim et al. 2025",
        "SMC with the reward-difference potential; targets p(x) exp(alpha r(x)) / Z",
    ),
    _entry(
        "rbf",
        rollover.rbf,
        rollover.rbf_plan,
        "argmax",
        {"num_chains": (1, 3), "block_size": (1, 4)},
        "Kim, Yoon, Hwang, Sung 2025",
        "Rollover Budget Forcing: first improving proposal, unused quota rolls over",
        fixed={"num_initial": 2},
    ),
    _entry(
        "beam_search",
        beam.beam_search,
        beam.beam_search_plan,
        "argmax",
        {"beam_width": (1, 3), "num_children": (None, 2)},
        "Snell et al. 2024 (beam search) on Kim et al. 2025's SDE paths",
        "keep the top-k lookahead rewards, expand each into m SDE children",
    ),
]
