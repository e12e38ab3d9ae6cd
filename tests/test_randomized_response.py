"""Randomized response: unbiased over simulated fleets, intervals that cover at their rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federation.messages import AlertReport
from federation.privacy import SeededNoise
from federation.randomized_response import RandomizedResponse
from gateway.alert_rate import AlertRate

FLEETS = 800  # simulated fleets per true rate
VEHICLES = 300


def _simulate(scheme: RandomizedResponse, rate: float, seed: int) -> list[tuple[float, float,
                                                                                 float, float]]:
    """For each simulated fleet: its true share, the estimate and the interval."""
    rng, noise = np.random.default_rng(seed), SeededNoise(seed + 1)
    results = []
    for _ in range(FLEETS):
        truths = rng.random(VEHICLES) < rate
        yes = sum(scheme.respond(bool(t), noise) for t in truths)
        est = scheme.estimate(yes, VEHICLES)
        results.append((truths.mean(), est.rate, est.low, est.high))
    return results


@pytest.mark.parametrize(("truth_p", "rate"), [(0.5, 0.05), (0.5, 0.3), (0.8, 0.6)])
def test_the_estimate_is_unbiased_and_its_interval_covers_the_truth_at_its_rate(truth_p, rate):
    results = np.array(_simulate(RandomizedResponse(truth_p), rate, seed=int(rate * 100)))
    true_share, estimate, low, high = results.T

    error = estimate - true_share
    covered = ((low <= true_share) & (true_share <= high)).mean()

    # Fixed seeds. Bias: within 4 standard errors of the mean error. Coverage of the 95 %
    # interval: within 0.92-0.98 (3.4 standard errors of a proportion over 800 fleets).
    assert abs(error.mean()) < 4 * error.std() / math.sqrt(FLEETS)
    assert 0.92 <= covered <= 0.98


def test_a_single_answer_is_ln3_differentially_private_with_the_classic_coin():
    scheme = RandomizedResponse()
    noise = SeededNoise(9)

    yes_given_yes = np.mean([scheme.respond(True, noise) for _ in range(40_000)])
    yes_given_no = np.mean([scheme.respond(False, noise) for _ in range(40_000)])

    assert scheme.epsilon == pytest.approx(math.log(3))
    assert yes_given_yes == pytest.approx(0.75, abs=0.01)
    assert yes_given_no == pytest.approx(0.25, abs=0.01)


def test_the_gateway_estimates_the_latest_day_from_each_vehicles_latest_answer():
    rate = AlertRate()
    for i in range(200):
        rate.add(f"veh-{i:04d}", AlertReport(4, answer=False, epsilon=math.log(3)))
        rate.add(f"veh-{i:04d}", AlertReport(5, answer=i < 50, epsilon=math.log(3)))
    for i in range(10):  # a later answer replaces an earlier one for the same day
        rate.add(f"veh-{i:04d}", AlertReport(5, answer=False, epsilon=math.log(3)))

    found = rate.latest()

    assert found is not None and found.day == 5
    assert found.estimate.answers == 200
    assert found.estimate.rate == pytest.approx((40 / 200 - 0.25) / 0.5)


@pytest.mark.parametrize(("yes", "answers"), [(-1, 10), (11, 10), (0, 0)])
def test_impossible_counts_are_refused(yes, answers):
    with pytest.raises(ValueError):
        RandomizedResponse().estimate(yes, answers)


@pytest.mark.parametrize("answers", [1, 4, 20, 1000])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_interval_is_ordered_and_inside_0_to_1_however_few_answered(answers, share):
    yes = round(share * answers)

    est = RandomizedResponse().estimate(yes, answers)

    assert 0.0 <= est.low <= est.high <= 1.0
