"""bench soak's growth figure: the least-squares slope of RSS over the settled points, per 1,000 fills."""
from __future__ import annotations

import pytest

from bench.soak import slope_per_1k


def test_a_steady_growth_is_reported_per_thousand_fills():
    points = [(10_000 + 1_000 * i, 100.0 + 0.03 * i) for i in range(11)]
    assert slope_per_1k(points) == pytest.approx(0.03)


def test_one_high_last_sample_moves_the_slope_far_less_than_the_two_point_difference():
    flat = [(10_000 + 1_000 * i, 100.0) for i in range(10)] + [(20_000, 100.5)]   # the Go heap at its peak
    two_point = (flat[-1][1] - flat[0][1]) / 10
    assert two_point == pytest.approx(0.05)
    assert slope_per_1k(flat) < two_point / 2
