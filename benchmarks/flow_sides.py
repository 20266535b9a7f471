"""The sides of the flow-sampling benchmark: ours, the limit, diffrax, a naive loop, PyTorch.

Each ``make_*`` builds one side of ``benchmarks.flow_sampling`` for a
``VelocityMLP`` ``apply(params, x, t)``, a fixed grid ``ts`` and a solver
(``"euler"`` or the explicit ``"midpoint"`` RK2), and returns a function
``(params, x0) -> x1`` (PyTorch: ``x0 ndarray -> x1 ndarray``). Every peer
makes the same network calls at the same times as ``flow.sample``; the
benchmark checks that they land on the same x1 before it times them.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from inferax.sampling import flow


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


def solver_step(apply, solver, params, x, t0, t1):
    """One solver step, written exactly as ``flow.sample`` does it."""
    dt = t1 - t0
    v0 = apply(params, x, t0)
    if solver == "euler":
        return x + dt * v0
    x_mid = x + 0.5 * dt * v0
    return x + dt * apply(params, x_mid, t0 + 0.5 * dt)


def make_diffrax(apply, ts, solver):
    """diffrax ``diffeqsolve`` on the same fixed grid; ``(params, x0) -> x1``.

    ``Euler`` / ``Midpoint`` (the same explicit midpoint tableau), ``StepTo(ts)``,
    ``SaveAt(t1=True)``, default adjoint and ``throw``, ``max_steps`` = steps.
    """
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
    step = jax.jit(functools.partial(solver_step, apply, solver))
    pairs = [(jnp.float32(a), jnp.float32(b)) for a, b in zip(ts[:-1], ts[1:], strict=True)]

    def naive(params, x0):
        x = x0
        for t0, t1 in pairs:
            x = step(params, x, t0, t1)
        return x

    return naive


def make_torch(params, ts, solver, threads):
    """The same network and solver in eager PyTorch, or None if torch is missing.

    The flax weights of ``VelocityMLP`` are copied into ``torch.nn.Linear``
    layers; the solver is a Python loop under ``torch.inference_mode`` with
    ``threads`` intra-op threads.
    """
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


def pick_torch_threads(params, n: int, cores: int) -> tuple[int, str]:
    """The faster of 1 and ``cores`` torch threads on a short solve (best of 3).

    On a loaded machine OpenMP with all cores can be ~10x slower than one thread.
    Returns the thread count and a sentence saying how it was chosen.
    """
    if not common.installed("torch"):
        return 0, "skipped (torch not installed)"
    ts = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    x0 = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    best = {}
    for k in sorted({1, cores}):
        fn = make_torch(params, ts, "euler", k)
        best[k] = common.time_steady(fn, x0, repeats=3, min_repeats=3).best
    k = min(best, key=best.get)
    tried = ", ".join(f"{j} thread(s): {s * 1e3:.2f} ms" for j, s in best.items())
    return k, f"{k} (faster at calibration, 4 Euler steps at N={n}; {tried})"
