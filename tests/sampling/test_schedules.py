"""Time grids: exact formulas, monotonicity, end points and argument checks."""

import math

import numpy as np
import pytest

from inferax.sampling import schedules


@pytest.mark.parametrize("n", [1, 4, 7, 32])
@pytest.mark.parametrize("coef", [-1.0, -0.8, 0.0, 0.5, 2.0 / (math.pi - 2.0)])
def test_sway_matches_formula(n, coef):
    u = np.linspace(0.0, 1.0, n + 1)
    expected = u + coef * (np.cos(np.pi * u / 2) - 1 + u)
    got = np.asarray(schedules.sway(n, coef))
    assert got.shape == (n + 1,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(np.diff(got) > 0)
    assert got[0] == 0.0 and got[-1] == 1.0


def test_sway_minus_one_is_one_minus_cosine():
    u = np.linspace(0.0, 1.0, 17)
    np.testing.assert_allclose(schedules.sway(16, -1.0), 1 - np.cos(np.pi * u / 2), atol=1e-6)


def test_sway_zero_is_uniform_and_negative_coef_crowds_noise_end():
    np.testing.assert_allclose(schedules.sway(8, 0.0), schedules.uniform(8), atol=1e-7)
    ts = np.asarray(schedules.sway(8, -1.0))
    steps = np.diff(ts)
    assert steps[0] < 1 / 8 < steps[-1]  # small steps near t = 0 (noise)


@pytest.mark.parametrize("coef", [-1.01, 1.76, float("nan")])
def test_sway_rejects_non_monotone_coef(coef):
    with pytest.raises(ValueError, match="coef"):
        schedules.sway(8, coef)
    with pytest.raises(ValueError, match="coef"):
        schedules.sway_warp(schedules.uniform(4), coef)


def test_just_outside_range_is_really_non_monotone():
    # The bound is tight: slightly above 2/(pi-2) the warp decreases near u = 1.
    coef = 2.0 / (math.pi - 2.0) + 0.05
    u = np.linspace(0.0, 1.0, 2001)
    t = u + coef * (np.cos(np.pi * u / 2) - 1 + u)
    assert np.any(np.diff(t) < 0)


def test_uniform_and_t_start():
    np.testing.assert_allclose(schedules.uniform(4), [0, 0.25, 0.5, 0.75, 1.0])
    ts = np.asarray(schedules.uniform(5, t_start=0.5))
    np.testing.assert_allclose(ts, np.linspace(0.5, 1.0, 6), atol=1e-7)
    ts = np.asarray(schedules.sway(6, -1.0, t_start=0.5))
    assert ts[0] == 0.5 and ts[-1] == 1.0 and np.all(np.diff(ts) > 0)
    u = np.linspace(0, 1, 7)
    np.testing.assert_allclose(ts, 0.5 + 0.5 * (1 - np.cos(np.pi * u / 2)), atol=1e-6)


def test_epss_tables():
    np.testing.assert_allclose(schedules.epss(7), np.array([0, 2, 4, 6, 8, 16, 24, 32]) / 32)
    for n in schedules.EPSS_STEPS:
        ts = np.asarray(schedules.epss(n))
        assert ts.shape == (n + 1,) and ts[0] == 0 and ts[-1] == 1 and np.all(np.diff(ts) > 0)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.epss(8)


def test_sway_warp_on_epss_stays_increasing():
    ts = np.asarray(schedules.sway_warp(schedules.epss(7), -1.0))
    np.testing.assert_allclose(ts, 1 - np.cos(np.pi * np.asarray(schedules.epss(7)) / 2), atol=1e-6)
    assert np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(schedules.make("epss_sway", 7, coef=-1.0), ts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: schedules.uniform(0), "num_steps"),
        (lambda: schedules.uniform(2.5), "num_steps"),
        (lambda: schedules.uniform(4, t_start=1.0), "t_start"),
        (lambda: schedules.sway(4, t_start=-0.1), "t_start"),
        (lambda: schedules.sway_warp([0.0, 1.2], -1.0), "ts"),
        (lambda: schedules.sway_warp([[0.0, 1.0]], -1.0), "ts"),
        (lambda: schedules.make("cosine", 4), "name"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
