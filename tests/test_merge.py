"""The federation is exact: merged summaries equal the model learned from pooled data."""

from __future__ import annotations

import itertools

import numpy as np
from river import covariance, stats

from devices.onboard.detector import FleetGaussian
from federation.features import FEATURE_NAMES
from federation.summary import ModelSummary, Moments, merge
from gateway.strategy import ExactMerge

# Documented tolerance: float64 rounding of the Chan merge on values in [0, 1].
ATOL = 1e-12


def _rows(seed: int, count: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    base = rng.random(len(FEATURE_NAMES))
    data = base + 0.1 * rng.standard_normal((count, len(FEATURE_NAMES)))
    return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in np.clip(data, 0, 1)]


def _river_summary(rows: list[dict[str, float]]) -> ModelSummary:
    model = covariance.EmpiricalCovariance(ddof=0)
    for x in rows:
        model.update(x)
    return ModelSummary.from_river(model, FEATURE_NAMES)


def test_merging_device_summaries_equals_learning_on_pooled_data():
    devices = [_rows(seed, count) for seed, count in enumerate([37, 500, 1, 1200, 64])]
    pooled = [x for rows in devices for x in rows]

    merged = ExactMerge().aggregate(
        ModelSummary.empty(FEATURE_NAMES), [_river_summary(rows) for rows in devices])
    central = _river_summary(pooled)

    assert merged.n == central.n == len(pooled)
    np.testing.assert_allclose(merged.mean, central.mean, rtol=0, atol=ATOL)
    np.testing.assert_allclose(merged.cov, central.cov, rtol=0, atol=ATOL)


def test_merge_does_not_depend_on_the_order_of_updates():
    parts = [_river_summary(_rows(seed, 100 + 50 * seed)) for seed in range(4)]
    results = [ExactMerge().aggregate(ModelSummary.empty(FEATURE_NAMES), list(order))
               for order in itertools.permutations(parts)]

    for result in results[1:]:
        np.testing.assert_allclose(result.cov, results[0].cov, rtol=0, atol=ATOL)


def test_merge_rule_agrees_with_rivers_own_parallel_covariance():
    a, b = _rows(1, 300), _rows(2, 40)
    river_a, river_b = stats.Cov(ddof=0), stats.Cov(ddof=0)
    for x in a:
        river_a.update(x["engine_rpm"], x["battery_v"])
    for x in b:
        river_b.update(x["engine_rpm"], x["battery_v"])

    merged = _river_summary(a) + _river_summary(b)
    i, j = FEATURE_NAMES.index("engine_rpm"), FEATURE_NAMES.index("battery_v")

    assert abs(merged.cov[i, j] - (river_a + river_b).get()) < ATOL


def test_rounds_of_detector_summaries_rebuild_the_pooled_model():
    """What the live system does: each round every device sends what it learned since its
    last update, and the gateway folds the round into the global model."""
    devices = [FleetGaussian() for _ in range(3)]
    streams = [_rows(10 + k, 900) for k in range(3)]
    strategy, global_model = ExactMerge(), ModelSummary.empty(FEATURE_NAMES)

    for start in range(0, 900, 300):
        for detector, rows in zip(devices, streams, strict=True):
            for x in rows[start:start + 300]:
                detector.learn_one(x)
        global_model = strategy.aggregate(global_model, [d.take_summary() for d in devices])

    central = _river_summary([x for rows in streams for x in rows])
    assert global_model.n == central.n
    np.testing.assert_allclose(global_model.cov, central.cov, rtol=0, atol=ATOL)
    np.testing.assert_allclose(global_model.mean, central.mean, rtol=0, atol=ATOL)


def test_merging_stacked_summaries_equals_merging_each_pair():
    pairs = [(_river_summary(_rows(1, 30)), _river_summary(_rows(2, 70))),
             (ModelSummary.empty(FEATURE_NAMES), _river_summary(_rows(3, 5))),
             (_river_summary(_rows(4, 9)), ModelSummary.empty(FEATURE_NAMES))]

    stacked = merge(*(Moments(*(np.stack(parts) for parts in zip(*(p.moments for p in side),
                                                                     strict=True)))
                      for side in zip(*pairs, strict=True)))

    for k, (a, b) in enumerate(pairs):
        one = a + b
        assert stacked.n[k] == one.n
        assert np.array_equal(stacked.mean[k], one.mean) and np.array_equal(stacked.cov[k], one.cov)


def test_merging_a_whole_round_at_once_equals_merging_one_by_one():
    summaries = [_river_summary(_rows(seed, count))
                 for seed, count in enumerate([3, 90, 1, 250, 17, 40, 8])]
    one_by_one = ModelSummary.empty(FEATURE_NAMES)
    for summary in summaries:
        one_by_one = one_by_one + summary

    at_once = ModelSummary.merged(FEATURE_NAMES, summaries)

    assert at_once.n == one_by_one.n
    np.testing.assert_allclose(at_once.mean, one_by_one.mean, rtol=0, atol=ATOL)
    np.testing.assert_allclose(at_once.cov, one_by_one.cov, rtol=0, atol=ATOL)
