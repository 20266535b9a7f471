"""Tests of the flow-sampling speed benchmark (``python -m benchmarks.flow_sampling``).

The ``--quick`` configuration is run in-process once per module. Speed ratios
are not asserted (CPU timing on a shared machine is noisy); what is checked is
that the report has every row and column, that every side computes the same
x1 as ``flow.sample``, and that the helpers keep their promises.
"""

from __future__ import annotations

import diffrax  # noqa: E402,F401  (a `test` extra: the peer we check against)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from benchmarks import common, flow_sampling, flow_sides  # noqa: E402
from inferax.models.mlp import VelocityMLP  # noqa: E402


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "flow.md"
    report, rows = flow_sampling.run(quick=True, out=str(out))
    return report, rows, out


@pytest.fixture(scope="module")
def model_params():
    model = VelocityMLP(features=2, hidden=32, depth=2, time_embed_dim=16)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 2)), 0.0)


QUICK_ROWS = [
    ("compute-bound", 64, 4, "euler"),
    ("compute-bound", 64, 4, "midpoint"),
    ("overhead-bound", 16, 8, "euler"),
    ("overhead-bound", 16, 8, "midpoint"),
]


def test_quick_report_has_every_row_and_column(quick):
    report, rows, out = quick
    assert [(r.regime, r.n, r.steps, r.solver) for r in rows] == QUICK_ROWS
    speed, best, agreement = common.parse_tables(report)
    assert best[0] == list(flow_sampling.BEST_HEADERS) and len(best) == 5
    assert speed[0] == list(flow_sampling.HEADERS)
    assert all(len(line) == len(flow_sampling.HEADERS) for line in speed)
    rows_seen = [line[:5] for line in speed[1:]]
    assert rows_seen == [
        [r, str(n), str(k), s, str(k * (1 if s == "euler" else 2))] for r, n, k, s in QUICK_ROWS
    ]
    header = ["regime", "N", "steps", "solver", "timed repeats", "diffrax", "naive", "torch"]
    assert agreement[0] == header
    assert [line[:4] for line in agreement[1:]] == [
        [r, str(n), str(k), s] for r, n, k, s in QUICK_ROWS
    ]
    sides = {"ours", "limit", "naive", "diffrax"} | ({"torch"} if "torch" in rows[0].err else set())
    for r in rows:
        reps = 2 * (flow_sampling.OVERHEAD_REPEATS if r.regime == "overhead-bound" else 1)
        assert (
            r.repeats == reps
            and set(r.median) == set(r.best) == sides
            and set(r.compile) == {"ours", "diffrax"}
        )
        for t in [*r.median.values(), *r.best.values(), *r.compile.values()]:
            assert np.isfinite(t) and t > 0.0
    torch_col = flow_sampling.HEADERS.index("PyTorch/ours (>=3 overhead-bound)")
    if "torch" in sides:  # the >= 3 target is judged at the overhead-bound rows only
        assert all(
            line[torch_col].endswith("(no target: parity is the ceiling)") for line in speed[1:3]
        )
        assert all(line[torch_col].endswith(("(met)", "(missed)")) for line in speed[3:])
    else:
        assert all(line[torch_col] == "skipped" for line in speed[1:])
    assert "cpu:" in report and "jax: " + jax.__version__ in report and "diffrax:" in report
    assert "(met)" in report or "(missed)" in report
    assert "VelocityMLP(hidden=64, depth=1, time_embed_dim=32)" in report
    assert out.read_text().strip() == report.strip()


def test_quick_sides_agree_with_ours(quick):
    _, rows, _ = quick
    for r in rows:
        assert r.err["diffrax"] <= 1e-5, r
        assert r.err["naive"] <= 1e-5, r
        if "torch" in r.err:
            assert r.err["torch"] <= 1e-3, r


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_diffrax_matches_ours_and_heun_does_not(model_params, solver):

    model, params = model_params
    ts = np.linspace(0.0, 1.0, 9, dtype=np.float32)
    x0 = jax.random.normal(jax.random.key(1), (32, 2))
    ours = jax.jit(flow_sides.make_ours(model.apply, ts, solver))(params, x0)
    theirs = jax.jit(flow_sides.make_diffrax(model.apply, ts, solver))(params, x0)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(ours - x0))) > 0.05  # the velocity is not trivially zero

    # Negative control: a different 2-stage solver lands measurably elsewhere.
    heun = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, p: model.apply(p, y, t)),
        diffrax.Heun(),
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=x0,
        args=params,
        stepsize_controller=diffrax.StepTo(ts=jnp.asarray(ts)),
    ).ys[0]
    assert float(jnp.max(jnp.abs(heun - ours))) > 1e-4


def test_limit_calls_the_network_once_per_nfe_at_the_solver_times(model_params):
    model, params = model_params
    ts = np.array([0.0, 0.25, 1.0], np.float32)
    np.testing.assert_allclose(flow_sides.call_times(ts, "euler"), [0.0, 0.25])
    np.testing.assert_allclose(flow_sides.call_times(ts, "midpoint"), [0.0, 0.125, 0.25, 0.625])
    seen = []

    def apply(p, x, t):
        seen.append(t)  # runs at trace time: once per traced call site
        return model.apply(p, x, t)

    x0 = jnp.ones((4, 2))
    out = jax.jit(flow_sides.make_limit(apply, ts, "midpoint"))(params, x0)
    assert len(seen) == 1  # one call site inside the scan, run NFE = 4 times
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x0))  # x + 0 * v keeps x


def test_main_passes_flags_to_run(monkeypatch, tmp_path):
    got = {}
    monkeypatch.setattr(flow_sampling, "run", lambda **kw: got.update(kw))
    argv = ["flow_sampling", "--quick", f"--out={tmp_path / 'r.md'}", "--steps=8,16"]
    argv += ["--overhead_particles=8,32", "--overhead_steps=150"]
    try:
        flags.FLAGS(argv)
        flow_sampling.main(argv)
    finally:
        flags.FLAGS.unparse_flags()
    assert got["quick"] is True and got["out"] == str(tmp_path / "r.md")
    assert got["steps"] == ["8", "16"] and got["solvers"] == ["euler", "midpoint"]
    assert got["overhead_particles"] == ["8", "32"] and got["overhead_steps"] == ["150"]


def test_grid_rejects_unknown_solver_and_lists_both_regimes():
    with pytest.raises(ValueError, match="solvers: expected names in"):
        flow_sampling.grid([8], [4], ["rk4"], 0)
    assert flow_sampling.grid([8], [4, 2], ["euler"], 16, [32], [100, 200]) == [
        ("compute-bound", 8, 4, "euler"),
        ("compute-bound", 8, 2, "euler"),
        ("compute-bound", 16, 2, "euler"),
        ("overhead-bound", 32, 100, "euler"),
        ("overhead-bound", 32, 200, "euler"),
    ]
    assert flow_sampling.grid([8], [4], ["euler"], 0) == [("compute-bound", 8, 4, "euler")]


def test_overhead_network_is_narrow():
    # The overhead-bound regime needs a network whose call is cheap: about 15x
    # fewer parameters than the compute-bound one.
    sizes = {}
    for regime, net in flow_sampling.NETS.items():
        params = net.model().init(jax.random.key(0), jnp.zeros((1, 2)), 0.0)
        sizes[regime] = sum(p.size for p in jax.tree.leaves(params))
    assert sizes["overhead-bound"] * 15 < sizes["compute-bound"], sizes


def test_common_helpers():
    calls = {"a": lambda: jnp.ones(3), "b": lambda: jnp.zeros(3)}
    t = common.time_interleaved(calls, repeats=3, min_repeats=3, budget_s=0.0)
    assert list(t) == ["a", "b"] and all(
        v.repeats == 3 and v.median >= v.best > 0 for v in t.values()
    )
    assert common.time_steady(lambda: 1.0, repeats=2, min_repeats=1, budget_s=0.0).repeats == 1
    with pytest.raises(ValueError, match="min_repeats: expected an integer in"):
        common.time_interleaved(calls, repeats=2, min_repeats=3)
    with pytest.raises(ValueError, match="warmup: expected an integer >= 0"):
        common.time_interleaved(calls, warmup=-1)
    assert common.verdict(1.02, 1.05) == "1.02 (met)"
    assert common.verdict(1.10, 1.05) == "1.10 (missed)"
    assert common.verdict(2.0, 3.0, higher_is_better=True) == "2.00 (missed)"
    assert common.markdown_table(["a", "b"], [[1, 2]]).splitlines()[2] == "| 1 | 2 |"
    assert common.installed("jax") and not common.installed("no_such_module_xyz")
    with pytest.raises(ValueError, match=r"rows\[0\]: expected 2 cells"):
        common.markdown_table(["a", "b"], [[1]])
    compiled, seconds = common.compile_timed(lambda: lambda x: x + 1, jnp.ones(2))
    assert float(compiled(jnp.ones(2))[0]) == 2.0  # the time is reported, not asserted
    assert isinstance(seconds, float)
