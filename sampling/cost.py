"""Static compute costs of model callables, known before anything is traced.

Compute is counted the way the papers count it: one network evaluation of one
sample is 1 NFE. A callable that evaluates its network more than once per
sample per call (classifier-free guidance runs a conditional and an
unconditional branch: 2) says so by being a ``Costed``, made by ``with_cost``
(``guidance.cfg`` returns one). The cost is a Python int on the wrapper, so a
search can plan its budget before tracing, and it survives what a plain
function attribute does not: the wrapper is what samplers receive, whatever
``jax.jit`` does to the function inside it.

Samplers resolve the cost of a callable with ``nfe_per_call``: an explicit
``nfe_per_call=`` argument wins; else a ``Costed`` (also when found through
``__wrapped__``, e.g. ``functools.wraps``) gives its own; else a plain callable
costs 1. A plain ``lambda`` around a guided velocity hides its cost: wrap the
lambda with ``with_cost(fn, 2)`` or pass ``nfe_per_call=2``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from inferax.sampling import _checks


@dataclasses.dataclass(frozen=True)
class Costed:
    """A model callable with a static cost per call.

    Attributes:
        fn: the callable (e.g. ``velocity_fn(x, t) -> v``).
        nfe_per_call: network evaluations per sample that one call costs.
    """

    fn: Callable[..., Any]
    nfe_per_call: int

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn: expected a callable, got {type(self.fn).__name__}")
        object.__setattr__(
            self, "nfe_per_call", _checks.positive_int(self.nfe_per_call, "nfe_per_call")
        )

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def with_cost(fn: Callable[..., Any], nfe_per_call: int) -> Costed:
    """Declares that one call of ``fn`` costs ``nfe_per_call`` NFE per sample.

    Raises:
        TypeError: if ``fn`` is not callable or ``nfe_per_call`` is not an int.
        ValueError: if ``nfe_per_call`` < 1.
    """
    if isinstance(fn, Costed):
        fn = fn.fn
    return Costed(fn, nfe_per_call)


def nfe_per_call(
    fn: Callable[..., Any], override: int | None = None, name: str = "velocity_fn"
) -> int:
    """The NFE per sample of one call of ``fn`` (see the module docstring).

    Args:
        fn: a model callable.
        override: an explicit cost (a positive int) that takes precedence.
        name: the argument name for error messages.

    Raises:
        TypeError: if ``fn`` is not callable or ``override`` is not an int.
        ValueError: if ``override`` < 1.
    """
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
    if override is not None:
        return _checks.positive_int(override, "nfe_per_call")
    seen = 0
    while fn is not None and seen < 32:
        if isinstance(fn, Costed):
            return fn.nfe_per_call
        fn = getattr(fn, "__wrapped__", None)
        seen += 1
    return 1
