"""Speed of the flow-model searches against the bare work they spend (``inferax.search``).

For each method, the jitted search is timed against the *bare* evaluations it
reports spending: ``info.nfe / num_steps`` rows of the velocity network called
``num_steps`` times in one ``lax.scan``, plus one reward call on
``info.reward_evals`` rows, jitted alone. The ratio is the search's overhead
(bookkeeping, selection, resampling, loops); target <= 1.10 at the largest
budget. RBF is also timed with proposals in blocks against one at a time
(same decisions, fewer sequential network calls).

    python -m benchmarks.flow_search [--quick] [--out=benchmarks/flow_search.md]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app

from benchmarks import common
from inferax.models.mlp import VelocityMLP
from inferax.search import flow as fsearch

TARGET = 1.10
DIM = 16


def problem(hidden: int):
    model = VelocityMLP(features=DIM, hidden=hidden, depth=3)
    params = model.init(jax.random.key(0), jnp.zeros((2, DIM)), jnp.zeros(2))

    def velocity(x, t):
        return model.apply(params, x, jnp.full((x.shape[0],), t))

    reward = fsearch.verifiers.quadratic(jnp.ones(DIM) * 0.5)
    return velocity, reward


def methods(velocity, reward, steps: int, block: int):
    dyn = {k: fsearch.make_dynamics(velocity, k, steps) for k in ("linear", "vp")}
    kw = {"event_shape": (DIM,)}
    return {
        "random_search": lambda k, b: fsearch.random_search(k, velocity, reward, b,
                                                           num_steps=steps, **kw),
        "zero_order": lambda k, b: fsearch.zero_order_search(k, velocity, reward, b,
                                                            num_steps=steps, **kw),
        "best_of_n (vp)": lambda k, b: fsearch.best_of_n(k, dyn["vp"], reward, b, **kw),
        "svdd (vp)": lambda k, b: fsearch.svdd(k, dyn["vp"], reward, b, **kw),
        "smc (vp)": lambda k, b: fsearch.smc(k, dyn["vp"], reward, b, **kw),
        f"rbf (vp, block {block})": lambda k, b: fsearch.rbf(k, dyn["vp"], reward, b,
                                                            block_size=block, quota=_q(b, steps,
                                                                                      block), **kw),
        "rbf (vp, one at a time)": lambda k, b: fsearch.rbf(k, dyn["vp"], reward, b, block_size=1,
                                                           quota=_q(b, steps, block), **kw),
    }  # fmt: skip


def _q(budget, steps, block):
    """One quota for both RBF variants (the blocked one's, so both fit the budget)."""
    return fsearch.rbf_quota(budget, 2, 4, steps, block)


def bare(velocity, reward, steps: int, nfe: int, evals: int):
    rows = max(nfe // steps, 1)

    def fn(x):
        def body(y, t):
            return y + 0.01 * velocity(y, t), None

        y, _ = jax.lax.scan(body, x[:rows], jnp.linspace(0.0, 1.0, steps))
        return y, reward(jnp.resize(y, (max(evals, 1), DIM)))

    return jax.jit(fn), jnp.zeros((rows, DIM))


def run(quick: bool = False, out: str | None = None):
    steps = 4 if quick else 10
    budgets = [40] if quick else [100, 300, 1000]
    block = 4
    velocity, reward = problem(32 if quick else 512)
    rows, raw = [], {}
    for budget in budgets:
        for name, fn in methods(velocity, reward, steps, block).items():
            f = jax.jit(lambda k, fn=fn, b=budget: fn(k, b))
            key = jax.random.key(1)
            _, info = f(key)
            nfe, evals = int(info.nfe), int(info.reward_evals)
            g, x = bare(velocity, reward, steps, nfe, evals)
            t = common.time_interleaved(
                {"search": lambda f=f, k=key: f(k), "bare": lambda g=g, x=x: g(x)},
                repeats=2 if quick else 7,
                budget_s=2.0 if quick else 20.0,
            )
            ratio = t["search"].median / t["bare"].median
            raw[(budget, name)] = t["search"].median
            cell = common.verdict(ratio, TARGET) if budget == budgets[-1] else f"{ratio:.2f}"
            rows.append([budget, name, nfe, evals, f"{1e3 * t['search'].median:.2f}",
                         f"{1e3 * t['bare'].median:.2f}", cell])  # fmt: skip
    top = budgets[-1]
    blocked = raw[(top, f"rbf (vp, block {block})")] / raw[(top, "rbf (vp, one at a time)")]
    report = "\n\n".join([
        "# Flow-model search: wall time vs the bare evaluations spent",
        common.machine_lines(common.machine_info()),
        common.markdown_table(
            ["budget (NFE)", "method", "NFE spent", "reward evals", "search (ms)", "bare (ms)",
             f"ratio (target <= {TARGET} at {top})"], rows),
        f"RBF blocked ({block} per call) / one at a time, same quota and decisions, at {top} "
        f"NFE: {blocked:.2f} of the wall time.",
    ])  # fmt: skip
    common.emit(report, out)
    return report, rows


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected positional arguments: {argv[1:]}")
    run(common.QUICK.value, common.OUT.value)


if __name__ == "__main__":
    app.run(main)
