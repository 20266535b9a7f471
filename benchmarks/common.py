"""Shared helpers for the speed benchmarks: timing, compile time, machine, tables.

Every benchmark in this folder measures inferax and its peers in one process
run and reports ratios, so that a slow or busy machine moves all columns
together. The helpers here keep the measurement identical across benchmarks:

* ``time_interleaved`` warms callables up (compiling them), then times them
  in turns and reports each one's median wall time, every call ended by
  ``jax.block_until_ready`` so that JAX's asynchronous dispatch cannot hide
  work (``time_steady`` does the same for one callable);
* ``compile_timed`` times tracing + lowering + XLA compilation of a fresh
  ``jax.jit`` (fresh, so that no trace or executable cache is hit);
* ``machine_info`` / ``machine_lines`` describe where the numbers came from;
* ``markdown_table`` and ``verdict`` format the result.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
from absl import flags


class Timing(NamedTuple):
    """Steady-state wall time of a callable.

    Attributes:
        median: median seconds over the measured repeats.
        best: fastest repeat, seconds.
        repeats: number of measured repeats (after warm-up).
        first: seconds of the first call (the warm-up one, if any).
    """

    median: float
    best: float
    repeats: int
    first: float


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    min_repeats: int = 2,
    budget_s: float = 20.0,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Median wall times of several zero-argument callables, timed in turns.

    The callables are timed round-robin (a, b, c, a, b, c, ...), so that a
    change of machine load during the measurement hits every one of them
    alike and their ratios stay meaningful on a shared machine. The first
    ``warmup`` rounds compile and are not measured (the first call's time is
    kept in ``Timing.first``). Then up to ``repeats`` rounds are measured,
    stopping early once at least ``min_repeats`` rounds were measured and
    ``budget_s`` seconds were spent. Each call ends with
    ``jax.block_until_ready`` on its output, so asynchronous dispatch cannot
    hide work.

    Args:
        calls: ``{name: fn}``; each ``fn()`` runs one measured unit of work.
        repeats: maximum number of measured rounds.
        min_repeats: rounds measured whatever the budget.
        budget_s: seconds (all callables together) after which no round starts.
        warmup: unmeasured rounds made first (0 when everything is compiled
            and warm already).

    Returns:
        ``{name: Timing}`` in the order of ``calls``.

    Raises:
        ValueError: if ``repeats < 1``, ``min_repeats`` is not in
            [1, repeats], or ``warmup < 0``.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected an integer >= 1, got {repeats}")
    if not 1 <= min_repeats <= repeats:
        raise ValueError(f"min_repeats: expected an integer in [1, {repeats}], got {min_repeats}")
    if warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, got {warmup}")

    def clock(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - start

    first: dict[str, float] = {}
    for _ in range(warmup):
        for name, fn in calls.items():
            first.setdefault(name, clock(fn))
    times: dict[str, list[float]] = {name: [] for name in calls}
    rounds, spent = 0, 0.0
    while rounds < repeats and (rounds < min_repeats or spent < budget_s):
        for name, fn in calls.items():
            times[name].append(clock(fn))
            spent += times[name][-1]
        rounds += 1
    return {
        name: Timing(statistics.median(ts), min(ts), len(ts), first.get(name, ts[0]))
        for name, ts in times.items()
    }


def time_steady(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Timing:
    """``time_interleaved`` of the single call ``fn(*args)``; same keywords."""
    return time_interleaved({"fn": lambda: fn(*args)}, **kwargs)["fn"]


def compile_timed(make_fn: Callable[[], Callable[..., Any]], *args: Any) -> tuple[Any, float]:
    """Compiles ``jax.jit(make_fn())`` for ``args``, timing trace + lower + compile.

    ``make_fn`` must return a *new* Python function on every call: JAX caches
    traces by function identity, and a cached trace would make a second
    measurement look free.

    Args:
        make_fn: zero-argument factory of the function to jit.
        *args: example arguments (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
        ``(compiled, seconds)``: the compiled executable (call it with arrays
        shaped like ``args``) and the wall seconds of
        ``jax.jit(fn).lower(*args).compile()``.
    """
    fn = make_fn()
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (not Linux): fall through to what platform knows
        return platform.processor() or platform.machine() or "unknown"
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity-aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def installed(module: str) -> bool:
    """Whether ``module`` imports (a peer of the ``bench`` extra may be missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return "not installed"


def machine_info(peers: Sequence[str] = ()) -> dict[str, str]:
    """Describes the machine and software versions a benchmark ran with.

    Args:
        peers: extra modules whose versions to report (e.g. ``"diffrax"``).

    Returns:
        An ordered ``{name: value}`` dict of strings.
    """
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = "unknown"
    devices = jax.devices()
    info = {
        "cpu": _cpu_model(),
        "cores": f"{usable_cores()} usable of {os.cpu_count()}",
        "load average (1, 5, 15 min)": load,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": f"{jax.default_backend()} ({len(devices)} device(s): {devices[0].device_kind})",
    }
    for name in peers:
        info[name] = _version(name)
    return info


def machine_lines(info: dict[str, str]) -> str:
    """Formats ``machine_info`` as a markdown bullet list."""
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def verdict(ratio: float, target: float, *, higher_is_better: bool = False) -> str:
    """Formats ``ratio`` with whether it meets ``target`` ("met"/"missed").

    Args:
        ratio: the measured ratio.
        target: the bound to meet.
        higher_is_better: ``ratio >= target`` meets it; else ``ratio <= target``.
    """
    ok = ratio >= target if higher_is_better else ratio <= target
    return f"{ratio:.2f} ({'met' if ok else 'missed'})"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; every row must match ``headers``.

    Raises:
        ValueError: if a row's length differs from the number of headers.
    """
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(
                f"rows[{i}]: expected {len(headers)} cells (one per header), got {len(row)}"
            )
    lines = ["| " + " | ".join(str(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_tables(report: str) -> list[list[list[str]]]:
    """The markdown tables of a report (inverse of ``markdown_table``): each a list of
    cell rows, header included, separator rows dropped."""
    tables, current = [], None
    for line in report.splitlines() + [""]:
        if line.startswith("|"):
            current = [] if current is None else current
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def emit(report: str, out: str | None) -> None:
    """Prints a markdown report and, if ``out`` is set, writes it there too."""
    print(report)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(report + "\n")


# Flags shared by every benchmark binary, defined once here so that several
# benchmarks can be imported into one process (the tests do).
QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes that run in seconds (no timing value).")
OUT = flags.DEFINE_string("out", None, "Also write the markdown report to this path.")
REPEATS = flags.DEFINE_integer(
    "repeats", None, "Most timed repeats per case (default: per benchmark)."
)
BUDGET = flags.DEFINE_float("budget_s", None, "No new repeat starts after this many seconds.")


def flag_or(flag, default):
    """The flag's value, or the benchmark's own default when it was not given."""
    return default if flag.value is None else flag.value
