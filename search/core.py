"""The contract every search keeps: one call shape, budgets in named units, registries.

Every search in ``inferax.search.flow`` and ``inferax.search.lm`` is called as

    result, info = method(key, model, verifier, budget, *, options)

- ``key``: a typed PRNG key (first, as everywhere in inferax);
- ``model``: one object per family: a flow ``Dynamics`` (or a bare velocity
  with its solver options) for flow searches; a language model through the
  decoding protocol (``inferax.search.lm.decoding``) for LM searches, with the
  prompts and the step config passed as options;
- ``verifier``: one protocol per family: ``reward_fn(x [N, *event]) -> [N]``
  (higher is better) for flows; ``prm_fn(state, prompt_index) -> [R]`` scores in
  [0, 1] of each row's prefix for language models;
- ``budget``: a ``Budget``, a static (hashable) record that names its units. A
  plain int is accepted and read in the method's primary unit.

A method's registry entry (``SearchEntry``) declares its units, what it targets
and the options that change how it batches work. Its ``plan(budget, **options)``
says, before anything is traced, what the budget buys: the population the
method will run and the most it can spend in every unit. Work counted at run
time never exceeds the budget and equals what ``info`` reports; the tests in
``tests/search/test_flow_registry.py`` and ``test_lm_registry.py`` check this for
every registered method, with no per-method test code. Adding a method is one
file plus one ``register`` call.

Budgets of language-model searches are per prompt (a batch of prompts is data
parallel: each prompt gets the same budget).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "FAMILIES",
    "FLOW_SEARCHES",
    "LM_SEARCHES",
    "TARGETS",
    "UNITS",
    "Budget",
    "SearchEntry",
    "as_budget",
    "get",
    "methods_table",
    "register",
    "registry",
]

UNITS = ("nfe", "reward_evals", "sequences", "tokens", "prm_calls", "simulations")
"""The budget units: flow network evaluations (one per sample; a guided pair 2),
reward/verifier evaluations, sequences (rows run), generated tokens, process
reward model calls (one per row scored per step), tree-search simulations."""

FAMILIES = ("flow", "lm")

TARGETS = ("exact", "argmax", "heuristic")
"""What a method targets: ``"exact"``: a tilted law it samples exactly as its
population grows (its tests check it against enumeration or a closed form);
``"argmax"``: the highest-reward candidate it can find; ``"heuristic"``: a
selection rule with no stated target law (e.g. tree search guided by a PRM)."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """A compute budget, in one or more named units (static and hashable).

    Every field is ``None`` (not capped) or a positive int. A method reads the
    units it is budgeted in (its registry entry's ``units``) and raises
    ``ValueError`` naming ``budget`` when a unit it needs is missing.

    Attributes:
        nfe: network evaluations of the flow model (one per sample).
        reward_evals: reward / verifier evaluations.
        sequences: sequences (population rows) per prompt.
        tokens: generated tokens per prompt.
        prm_calls: process-reward-model calls per prompt.
        simulations: tree-search simulations per prompt.

    Example:
        >>> Budget(nfe=200)
        Budget(nfe=200)
        >>> Budget(sequences=16, tokens=16 * 40)
        Budget(sequences=16, tokens=640)
    """

    nfe: int | None = None
    reward_evals: int | None = None
    sequences: int | None = None
    tokens: int | None = None
    prm_calls: int | None = None
    simulations: int | None = None

    def __post_init__(self):
        given = 0
        for unit in UNITS:
            v = getattr(self, unit)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"budget.{unit}: expected None or a positive int, got {v!r}")
            given += 1
        if not given:
            raise ValueError(f"budget: expected at least one of the units {UNITS}, got none")

    def __repr__(self) -> str:
        inner = ", ".join(f"{u}={getattr(self, u)}" for u in UNITS if getattr(self, u) is not None)
        return f"Budget({inner})"

    def units(self) -> dict[str, int]:
        """The capped units and their limits."""
        return {u: getattr(self, u) for u in UNITS if getattr(self, u) is not None}

    def require(self, unit: str, method: str) -> int:
        """The limit in ``unit``; ValueError naming ``budget`` when it is not set."""
        v = getattr(self, unit)
        if v is None:
            raise ValueError(f"budget: {method} needs a limit in {unit!r}, got {self!r}")
        return v

    def exceeded(self, spent: Mapping[str, Any]) -> list[str]:
        """The units in which ``spent`` (unit -> int) is over this budget."""
        return [u for u, lim in self.units().items() if u in spent and int(spent[u]) > lim]


def as_budget(budget: Any, unit: str, name: str = "budget") -> Budget:
    """``budget`` as a ``Budget``: a ``Budget`` passes; a positive int is read in ``unit``.

    Args:
        budget: a ``Budget``, or a positive int (a NumPy integer counts).
        unit: the unit an int is read in, one of ``UNITS``.
        name: the argument name for the messages.

    Returns:
        The ``Budget``.

    Raises:
        TypeError: naming ``name``, for neither a ``Budget`` nor an int.
        ValueError: naming ``name``, for an int below 1 (or an unknown ``unit``).

    Example:
        >>> from inferax.search import core
        >>> core.as_budget(16, "nfe")
        Budget(nfe=16)
        >>> core.as_budget(core.Budget(nfe=8, reward_evals=4), "nfe")
        Budget(nfe=8, reward_evals=4)
    """
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, bool) or not isinstance(budget, int):
        # numpy ints are ints to a user; anything else is not a budget.
        try:
            import numpy as np

            if isinstance(budget, np.integer):
                budget = int(budget)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{name}: expected a Budget or a positive int ({unit}), got {budget!r}"
            ) from None
    if budget < 1:
        raise ValueError(f"{name}: expected a positive int ({unit}), got {budget}")
    return Budget(**{unit: budget})


class SearchEntry(NamedTuple):
    """A registered search method.

    Attributes:
        name: registry key (unique within its family).
        family: ``"flow"`` or ``"lm"``.
        fn: the method, ``fn(key, model, verifier, budget, *, options)``.
        units: the budget units it is capped in (the first is its primary unit:
            a plain-int budget is read in it).
        target: one of ``TARGETS``.
        plan: ``plan(budget, **options) -> dict`` with the population the budget
            buys and the most it can spend in every unit (ints), raising
            ``ValueError`` naming ``budget`` when the budget is too small. Static:
            no tracing.
        options: option name -> the values the shared tests try, chosen among
            those that change how the method batches its work (chains, blocks,
            widths, expansion, groups). Each value is tried with the others at
            their first value.
        fixed: options the shared tests always pass (e.g. an SDE kind).
        reference: the paper (author year) the method implements.
        summary: one line for the README's methods table.
    """

    name: str
    family: str
    fn: Callable
    units: tuple[str, ...]
    target: str
    plan: Callable[..., dict]
    options: Mapping[str, tuple] = {}
    fixed: Mapping[str, Any] = {}
    reference: str = ""
    summary: str = ""


FLOW_SEARCHES: dict[str, SearchEntry] = {}
LM_SEARCHES: dict[str, SearchEntry] = {}
_REGISTRIES = {"flow": FLOW_SEARCHES, "lm": LM_SEARCHES}


def registry(family: str) -> dict[str, SearchEntry]:
    """The registry of ``family`` (``"flow"`` or ``"lm"``)."""
    if family not in _REGISTRIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    return _REGISTRIES[family]


def register(entry: SearchEntry) -> SearchEntry:
    """Adds ``entry`` to its family's registry (ValueError on a bad or duplicate entry)."""
    if not isinstance(entry, SearchEntry):
        raise TypeError(f"entry: expected a SearchEntry, got {type(entry).__name__}")
    reg = registry(entry.family)
    if entry.name in reg and reg[entry.name].fn is not entry.fn:
        raise ValueError(f"entry.name: {entry.name!r} is already registered for {entry.family}")
    if not entry.units or any(u not in UNITS for u in entry.units):
        raise ValueError(f"entry.units: expected a non-empty tuple of {UNITS}, got {entry.units!r}")
    if entry.target not in TARGETS:
        raise ValueError(f"entry.target: expected one of {TARGETS}, got {entry.target!r}")
    if not callable(entry.fn) or not callable(entry.plan):
        raise TypeError(f"entry: fn and plan must be callables ({entry.name!r})")
    reg[entry.name] = entry
    return entry


def get(family: str, name: str) -> SearchEntry:
    """The entry ``name`` of ``family`` (ValueError listing the known names)."""
    reg = registry(family)
    if name not in reg:
        raise ValueError(f"name: expected one of {sorted(reg)} ({family} searches), got {name!r}")
    return reg[name]


def methods_table() -> str:
    """The registered searches as a Markdown table (the README's methods table).

    One row per entry, flow searches first: family, name, budget units, target,
    the options the shared tests vary, the paper and a one-line summary.
    """
    head = "| family | method | budget units | target | batching options | paper | what it does |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        for name in sorted(_REGISTRIES[family]):
            e = _REGISTRIES[family][name]
            opts = ", ".join(f"`{k}`" for k in e.options) or "—"
            units = ", ".join(e.units)
            rows.append(
                f"| {family} | `{name}` | {units} | {e.target} | {opts} | "
                f"{e.reference or '—'} | {e.summary or '—'} |"
            )
    return "\n".join(rows) + "\n"
