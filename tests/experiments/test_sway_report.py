"""sway_report reads every verdict stats can return (a new verdict must not crash the report)."""

from inferax.experiments import stats, sway_report


def test_every_verdict_has_a_reading():
    assert set(sway_report._READING) == set(stats.VERDICTS)
    v = stats.compare([1.0, 2.0], [1.5, 2.5])  # 2 seeds: not decidable
    assert sway_report._READING[v["verdict"]] == "not decidable at this size"
