"""One contract, one suite: every sensor source passes the same checks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from devices.simulator import SimulatedVehicle
from devices.sources import Reading, SensorSource
from federation.features import FEATURE_NAMES

SOURCES: dict[str, Callable[[], SensorSource]] = {
    "simulated": lambda: SimulatedVehicle("veh-0001", seed=3),
}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest) -> SensorSource:
    return SOURCES[request.param]()


def _readings(source: SensorSource, count: int) -> list[Reading]:
    return [r for r in (source.read() for _ in range(count)) if r is not None]


def test_readings_come_in_time_order(source):
    times = [r.ts_s for r in _readings(source, 500)]

    assert times and all(b > a for a, b in itertools.pairwise(times))


def test_readings_hold_only_known_features_with_finite_values(source):
    for reading in _readings(source, 500):
        assert set(reading.values) <= set(FEATURE_NAMES)
        assert all(math.isfinite(v) for v in reading.values.values())

