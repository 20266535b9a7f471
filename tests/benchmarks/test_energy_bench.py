"""Tests of the energy-minimisation speed benchmark (``python -m benchmarks.energy``).

Speed ratios are not asserted (CPU timing on a shared machine is noisy); the
quick run checks that the three implementations agree (inside ``run``) and
that the report has its row and columns.
"""

from __future__ import annotations

from benchmarks import common
from benchmarks import energy as bench


def test_quick_run_reports_every_column(tmp_path):
    out = tmp_path / "energy.md"
    report, rows = bench.run(quick=True, out=str(out))
    assert out.read_text().strip() == report.strip()
    table = common.parse_tables(report)[0]
    assert len(table) == 2 and len(rows) == 1
    assert table[0][6].startswith("minimize / bare")
    name, n, steps, ours, bare, loop, ratio, rel = rows[0]
    assert n == 64 and steps == 4 and float(ours) > 0 and float(bare) > 0 and float(loop) > 0
    assert ratio.endswith(("(met)", "(missed)"))
