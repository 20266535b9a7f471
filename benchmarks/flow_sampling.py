"""Speed of ``inferax.sampling.flow.sample`` against its peers and its limit.

Run from the repository root (peers come with ``pip install -e .[bench]``)::

    python -m benchmarks.flow_sampling            # default grid, ~15 min on 2 cores
    python -m benchmarks.flow_sampling --quick    # tiny grid, seconds
    python -m benchmarks.flow_sampling --particles=1024 --steps=16 --out=/tmp/flow.md

One process run, one velocity network (``inferax.models.mlp.VelocityMLP``,
hidden 256, depth 3, 64-wide time embedding, on 2-D points, same parameters
everywhere), one grid ``linspace(0, 1, steps + 1)``. For each particle count N,
step count and solver (Euler; explicit midpoint RK2) it checks that every side
lands on the same x1, then times them at steady state: median of repeats,
each ended by ``jax.block_until_ready``, the sides timed in turns so that a
change of machine load hits all of them. Default grid: N in {256, 4096} x
{32, 64} steps x both solvers, plus N = 16384 at 32 steps (a 64-step midpoint
solve of 65536 points takes minutes per side on 2 cores).

* **ours**: ``jax.jit`` of ``flow.sample`` (one ``lax.scan``);
* **limit**: the bare network evaluations the solve needs, the same number of
  ``apply`` calls at the same times in one jitted ``lax.scan``; each call's
  output feeds the next carry as ``x + 0 * v`` so that XLA can neither hoist
  nor drop a call (one elementwise multiply-add on ``[N, 2]`` per call, as
  little as a solver update). Target ours/limit <= 1.05;
* **diffrax**: ``diffeqsolve`` with ``Euler`` / ``Midpoint`` (the same explicit
  midpoint tableau), ``StepTo(ts)``, ``SaveAt(t1=True)``, default adjoint and
  ``throw``, ``max_steps`` = steps; checked ``allclose`` to ours before timing.
  Target ours/diffrax <= 1.0, and compile (trace + lower + XLA compile of a
  fresh ``jax.jit``) ours/diffrax <= 0.5;
* **naive JAX loop**: a Python ``for`` loop over a jitted single step (no
  target, reported as naive/ours);
* **PyTorch**: the same MLP in ``torch.nn`` with the flax weights copied, the
  same solver as a Python loop under ``torch.inference_mode``. Threads: the
  faster of 1 and all usable cores on a short calibration solve (on a loaded
  machine OpenMP with all cores can be ~10x slower). Target PyTorch/ours >= 3.

A second table gives the ratios of each side's fastest repeat, which other
processes on the machine disturb less than the medians.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from inferax.models.mlp import VelocityMLP
from inferax.sampling import flow

_PARTICLES = flags.DEFINE_list("particles", ["256", "4096"], "Particle counts N (full grid).")
_STEPS = flags.DEFINE_list("steps", ["32", "64"], "Step counts (full grid).")
_SOLVERS = flags.DEFINE_list("solvers", ["euler", "midpoint"], "Solvers: euler, midpoint.")
_BIG = flags.DEFINE_integer(
    "big_particles", 16384, "Extra large-N rows, at the smallest step count only (0: none)."
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "PyTorch threads; 0: the faster of 1 and all cores; < 0: skip PyTorch."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the network parameters.")

SOLVERS = ("euler", "midpoint")
TARGETS = {"limit": 1.05, "diffrax": 1.0, "compile": 0.5, "torch": 3.0}
# Agreement with ours (max |x1 - x1_ours|), float32 over <= 128 network calls.
ATOL = {"diffrax": 1e-4, "naive": 1e-4, "torch": 2e-3}


@dataclasses.dataclass
class Row:
    """One (N, steps, solver) measurement; seconds, keyed by side.

    Sides: "ours", "limit", "naive", and "diffrax" / "torch" when installed.
    ``compile`` has "ours" and "diffrax"; ``err`` is max |x1_side - x1_ours|.
    """

    n: int
    steps: int
    solver: str
    nfe: int
    median: dict[str, float]
    best: dict[str, float]
    compile: dict[str, float]
    err: dict[str, float]
    repeats: int = 0


# --------------------------------------------------------------------------- JAX sides


def _step(apply, solver, params, x, t0, t1):
    """One solver step, written exactly as ``flow.sample`` does it."""
    dt = t1 - t0
    v0 = apply(params, x, t0)
    if solver == "euler":
        return x + dt * v0
    x_mid = x + 0.5 * dt * v0
    return x + dt * apply(params, x_mid, t0 + 0.5 * dt)


def make_ours(apply, ts, solver):
    """inferax: ``flow.sample`` of ``apply(params, x, t)``; ``(params, x0) -> x1``."""

    def ours(params, x0):
        return flow.sample(lambda x, t: apply(params, x, t), x0, ts, solver=solver)[0]

    return ours


def call_times(ts: np.ndarray, solver: str) -> np.ndarray:
    """The times at which the solver calls the network, in call order."""
    if solver == "euler":
        return ts[:-1]
    mids = ts[:-1] + 0.5 * np.diff(ts)
    return np.stack([ts[:-1], mids], axis=1).reshape(-1)


def make_limit(apply, ts, solver):
    """The network calls alone: one ``lax.scan`` over ``call_times``; returns x0 unchanged."""
    times = jnp.asarray(call_times(np.asarray(ts), solver))

    def limit(params, x0):
        def body(x, t):
            return x + 0.0 * apply(params, x, t), None

        return jax.lax.scan(body, x0, times)[0]

    return limit


def make_diffrax(apply, ts, solver):
    """diffrax ``diffeqsolve`` on the same fixed grid; ``(params, x0) -> x1``."""
    import diffrax

    term = diffrax.ODETerm(lambda t, y, args: apply(args, y, t))
    dsolver = {"euler": diffrax.Euler, "midpoint": diffrax.Midpoint}[solver]()
    ts_j = jnp.asarray(ts)

    def solve(params, x0):
        sol = diffrax.diffeqsolve(
            term,
            dsolver,
            t0=ts_j[0],
            t1=ts_j[-1],
            dt0=None,
            y0=x0,
            args=params,
            stepsize_controller=diffrax.StepTo(ts=ts_j),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=len(ts) - 1,
        )
        return sol.ys[0]

    return solve


def make_naive(apply, ts, solver):
    """A Python loop over a jitted single step; ``(params, x0) -> x1``."""
    step = jax.jit(functools.partial(_step, apply, solver))
    pairs = [(jnp.float32(a), jnp.float32(b)) for a, b in zip(ts[:-1], ts[1:], strict=True)]

    def naive(params, x0):
        x = x0
        for t0, t1 in pairs:
            x = step(params, x, t0, t1)
        return x

    return naive


# --------------------------------------------------------------------------- PyTorch side


def make_torch(params, ts, solver, threads):
    """The same network and solver in PyTorch, or None if torch is missing."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    p = jax.tree.map(np.asarray, params["params"])

    def linear(name):
        layer = torch.nn.Linear(*p[name]["kernel"].shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(p[name]["kernel"].T.copy()))
            layer.bias.copy_(torch.from_numpy(p[name]["bias"].copy()))
        return layer

    depth = sum(1 for k in p if k.endswith("_a"))
    time_in, time_out, x_in, out = (linear(k) for k in ("time_in", "time_out", "x_in", "out"))
    blocks = [(linear(f"block{i}_a"), linear(f"block{i}_b")) for i in range(depth)]
    half = p["time_in"]["kernel"].shape[0] // 2
    freqs = torch.exp(math.log(1000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    silu = torch.nn.functional.silu

    def velocity(x, t):  # mirrors VelocityMLP.__call__, time broadcast to [N] first
        angles = torch.full((x.shape[0], 1), t, dtype=torch.float32) * freqs[None, :]
        temb = time_out(silu(time_in(torch.cat([torch.sin(angles), torch.cos(angles)], -1))))
        h = x_in(x) + temb
        for a, b in blocks:
            h = h + b(silu(a(silu(h))))
        return out(silu(h))

    pairs = [(float(a), float(b)) for a, b in zip(ts[:-1], ts[1:], strict=True)]

    def run(x0: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.tensor(x0)
            for t0, t1 in pairs:
                dt = t1 - t0
                if solver == "euler":
                    x = x + dt * velocity(x, t0)
                else:
                    x_mid = x + 0.5 * dt * velocity(x, t0)
                    x = x + dt * velocity(x_mid, t0 + 0.5 * dt)
            return x.numpy()

    return run


# --------------------------------------------------------------------------- driver


def measure(model, params, n, steps, solver, *, torch_threads, repeats, budget_s) -> Row:
    """Checks that every side agrees with ours on one (N, steps, solver), then times them.

    The check runs every side once and so warms them up. A further warm-up round
    is made only when that round was cheap (< budget_s / 10); a row whose round
    takes longer than ``budget_s`` gets a single timed round.
    """
    apply = model.apply
    ts = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    x0 = jax.random.normal(jax.random.key(n + steps), (n, model.features), jnp.float32)
    x0_np = np.asarray(x0)

    def aot(make):  # a fresh jit: the executable that is timed, and its compile time
        return common.compile_timed(lambda: make(apply, ts, solver), params, x0)

    compile_s = {}
    ours, compile_s["ours"] = aot(make_ours)
    calls = {"ours": lambda: ours(params, x0)}
    limit = aot(make_limit)[0]
    calls["limit"] = lambda: limit(params, x0)
    naive = make_naive(apply, ts, solver)
    calls["naive"] = lambda: naive(params, x0)
    if common.installed("diffrax"):
        dfx, compile_s["diffrax"] = aot(make_diffrax)
        calls["diffrax"] = lambda: dfx(params, x0)
    torch_fn = make_torch(params, ts, solver, torch_threads) if torch_threads > 0 else None
    if torch_fn is not None:
        calls["torch"] = lambda: torch_fn(x0_np)

    start = time.perf_counter()
    x1 = np.asarray(calls["ours"]())
    if not np.all(np.isfinite(x1)):
        raise RuntimeError(f"ours produced non-finite x1 at N={n}, steps={steps}, {solver}")
    err = {}
    for peer in ("diffrax", "naive", "torch"):
        if peer in calls:
            err[peer] = float(np.max(np.abs(np.asarray(calls[peer]()) - x1)))
            if not err[peer] <= ATOL[peer]:
                raise RuntimeError(
                    f"{peer} disagrees with flow.sample at N={n}, steps={steps}, {solver}: "
                    f"max |dx1| = {err[peer]:.3g} > {ATOL[peer]}"
                )
    if not np.array_equal(np.asarray(calls["limit"]()), x0_np):  # x + 0 * v keeps x
        raise RuntimeError(f"the limit loop changed x at N={n}, steps={steps}, {solver}")
    round_s = time.perf_counter() - start
    t = common.time_interleaved(
        calls,
        repeats=repeats,
        min_repeats=1 if round_s > budget_s else min(2, repeats),
        budget_s=budget_s,
        warmup=1 if round_s < 0.1 * budget_s else 0,
    )
    return Row(
        n=n,
        steps=steps,
        solver=solver,
        nfe=steps * flow.SOLVER_EVALS[solver],
        median={k: v.median for k, v in t.items()},
        best={k: v.best for k, v in t.items()},
        compile=compile_s,
        err=err,
        repeats=t["ours"].repeats,
    )


def pick_torch_threads(params, n: int, cores: int) -> tuple[int, str]:
    """The faster of 1 and ``cores`` torch threads on a short solve (best of 3)."""
    if not common.installed("torch"):
        return 0, "skipped (torch not installed)"
    ts = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    x0 = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    best = {}
    for k in sorted({1, cores}):
        fn = make_torch(params, ts, "euler", k)
        best[k] = common.time_steady(fn, x0, repeats=3, min_repeats=3).best
    k = min(best, key=best.get)
    tried = ", ".join(f"{j} thread(s): {s * 1e3:.1f} ms" for j, s in best.items())
    return k, f"{k} (faster at calibration, 4 Euler steps at N={n}; {tried})"


HEADERS = tuple(
    "N|steps|solver|NFE|ours (s)|limit (s)|ours/limit (<=1.05)|diffrax (s)|ours/diffrax (<=1.0)"
    "|naive loop (s)|naive/ours|PyTorch (s)|PyTorch/ours (>=3)|compile ours (s)"
    "|compile diffrax (s)|compile ours/diffrax (<=0.5)".split("|")
)
BEST_HEADERS = tuple("N|steps|solver|ours/limit|ours/diffrax|naive/ours|PyTorch/ours".split("|"))


def _ratio(t: dict[str, float], a: str, b: str, target: float | None = None, up=False) -> str:
    """``t[a] / t[b]`` with a met/missed mark when ``target`` is given."""
    if a not in t or b not in t:
        return "skipped"
    r = t[a] / t[b]
    return f"{r:.2f}" if target is None else common.verdict(r, target, higher_is_better=up)


def _sec(t: dict[str, float], k: str) -> str:
    return f"{t[k]:.4g}" if k in t else "skipped"


def table(rows: list[Row]) -> str:
    """The speed table (medians), one line per row, targets marked met/missed."""
    cells = []
    for r in rows:
        m, c = r.median, r.compile
        cells.append(
            [r.n, r.steps, r.solver, r.nfe, _sec(m, "ours"), _sec(m, "limit")]
            + [_ratio(m, "ours", "limit", TARGETS["limit"]), _sec(m, "diffrax")]
            + [_ratio(m, "ours", "diffrax", TARGETS["diffrax"]), _sec(m, "naive")]
            + [_ratio(m, "naive", "ours"), _sec(m, "torch")]
            + [_ratio(m, "torch", "ours", TARGETS["torch"], up=True), _sec(c, "ours")]
            + [_sec(c, "diffrax"), _ratio(c, "ours", "diffrax", TARGETS["compile"])]
        )
    return common.markdown_table(HEADERS, cells)


def best_table(rows: list[Row]) -> str:
    """Ratios of the fastest repeat of each side (less sensitive to other processes)."""
    cells = [
        [r.n, r.steps, r.solver, _ratio(r.best, "ours", "limit")]
        + [_ratio(r.best, "ours", "diffrax"), _ratio(r.best, "naive", "ours")]
        + [_ratio(r.best, "torch", "ours")]
        for r in rows
    ]
    return common.markdown_table(BEST_HEADERS, cells)


def agreement_table(rows: list[Row]) -> str:
    """max |x1_peer - x1_ours| per row (checked against ``ATOL`` before timing)."""
    peers = ("diffrax", "naive", "torch")
    cells = [
        [r.n, r.steps, r.solver, r.repeats]
        + [f"{r.err[p]:.2g}" if p in r.err else "skipped" for p in peers]
        for r in rows
    ]
    return common.markdown_table(["N", "steps", "solver", "timed repeats", *peers], cells)


def grid(particles, steps, solvers, big_particles) -> list[tuple[int, int, str]]:
    """(N, steps, solver) rows: the full product, then large-N rows at min(steps)."""
    for s in solvers:
        if s not in SOLVERS:
            raise ValueError(f"solvers: expected names in {SOLVERS}, got {s!r}")
    rows = [(n, k, s) for n in particles for k in steps for s in solvers]
    if big_particles:
        rows += [(big_particles, min(steps), s) for s in solvers]
    return rows


def run(
    *,
    quick: bool = False,
    particles=(256, 4096),
    steps=(32, 64),
    solvers=SOLVERS,
    big_particles: int = 16384,
    repeats: int = 5,
    budget_s: float = 15.0,
    torch_threads: int = 0,
    seed: int = 0,
    out: str | None = None,
) -> tuple[str, list[Row]]:
    """Runs the benchmark; returns the markdown report and the measured rows.

    ``quick=True`` replaces the grid by N = 64, 4 steps, both solvers, 2 repeats.
    ``torch_threads``: 0 picks the faster of 1 and all usable cores, < 0 skips PyTorch.
    """
    if quick:
        particles, steps, big_particles, repeats = (64,), (4,), 0, 2
    particles, steps = [int(n) for n in particles], [int(k) for k in steps]
    rows_spec = grid(particles, steps, solvers, big_particles)
    load_start = common.machine_info()["load average (1, 5, 15 min)"]
    model = VelocityMLP(features=2, hidden=256, depth=3, time_embed_dim=64, num_classes=None)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 2)), 0.0)
    if torch_threads == 0:
        torch_threads, torch_note = pick_torch_threads(
            params, max(particles), common.usable_cores()
        )
    elif torch_threads < 0:
        torch_note = "skipped (--torch_threads < 0)"
    else:
        torch_note = f"{torch_threads} (set by --torch_threads)"
    timing = {"repeats": repeats, "budget_s": budget_s}
    # Pay one-time tracing/compiler start-up costs before any compile is timed.
    measure(model, params, 8, 2, "midpoint", torch_threads=torch_threads, repeats=1, budget_s=0)
    rows = []
    for n, k, s in rows_spec:
        rows.append(measure(model, params, n, k, s, torch_threads=torch_threads, **timing))
        print(f"done N={n} steps={k} {s}", file=sys.stderr, flush=True)
    info = common.machine_info(peers=("flax", "diffrax", "equinox", "torch"))
    load_end = info.pop("load average (1, 5, 15 min)")
    info["load average (1, 5, 15 min) at start"] = load_start
    info["load average (1, 5, 15 min) at end"] = load_end
    info["PyTorch threads"] = torch_note
    report = "\n\n".join(
        [
            "## Flow sampling: inferax `flow.sample` vs the limit and peers",
            common.machine_lines(info),
            "Steady-state seconds per full solve of N 2-D points (median of repeats, all sides "
            "timed in turns). `limit`: the same network calls in a bare `lax.scan`. "
            "`naive loop`: Python loop over a jitted step. Compile: trace + lower + XLA "
            "compile of a fresh `jax.jit`. Targets in the headers; met/missed as measured.",
            table(rows),
            "Ratios of the fastest repeat of each side (less sensitive to other processes):",
            best_table(rows),
            "Timed repeats per side, and agreement with ours, max |x1_peer - x1_ours| "
            "(checked before timing, which also warms every side up):",
            agreement_table(rows),
        ]
    )
    common.emit(report, out)
    return report, rows


def main(argv):
    del argv
    run(
        quick=common.QUICK.value,
        particles=_PARTICLES.value,
        steps=_STEPS.value,
        solvers=_SOLVERS.value,
        big_particles=_BIG.value,
        repeats=common.flag_or(common.REPEATS, 5),
        budget_s=common.flag_or(common.BUDGET, 15.0),
        torch_threads=_TORCH_THREADS.value,
        seed=_SEED.value,
        out=common.OUT.value,
    )


if __name__ == "__main__":
    app.run(main)
