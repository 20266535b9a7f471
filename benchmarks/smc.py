"""Speed of inferax's resampling, SMC and Feynman-Kac corrector against BlackJAX and the limit.

Run from the repository root (BlackJAX comes with ``pip install -e .[bench]``)::

    python -m benchmarks.smc            # default sizes, ~10 min on 2 busy cores
    python -m benchmarks.smc --quick    # tiny sizes, seconds (the test runs this)

One process run; every case is timed at steady state (median of repeats after
a warm-up, each call ended by ``jax.block_until_ready``, the two sides of a
case timed in turns; ``benchmarks.common.time_interleaved``), and reported as
the ratio ours / peer. Cases:

1. **resampling** -- ``inferax.sampling.resampling.{multinomial, stratified,
   systematic, residual}`` against ``blackjax.smc.resampling.*`` at N = 1e4,
   1e5, 1e6, both ``jax.jit``-ed. Both sides get the same unnormalised
   log-weights: ours takes them as they are, BlackJAX (which takes normalised
   weights) gets ``jax.nn.softmax`` of them inside its timed function. A second
   ratio, against BlackJAX given the normalised weights precomputed outside the
   timed region, is reported too. Target <= 1.0 (the first ratio). Checked
   before timing: systematic and stratified draw the same uniforms from the
   same key on both sides, so the ancestors must coincide (up to CDF rounding
   at a few boundaries); multinomial and residual draw differently, so their
   offspring counts are compared with ``N w`` (total variation over 100 index
   blocks, and residual's ``floor(N w_i)`` guaranteed copies).
2. **tempered SMC** -- annealing ``prior(x) L(x)^lambda`` from a Gaussian prior
   to a Gaussian-mixture posterior along a fixed schedule, with k random-walk
   Metropolis steps (Gaussian proposal, same step size) per temperature and
   systematic resampling at every step. Ours: ``smc.build`` with a transition
   that moves with RWM (invariant for the current temperature, batched over
   particles; ``benchmarks.smc_tempered``) and reweights by
   ``(lambda' - lambda) log L``;
   peer: ``blackjax.tempered_smc`` with ``blackjax.additive_step_random_walk``.
   Both make the same log-density evaluations (one to start each chain, one
   per RWM step, one for the weight). Target <= 1.0. Checked: both log Z
   estimates and posterior means against the exact values.
3. **FKC anneal** -- ``feynman_kac.sample`` with ``feynman_kac.anneal(velocity,
   beta=2)`` (one network call per step, systematic resampling every step) on
   ``VelocityMLP(features=2, hidden=256, depth=3)`` against the limit: the same
   number of network calls in a bare ``lax.scan`` whose carry is ``x + 0 * v``
   (XLA can neither hoist nor drop a call). Target <= 1.15.
4. **KV-cache SMC step** -- ``smc.build`` over a decoder's population (tokens,
   a layer-major KV cache, a shared decode index) with ESS-triggered
   resampling, against the bare transition, alone and under ``jax.vmap`` over
   8 runs (``benchmarks.smc_cache``). Targets: ours/bare <= 1.10 when no step
   resamples (no gather runs), and <= 1.10 x the bare transition plus the
   gathers of the steps that do resample.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common, smc_cache
from benchmarks.smc_tempered import (  # noqa: F401  (re-exported for the tests)
    TemperedProblem,
    make_tempered_blackjax,
    make_tempered_ours,
    rwm,
)
from inferax.models.mlp import VelocityMLP
from inferax.sampling import feynman_kac, resampling

SCHEMES = ("multinomial", "stratified", "systematic", "residual")
CASES = ("resampling", "tempered", "fkc", "kv")
_CASES = flags.DEFINE_list("cases", list(CASES), f"Cases to run, a subset of {CASES}.")
TARGETS = {"resampling": 1.0, "tempered": 1.0, "fkc": 1.15, "kv": smc_cache.TARGET}
HEADERS = ("case", "N", "ours (s)", "peer (s)", "ratio ours/peer", "target", "met?")


@dataclasses.dataclass
class Row:
    """One timed case: median seconds of each side and the agreement check."""

    case: str
    n: int
    ours: float
    peer: float
    target: float
    peer_name: str
    check: str
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    repeats: int = 0

    @property
    def ratio(self) -> float:
        return self.ours / self.peer

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def _time(calls, repeats, budget_s):
    return common.time_interleaved(
        calls, repeats=repeats, min_repeats=min(3, repeats), budget_s=budget_s
    )


# --------------------------------------------------------------------------- 1. resampling


def _block_tv(ancestors: np.ndarray, w: np.ndarray, blocks: int = 100) -> float:
    """Total variation between ancestor frequencies and weights, over index blocks."""
    n = w.shape[0]
    edges = np.linspace(0, n, blocks + 1).astype(int)
    freq = np.bincount(ancestors, minlength=n) / ancestors.shape[0]
    f = np.add.reduceat(freq, edges[:-1])
    p = np.add.reduceat(w, edges[:-1])
    return 0.5 * float(np.abs(f - p).sum())


def resampling_case(scheme: str, n: int, *, repeats: int, budget_s: float) -> Row:
    """Times ours vs BlackJAX for one scheme at N particles (see the module docstring)."""
    from blackjax.smc import resampling as bj

    key = jax.random.key(n + SCHEMES.index(scheme))
    log_w = 2.0 * jax.random.normal(jax.random.key(1), (n,), jnp.float32)
    w = jax.nn.softmax(log_w)
    ours_fn = jax.jit(resampling.get(scheme))
    bj_fn = getattr(bj, scheme)
    peer_fn = jax.jit(lambda k, l: bj_fn(k, jax.nn.softmax(l), n))
    peer_w_fn = jax.jit(lambda k, ww: bj_fn(k, ww, n))

    a_ours = np.asarray(ours_fn(key, log_w))
    a_peer = np.asarray(peer_fn(key, log_w))
    w_np = np.asarray(w, np.float64)
    w_np /= w_np.sum()
    tv_ours, tv_peer = _block_tv(a_ours, w_np), _block_tv(a_peer, w_np)
    # A fair scheme's block TV is O(sqrt(blocks / N)); 10x that flags a broken side.
    tol = 10.0 * math.sqrt(100 / n)
    if not (tv_ours < tol and tv_peer < tol):
        raise RuntimeError(f"{scheme} N={n}: block TV ours {tv_ours:.3g}, peer {tv_peer:.3g}")
    if scheme in ("systematic", "stratified"):
        same = float(np.mean(a_ours == a_peer))
        if same < 0.9:  # float32 CDFs summed differently split ~3% of slots at N = 1e6
            raise RuntimeError(f"{scheme} N={n}: only {same:.4f} of ancestors agree")
        check = f"same ancestors: {same:.5f}"
    else:
        check = f"block TV ours {tv_ours:.4f}, peer {tv_peer:.4f}"
        if scheme == "residual":
            floor = np.floor(n * w_np).astype(int)
            for name, a in (("ours", a_ours), ("peer", a_peer)):
                short = int(np.sum(np.bincount(a, minlength=n) < floor - 1))
                if short:  # -1: float32 vs float64 floor(N w) at integer boundaries
                    raise RuntimeError(f"residual N={n}: {name} drops {short} guaranteed copies")
    t = _time(
        {
            "ours": lambda: ours_fn(key, log_w),
            "peer": lambda: peer_fn(key, log_w),
            "peer_w": lambda: peer_w_fn(key, w),
        },
        repeats,
        budget_s,
    )
    return Row(
        case=f"resampling {scheme}",
        n=n,
        ours=t["ours"].median,
        peer=t["peer"].median,
        target=TARGETS["resampling"],
        peer_name="BlackJAX (+softmax)",
        check=check,
        extra={"peer given weights (s)": t["peer_w"].median},
        repeats=t["ours"].repeats,
    )


# --------------------------------------------------------------------------- 2. tempered SMC


def tempered_case(n: int, *, num_lambdas: int, mcmc_steps: int, repeats: int, budget_s: float):
    """Times ours vs ``blackjax.tempered_smc`` at N particles; checks log Z and the mean."""
    problem = TemperedProblem()
    lambdas = np.linspace(0.0, 1.0, num_lambdas + 1) ** 2  # fixed; finer near the prior
    sigma = 0.5
    x0 = problem.s0 * jax.random.normal(jax.random.key(3), (n, problem.dim), jnp.float32)
    key = jax.random.key(4)
    ours = jax.jit(make_tempered_ours(problem, lambdas, sigma, mcmc_steps))
    peer = jax.jit(make_tempered_blackjax(problem, lambdas, sigma, mcmc_steps))
    errs = []
    for name, fn in (("ours", ours), ("peer", peer)):
        x, log_z = fn(key, x0)
        dz = abs(float(log_z) - problem.log_z)
        dm = float(np.max(np.abs(np.asarray(x).mean(0) - problem.posterior_mean)))
        tol = 0.1 if n >= 1000 else 1.0  # quick sizes only check it runs sensibly
        if not (dz < tol and dm < 2 * tol):
            raise RuntimeError(f"tempered N={n}: {name} logZ err {dz:.3g}, mean err {dm:.3g}")
        errs.append(f"{name} logZ err {dz:.3f}, mean err {dm:.3f}")
    t = _time({"ours": lambda: ours(key, x0), "peer": lambda: peer(key, x0)}, repeats, budget_s)
    return Row(
        case=f"tempered SMC ({num_lambdas} temps, {mcmc_steps} RWM)",
        n=n,
        ours=t["ours"].median,
        peer=t["peer"].median,
        target=TARGETS["tempered"],
        peer_name="blackjax.tempered_smc",
        check="; ".join(errs) + f" (exact log Z {problem.log_z:.3f})",
        repeats=t["ours"].repeats,
    )


# --------------------------------------------------------------------------- 3. FKC vs limit


def make_fkc(apply, n: int, steps: int, beta: float = 2.0):
    """``feynman_kac.sample`` of ``anneal(v, beta)``; ``(key, params) -> (x, log_w)``."""
    ts = jnp.linspace(0.0, 1.0, steps + 1)

    def run(key, params):
        transition = feynman_kac.anneal(lambda x, t: apply(params, x, t), beta)
        x, log_w, _ = feynman_kac.sample(key, transition, n, ts, event_shape=(2,))
        return x, log_w

    return run


def make_fkc_limit(apply, n: int, steps: int):
    """The ``steps`` network calls alone in one ``lax.scan``; ``(key, params) -> x0``."""
    ts = jnp.linspace(0.0, 1.0, steps + 1)[:-1]

    def run(key, params):
        x0 = jax.random.normal(key, (n, 2), jnp.float32)

        def body(x, t):
            return x + 0.0 * apply(params, x, t), None

        return jax.lax.scan(body, x0, ts)[0]

    return run


def fkc_case(n: int, *, steps: int, repeats: int, budget_s: float) -> Row:
    model = VelocityMLP(features=2, hidden=256, depth=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), 0.0)
    key = jax.random.key(5)
    ours = jax.jit(make_fkc(model.apply, n, steps))
    limit = jax.jit(make_fkc_limit(model.apply, n, steps))
    x, log_w = ours(key, params)
    if not (np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(log_w)))):
        raise RuntimeError(f"FKC N={n}: non-finite particles or weights")
    t = _time(
        {"ours": lambda: ours(key, params), "peer": lambda: limit(key, params)}, repeats, budget_s
    )
    return Row(
        case=f"FKC anneal beta=2, {steps} steps",
        n=n,
        ours=t["ours"].median,
        peer=t["peer"].median,
        target=TARGETS["fkc"],
        peer_name="limit (bare MLP calls)",
        check=f"finite; ESS of final weights {float(resampling.ess(log_w)):.0f}",
        repeats=t["ours"].repeats,
    )


# --------------------------------------------------------------------------- 4. KV cache


def kv_rows(kv: list[smc_cache.KVRow], n: int) -> list[Row]:
    """Main-table rows of the KV-cache case: per-step seconds, ours vs the bare transition.

    No resampling: target ``TARGETS["kv"]``. ESS-triggered: ``TARGETS["kv"]`` times
    the ratio expected when only the steps that resample pay for a gather.
    """
    rows = []
    for r in kv:
        if r.weights == "every step":
            continue
        target = TARGETS["kv"]
        if r.weights != "none resample":
            target = round(TARGETS["kv"] * smc_cache.expected_ratio(r), 2)
        rows.append(
            Row(
                case=f"KV-cache SMC step, {r.setting}, {r.weights} ({r.any_resampled:.0%} gather)",
                n=n,
                ours=r.ours,
                peer=r.bare,
                target=target,
                peer_name="bare transition",
                check="cache rows match their tokens"
                + ("; = the bare run" if r.weights == "none resample" else ""),
                repeats=r.repeats,
            )
        )
    return rows


# --------------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    cells = [
        [
            r.case,
            r.n,
            f"{r.ours:.4g}",
            f"{r.peer:.4g} ({r.peer_name})",
            f"{r.ratio:.2f}",
            f"<= {r.target}",
            "met" if r.met else "missed",
        ]
        for r in rows
    ]
    return common.markdown_table(HEADERS, cells)


def detail_table(rows: list[Row]) -> str:
    cells = []
    for r in rows:
        pw = r.extra.get("peer given weights (s)")
        cells.append(
            [
                r.case,
                r.n,
                r.repeats,
                "-" if pw is None else f"{pw:.4g}",
                "-" if pw is None else f"{r.ours / pw:.2f}",
                r.check,
            ]
        )
    headers = [
        "case",
        "N",
        "timed repeats",
        "BlackJAX given weights (s)",
        "ours / that",
        "agreement check (before timing)",
    ]
    return common.markdown_table(headers, cells)


def run(
    *,
    quick: bool = False,
    repeats: int = 7,
    budget_s: float = 10.0,
    out: str | None = None,
    cases=CASES,
) -> tuple[str, list[Row]]:
    """Runs the ``cases`` (default: all of ``CASES``); returns the markdown report and the rows.

    Raises:
        ValueError: if ``cases`` names a case not in ``CASES`` or none at all.
    """
    cases = tuple(cases)
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise ValueError(f"cases: expected a non-empty subset of {CASES}, got {list(cases)}")
    if quick:
        sizes, temp_ns, fkc_ns, repeats, budget_s = (256,), (128,), (64,), 2, 0.0
        num_lambdas, mcmc_steps, fkc_steps = 4, 2, 2
        kv_cfg, kv_runs = smc_cache.QUICK, 2
    else:
        sizes, temp_ns, fkc_ns = (10_000, 100_000, 1_000_000), (4096, 65536), (4096,)
        num_lambdas, mcmc_steps, fkc_steps = 30, 5, 16
        kv_cfg, kv_runs = smc_cache.KVConfig(), 8
    load_start = common.machine_info()["load average (1, 5, 15 min)"]
    timing = {"repeats": repeats, "budget_s": budget_s}
    rows, kv = [], []
    for scheme in SCHEMES if "resampling" in cases else ():
        for n in sizes:
            rows.append(resampling_case(scheme, n, **timing))
            print(f"done {rows[-1].case} N={n}", file=sys.stderr, flush=True)
    for n in temp_ns if "tempered" in cases else ():
        rows.append(tempered_case(n, num_lambdas=num_lambdas, mcmc_steps=mcmc_steps, **timing))
        print(f"done tempered N={n}", file=sys.stderr, flush=True)
    for n in fkc_ns if "fkc" in cases else ():
        rows.append(fkc_case(n, steps=fkc_steps, **timing))
        print(f"done FKC N={n}", file=sys.stderr, flush=True)
    if "kv" in cases:
        kv = smc_cache.kv_case(kv_cfg, runs=kv_runs, **timing)
        rows += kv_rows(kv, kv_cfg.n)
        print("done KV-cache SMC", file=sys.stderr, flush=True)
    info = common.machine_info(peers=("blackjax", "flax"))
    info["load average at start"] = load_start
    report = "\n\n".join(
        [
            "## SMC",
            common.machine_lines(info),
            "Steady-state seconds per call (median of timed repeats after a warm-up, both sides "
            "timed in turns, every call ended by `block_until_ready`). Resampling: both sides "
            "get the same log-weights; BlackJAX's timed function includes the `softmax` it needs. "
            "Tempered SMC: one whole jitted run (systematic resampling every temperature, the "
            "same RWM move). FKC: one whole jitted `feynman_kac.sample` run vs the same number "
            "of bare network calls in a `lax.scan`.",
            table(rows),
            "BlackJAX resampling given precomputed normalised weights (softmax outside the timed "
            "region), timed repeats, and the agreement checks made before timing:",
            detail_table(rows),
            f"KV-cache SMC step (`benchmarks/smc_cache.py`): N = {kv_cfg.n} particles, tokens "
            f"int32 [{kv_cfg.n}, {kv_cfg.length}], a layer-major cache k, v: float32 "
            f"[{kv_cfg.layers}, {kv_cfg.n}, {kv_cfg.heads}, {kv_cfg.length}, "
            f"{kv_cfg.head_dim}] (particle axis 1), a shared scalar decode index; "
            f"{kv_cfg.steps} steps per timed run, seconds per step. Systematic resampling "
            "when ESS < N/2. `bare`: the same transitions (same keys) alone; `bare + gather "
            "every step`: what a `lax.cond` costs under `vmap` (a select that runs the "
            "gather every step). Steps that do not resample do no gather; under `vmap` a "
            "gather runs at the steps where some run resamples (`steps that gather`).",
            smc_cache.kv_table(kv),
        ][: None if kv else -2]
    )
    common.emit(report, out)
    return report, rows


def main(argv):
    del argv
    run(
        quick=common.QUICK.value,
        repeats=common.flag_or(common.REPEATS, 7),
        budget_s=common.flag_or(common.BUDGET, 10.0),
        out=common.OUT.value,
        cases=_CASES.value,
    )


if __name__ == "__main__":
    app.run(main)
