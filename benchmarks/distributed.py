"""What crossing devices and processes costs: global resampling against islands.

Run from the repository root::

    python -m benchmarks.distributed            # 4096 particles per device, ~3 min
    python -m benchmarks.distributed --quick    # 256 per device, seconds per layout

At a fixed number of particles per device (weak scaling), one SMC step that
moves every particle (``x + 0.1 xi``), reweights it and resamples it (ESS
threshold 1: every step) runs in two ways on a ``"particles"`` mesh:

- **global**: ``distributed.sharded_run`` (one population of ``N``, resampled
  globally: the ``[N]`` log-weights are all-gathered, and the particles'
  ancestor rows are gathered from wherever they live);
- **islands**: ``distributed.island_smc_run`` with one island per device
  (resampling within the device; one all-gather of the island evidences at
  the end of the run, nothing per step).

The layouts are 1 -> 2 -> 4 CPU devices in one process and 2 -> 4 devices in
two processes (1 or 2 devices each, gloo collectives over loopback); each
layout is a fresh set of processes started by this script. Time per step is
the median over repeats of a ``num_steps`` run divided by ``num_steps``.
Bytes moved per step are computed from the compiled program: the sizes of
the all-gathers in the step's loop body (each device receives the ``d - 1``
shards it does not hold; across processes, the rows held by the other
process). On CPU "devices" share one memory and the cross-process traffic
runs over loopback TCP, so the times show the collectives' overhead, not a
network's bandwidth; the bytes carry over to real hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

LAYOUTS = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2))  # (processes, devices per process)
_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "pred": 1}


def _loop_all_gather_bytes(hlo_text: str) -> int:
    """Sum of the output bytes of the all-gathers inside the run's loop (one step)."""
    total = 0
    pattern = r"= (\w+)\[([\d,]*)\]\{[^}]*\} all-gather\("
    for line in hlo_text.splitlines():
        m = re.search(pattern, line)
        if m and "while/body" in line:
            size = 1
            for d in filter(None, m.group(2).split(",")):
                size *= int(d)
            total += size * _DTYPE_BYTES.get(m.group(1), 4)
    return total


def _child(args) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.local_devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import jax.numpy as jnp

    from benchmarks import common
    from inferax.sampling import distributed, multiprocess, smc

    if args.num_processes > 1:
        multiprocess.initialize(
            f"127.0.0.1:{args.port}", args.num_processes, args.process_id,
            initialization_timeout=120, heartbeat_timeout=30,
        )  # fmt: skip
    mesh = distributed.particle_mesh()
    d, p = jax.device_count(), jax.process_count()
    n, dim = args.per_device * d, args.dim

    def transition(key, x, _):
        x = x + 0.1 * jax.random.normal(key, x.shape, x.dtype)
        return x, -0.5 * jnp.sum(x * x, axis=1)

    alg = smc.build(transition, resampling="systematic", ess_threshold=1.0)
    pop = multiprocess.population(
        jax.random.key(0), lambda k: jax.random.normal(k, (dim,)), n, mesh
    )
    state = distributed.shard_state(alg.init(pop), mesh)
    inputs = jnp.zeros((args.num_steps,), jnp.float32)
    calls = {
        "global": lambda: distributed.sharded_run(alg, jax.random.key(1), state, inputs, mesh),
        "islands": lambda: distributed.island_smc_run(
            alg, jax.random.key(1), state, inputs, mesh, num_islands=d
        ),
    }
    times = common.time_interleaved(calls, repeats=args.repeats, min_repeats=2, budget_s=30.0)
    rep = distributed.replicate(inputs, mesh)
    hlo = {
        "global": distributed._sharded_run.lower(alg, jax.random.key(1), state, rep, mesh, True),
        "islands": distributed._island_run.lower(alg, jax.random.key(1), state, rep, mesh, d, True),
    }
    row = {"processes": p, "devices": d, "particles": n, "dim": dim}
    for name, lowered in hlo.items():
        gathered = _loop_all_gather_bytes(lowered.compile().as_text())
        row[name] = {
            "step_s": times[name].median / args.num_steps,
            # each device receives (d - 1) / d of every all-gather's output
            "bytes_moved": gathered * (d - 1),
            # rows held by the other processes: (p - 1) / p of each output, on every device
            "bytes_cross_process": gathered * d * (p - 1) // p,
        }
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(row), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(procs: int, local: int, args) -> dict:
    port = _free_port()
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--child"]
    cmd += ["--num-processes", str(procs), "--local-devices", str(local), "--port", str(port)]
    cmd += ["--per-device", str(args.per_device), "--dim", str(args.dim)]
    cmd += ["--num-steps", str(args.num_steps), "--repeats", str(args.repeats)]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    running = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(procs)
    ]
    try:
        outs = [r.communicate(timeout=args.timeout) for r in running]
    finally:
        for r in running:
            if r.poll() is None:
                r.kill()
                r.wait()
    for r, (_, err) in zip(running, outs, strict=True):
        if r.returncode:
            raise RuntimeError(f"layout {procs}x{local} failed ({r.returncode}):\n{err[-3000:]}")
    for line in outs[0][0].splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"layout {procs}x{local}: no result line:\n{outs[0][1][-3000:]}")


def _fmt_bytes(b: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def report(rows: list[dict], args) -> str:
    from benchmarks import common

    table = []
    for r in rows:
        g, i = r["global"], r["islands"]
        table.append([
            f"{r['processes']} x {r['devices'] // r['processes']}", r["devices"], r["particles"],
            f"{g['step_s'] * 1e3:.3g}", f"{i['step_s'] * 1e3:.3g}",
            f"{g['step_s'] / i['step_s']:.2f}", _fmt_bytes(g["bytes_moved"]),
            _fmt_bytes(g["bytes_cross_process"]), _fmt_bytes(i["bytes_moved"]),
        ])  # fmt: skip
    headers = [
        "processes x devices", "devices", "N", "global ms/step", "islands ms/step",
        "global / islands", "global bytes/step", "of which cross-process", "islands bytes/step",
    ]  # fmt: skip
    return (
        f"Resampling step across devices and processes: {args.per_device} particles per device, "
        f"{args.dim} float32 per particle, systematic resampling every step, "
        f"{args.num_steps}-step runs.\n\n"
        + common.markdown_table(headers, table)
        + "\n\n"
        + common.machine_lines(common.machine_info())
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds per layout)")
    parser.add_argument("--per-device", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per layout")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--local-devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.per_device, args.num_steps, args.repeats = 256, 5, 2
    if args.child:
        _child(args)
        return
    rows = []
    for procs, local in LAYOUTS:
        start = time.monotonic()
        rows.append(_launch(procs, local, args))
        print(f"layout {procs} x {local}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(report(rows, args))


if __name__ == "__main__":
    main()
