"""Speed of energy minimisation (``inferax.sampling.energy``) against the bare work it does.

A digits Energy-Based Transformer (``models.ebt.DigitsEBT``) scores 64
candidates. Three ways of running ``K`` gradient-descent steps plus the final
energy, all compiled, timed in turns:

- ``minimize``: ``energy.minimize`` (one ``lax.scan``, optax update per
  candidate, energy / gradient-norm trajectory, bookkeeping);
- bare: the same ``K`` evaluations of ``jax.value_and_grad`` of the vmapped
  energy in a ``lax.scan``, ``y - alpha * g``, then one forward: the limit
  (ratio target <= 1.10);
- Python loop: the usual hand-written loop, a jitted ``value_and_grad`` +
  ``optax.sgd`` step called ``K`` times from Python.

The three give the same candidates (checked before timing).

    python -m benchmarks.energy [--quick] [--out=benchmarks/energy.md]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app

from benchmarks import common
from inferax.models import ebt
from inferax.sampling import energy

TARGET = 1.10
ALPHA = 0.1


def problem(d_model: int, num_layers: int, n: int):
    model = ebt.DigitsEBT(d_model=d_model, num_layers=num_layers)
    params = model.init(jax.random.key(0), jnp.zeros(32), jnp.zeros(32))

    def energy_fn(c, y):
        return model.apply(params, c, y)

    ctx = jax.random.normal(jax.random.key(1), (n, 32))
    y0 = jax.random.normal(jax.random.key(2), (n, 32))
    return energy_fn, ctx, y0


def implementations(energy_fn, steps: int):
    @jax.jit
    def ours(ctx, y0):
        return energy.minimize(None, energy_fn, ctx, y0, num_steps=steps, step_size=ALPHA)[0]

    def total(ctx, y):
        return jnp.sum(jax.vmap(energy_fn)(ctx, y))

    @jax.jit
    def bare(ctx, y0):
        def body(y, _):
            _, g = jax.value_and_grad(total, argnums=1)(ctx, y)
            return y - ALPHA * g, None

        y, _ = jax.lax.scan(body, y0, None, length=steps)
        return y, jax.vmap(energy_fn)(ctx, y)

    opt = optax.sgd(ALPHA)

    @jax.jit
    def step(ctx, y, state):
        _, g = jax.value_and_grad(total, argnums=1)(ctx, y)
        upd, state = opt.update(g, state, y)
        return optax.apply_updates(y, upd), state

    final = jax.jit(jax.vmap(energy_fn))

    def python_loop(ctx, y0):
        y, state = y0, opt.init(y0)
        for _ in range(steps):
            y, state = step(ctx, y, state)
        return y, final(ctx, y)

    return {"minimize": ours, "bare": bare, "python loop": python_loop}


def run(quick: bool = False, out: str | None = None):
    sizes = [(16, 1, 4)] if quick else [(64, 2, 1), (64, 2, 4), (64, 2, 16)]
    n = 64
    rows = []
    for d, layers, steps in sizes:
        energy_fn, ctx, y0 = problem(d, layers, n)
        impl = implementations(energy_fn, steps)
        ys = {k: np.asarray(f(ctx, y0)[0] if k != "minimize" else f(ctx, y0)) for k, f in
              impl.items()}  # fmt: skip
        for k in ("bare", "python loop"):
            np.testing.assert_allclose(ys[k], ys["minimize"], rtol=1e-4, atol=1e-5)
        t = common.time_interleaved(
            {k: (lambda f=f, c=ctx, y=y0: f(c, y)) for k, f in impl.items()},
            repeats=2 if quick else 15,
            budget_s=2.0 if quick else 20.0,
        )
        ratio = t["minimize"].median / t["bare"].median
        loop = t["python loop"].median / t["minimize"].median
        rows.append([f"d={d}, {layers} layer(s)", n, steps,
                     f"{1e3 * t['minimize'].median:.2f}", f"{1e3 * t['bare'].median:.2f}",
                     f"{1e3 * t['python loop'].median:.2f}", common.verdict(ratio, TARGET),
                     f"{loop:.2f}"])  # fmt: skip
    report = "\n\n".join([
        "# Energy minimisation: wall time vs the bare forward + backward evaluations",
        common.machine_lines(common.machine_info()),
        common.markdown_table(
            ["energy (DigitsEBT)", "candidates", "steps", "minimize (ms)", "bare (ms)",
             "Python loop (ms)", f"minimize / bare (target <= {TARGET})",
             "Python loop / minimize"], rows),
    ])  # fmt: skip
    common.emit(report, out)
    return report, rows


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected positional arguments: {argv[1:]}")
    run(common.QUICK.value, common.OUT.value)


if __name__ == "__main__":
    app.run(main)
