"""A vehicle's running covariance is River's, at a fraction of the cost."""

from __future__ import annotations

import numpy as np
import pytest
from river import covariance as river_covariance

from devices.onboard.running import RunningCovariance
from federation.features import FEATURE_NAMES
from federation.summary import ModelSummary


@pytest.mark.parametrize(("offset", "spread"), [(0.0, 1.0), (1e6, 1e-3), (-50.0, 1e4)])
def test_the_running_covariance_equals_rivers_empirical_covariance(offset, spread):
    rows = offset + spread * np.random.default_rng(7).standard_normal((3000, len(FEATURE_NAMES)))
    river = river_covariance.EmpiricalCovariance(ddof=0)
    mine = RunningCovariance(FEATURE_NAMES)

    for row in rows:
        reading = dict(zip(FEATURE_NAMES, row.tolist(), strict=True))
        river.update(reading)
        mine.update(reading)

    theirs, ours = ModelSummary.from_river(river, FEATURE_NAMES), mine.summary()
    assert ours.n == theirs.n == len(rows)
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=0, atol=1e-9 * max(1.0, abs(offset)))
    np.testing.assert_allclose(ours.cov, theirs.cov, rtol=1e-9, atol=1e-12 * spread**2)


def test_a_running_covariance_that_learned_nothing_is_empty():
    empty = RunningCovariance(FEATURE_NAMES).summary()

    assert (empty.n, empty.features, empty.mean.shape) == (0.0, FEATURE_NAMES, (9,))
