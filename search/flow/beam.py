"""Beam search over the noise of a flow SDE (the beam search of LM decoding, Snell et al.
2024, on the SDE paths of Kim et al. 2025, REFERENCES sections 2 and 7).

A beam of ``k`` particles starts from ``k`` noises. At every step each beam
particle is expanded into ``m`` children (``base.expand``), each child takes
one SDE step with fresh noise (``dynamics.advance``: 1 NFE, and the lookahead
reward of the posterior mean E[x1 | x_t] from the same evaluation), and the
next beam is chosen among the ``k m`` children by a selection hook, by default
the top ``k`` lookahead rewards. Unlike SVDD, whose chains each keep their own
best child, the beam competes globally: one good parent may fill the whole
beam. NFE = k + k m (num_steps - 1) (``particles.branching_cost``); the final
step lands on clean samples, scored without a network evaluation.

The selection hook ``select(key, rewards [k m], k) -> rows [k]`` makes the
loop reusable: ``top_k`` (default, deterministic), ``particles.select_per_parent``
(SVDD), or e.g. a sampled selection that uses the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax

from inferax.sampling import _checks
from inferax.search.flow import base, particles
from inferax.search.flow import dynamics as dyn_lib

if TYPE_CHECKING:
    from inferax.search import core

__all__ = ["beam_search", "beam_search_plan", "top_k"]


def top_k(key: jax.Array, rewards: jax.Array, num_keep: int) -> jax.Array:
    """The rows of the ``num_keep`` largest rewards (ties: the lower row; NaN was -inf).

    Args:
        key: unused (a selection hook takes one).
        rewards: ``[N]`` rewards.
        num_keep: k, rows to keep.

    Returns:
        ``[k]`` int rows, largest reward first.
    """
    del key
    return jax.lax.top_k(rewards, num_keep)[1]


def beam_search_plan(
    budget: core.Budget | int,
    *,
    num_steps: int,
    beam_width: int = 2,
    num_children: int | None = None,
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``beam_search`` buys (static): ``particles.branching_plan`` with C = beam width.

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_steps: intervals of the dynamics' grid.
        beam_width: k, particles kept per step.
        num_children: m children per particle; default the largest that fits.
        nfe_per_call: cost of a velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": k m, "children": m, "nfe", "reward_evals"}``.

    Raises:
        ValueError: naming ``budget`` when one solve per beam particle (or the
            requested children) does not fit.
    """
    return particles.branching_plan(
        budget,
        num_steps=num_steps,
        num_chains=beam_width,
        num_children=num_children,
        nfe_per_call=nfe_per_call,
        reward_cost=reward_cost,
    )


def beam_search(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    beam_width: int = 2,
    num_children: int | None = None,
    select: Callable[[jax.Array, jax.Array, int], jax.Array] = top_k,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Beam search over SDE paths: keep ``beam_width`` particles, expand each into children.

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``); with ``"ode"`` the
            children of one parent coincide, so use an SDE kind.
        reward_fn: batched reward, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least one solve
            per beam particle (``beam_search_plan``).
        event_shape: shape of one sample.
        beam_width: k, particles kept per step.
        num_children: m children per particle; default the largest that fits.
        select: ``select(key, rewards [k m], k) -> rows [k]``, the selection
            hook (default ``top_k``).
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the best final particle; ``population``
            holds the final beam and its rewards; the trace has per step
            ``best_reward`` and ``selected``.

    Raises:
        TypeError: ``select`` not callable.
        ValueError: naming ``budget`` when one solve per beam particle does not fit.

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.beam_search(key, dynamics, reward_fn, 32, event_shape=2, beam_width=2)
        >>> samples, rewards = info.population  # the final beam
        >>> x.shape, samples.shape, int(info.nfe) <= 32
        ((2,), (2, 2), True)
    """
    if not callable(select):
        raise TypeError(f"select: expected a callable (key, rewards, k) -> rows, got {select!r}")
    width = _checks.positive_int(beam_width, "beam_width")
    # beam_search_plan is branching_plan with C = beam width (and one step per selection).
    return particles.run_branching(
        key,
        dynamics,
        reward_fn,
        budget,
        event_shape=event_shape,
        num_chains=width,
        num_children=num_children,
        block_length=1,
        select=select,
        dtype=dtype,
    )
