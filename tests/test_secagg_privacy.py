"""What a recording gateway sees of one vehicle is uniform noise over the ring, and the
unmasked sum carries the noise the plan promises."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from federation.privacy import calibrated
from federation.secagg import RoundPlan, SecAggConfig
from federation.secagg.noise import (
    SecureIntegerNoise,
    SeededIntegerNoise,
    distributed_noise_multiplier,
)
from federation.secagg.params import release_epsilon
from federation.secagg.ring import Ring
from federation.secagg.simulation import simulate
from tests.test_secagg_messages import IDS, Round

DIMENSION = 512


def _top_bits(ring: Ring, values: np.ndarray, bits: int) -> np.ndarray:
    return (values >> np.uint64(ring.ring_bits - bits)).astype(np.int64)


def _uniformity_p_value(values: np.ndarray, bins: int) -> float:
    counts = np.bincount(values, minlength=bins)
    return float(stats.chisquare(counts).pvalue)


def test_a_vehicles_masked_input_is_uniform_over_the_ring_whatever_it_hides():
    round_ = Round(config=SecAggConfig(dimension=DIMENSION, clip_norm=1.0))
    round_.vectors[IDS[0]] = np.zeros(DIMENSION)
    round_.vectors[IDS[0]][0] = 1.0  # at the clip on one coordinate, zero elsewhere
    ring = round_.server.plan.ring

    round_.finish()  # the gateway records every masked input it receives
    masked = [ring.from_bytes(m.masked, DIMENSION) for m in round_.sent["input"].values()]

    everyone = np.concatenate(masked)
    assert _uniformity_p_value(_top_bits(ring, everyone, 8), 256) > 1e-3
    assert min(_uniformity_p_value(_top_bits(ring, one, 4), 16) for one in masked) > 1e-4
    plain = ring.encode(round_.vectors[IDS[0]], np.random.default_rng(0))
    assert _uniformity_p_value(_top_bits(ring, plain, 4), 16) < 1e-10


def test_masked_inputs_of_opposite_vectors_are_indistinguishable():
    config = SecAggConfig(dimension=DIMENSION, clip_norm=1.0)
    seen = []
    for sign in (1.0, -1.0):
        round_ = Round(round_number=3 + int(sign), config=config)
        round_.vectors[IDS[0]] = np.full(DIMENSION, sign / math.sqrt(DIMENSION))
        round_.input()
        ring = round_.server.plan.ring
        seen.append(ring.from_bytes(round_.sent["input"][IDS[0]].masked, DIMENSION))

    plus, minus = (values.astype(float) for values in seen)

    assert stats.ks_2samp(plus, minus).pvalue > 1e-3


def test_the_sum_of_the_honest_quorums_shares_has_the_promised_variance():
    plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0, epsilon=0.548), 1000)
    honest = plan.min_inputs - plan.colluders
    draws = SeededIntegerNoise(0).discrete_gaussian(honest * 400, plan.share_noise_std)

    sums = draws.reshape(400, honest).sum(axis=1) * plan.ring.resolution
    variance = sums.var(ddof=1)

    low, high = stats.chi2.ppf([0.0005, 0.9995], 399) / 399
    assert low < variance / plan.sum_noise_std**2 < high
    assert plan.sum_noise_std == pytest.approx(plan.noise_multiplier * 2 * 4.0, rel=1e-4)


def test_an_unmasked_sum_of_zeros_is_the_noise_of_every_input():
    config = SecAggConfig(dimension=2048, clip_norm=1.0, epsilon=1.0)
    vectors = {f"veh-{i:02d}": np.zeros(2048) for i in range(20)}

    result, _ = simulate(config, vectors, dropouts={"veh-03": "input", "veh-04": "unmask"})

    plan = RoundPlan.make(config, 20)
    assert result.inputs == 19 and plan.levels == (20, 19, 17, 16, 14) and plan.colluders == 1
    # 18 vehicles removed the noise a sum of 19 does not need (each keeps what 19 - 1 honest
    # inputs need: the promise over 18); veh-04, gone before unmasking, left its share in
    # (the promise over 14 - 1).
    assert result.noise_std == pytest.approx(plan.sum_noise_std * math.sqrt(1 + 1 / 13),
                                             rel=1e-9)
    _holds_noise_of(result)


def _holds_noise_of(result) -> None:
    dimension = len(result.total)
    low, high = stats.chi2.ppf([0.0005, 0.9995], dimension - 1) / (dimension - 1)
    assert low < result.total.var() / result.noise_std**2 < high
    assert abs(result.total.mean()) < 4 * result.noise_std / math.sqrt(dimension)


def test_a_sum_of_every_vehicle_sheds_the_noise_kept_for_dropouts():
    config = SecAggConfig(dimension=2048, clip_norm=1.0, epsilon=1.0)
    vectors = {f"veh-{i:02d}": np.zeros(2048) for i in range(20)}
    plan = RoundPlan.make(config, 20)

    result, _ = simulate(config, vectors)

    # Each keeps the share of 20 - 1 honest inputs, not of the quorum's 14 - 1.
    assert result.noise_std == pytest.approx(plan.sum_noise_std * math.sqrt(20 / 19), rel=1e-9)
    assert result.noise_std < 0.85 * plan.share_noise_std * math.sqrt(20) * plan.ring.resolution
    _holds_noise_of(result)


def test_a_vehicle_that_keeps_all_its_noise_leaves_it_in_the_sum():
    config = SecAggConfig(dimension=DIMENSION, clip_norm=1.0, epsilon=1.0)
    round_ = Round(config=config)
    requests = round_.input()
    replies = {v: round_.clients[v].unmask(r) for v, r in requests.items()}
    replies[IDS[0]] = dataclasses.replace(replies[IDS[0]], noise=None)  # a vehicle of before
    for message in replies.values():
        round_.server.receive(message)
    result = round_.server.result()

    plan = round_.server.plan
    assert result.noise_std == pytest.approx(math.sqrt(
        19 * plan.level_variance(0) + plan.share_noise_std**2) * plan.ring.resolution)
    residual = dataclasses.replace(result, total=result.total - round_.expected())
    _holds_noise_of(residual)


@pytest.mark.parametrize("vehicles", [4, 20, 100, 1000, 10_000])
def test_whatever_the_dropout_the_noise_kept_by_the_honest_inputs_keeps_the_promise(vehicles):
    plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0, epsilon=0.548), vehicles)
    promised = (plan.noise_multiplier * plan.sensitivity) ** 2

    kept = [(inputs - plan.colluders) * plan.level_variance(plan.kept_level(inputs))
            for inputs in range(plan.min_inputs, vehicles + 1)]

    assert min(kept) >= promised * (1 - 1e-12)
    assert plan.levels[0] == vehicles and plan.levels[-1] == plan.min_inputs
    assert math.hypot(*plan.noise_parts) == pytest.approx(plan.share_noise_std, rel=1e-12)


def test_the_secure_sampler_draws_the_discrete_gaussian_of_its_sigma():
    draws = SecureIntegerNoise().discrete_gaussian(20_000, 300.0).astype(float)

    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], 19_999) / 19_999
    assert low < draws.var(ddof=1) / 300.0**2 < high
    assert abs(draws.mean()) < 6 * 300.0 / math.sqrt(20_000)


def test_the_noise_multiplier_is_the_smallest_that_keeps_one_release_within_epsilon():
    import dp_accounting

    def epsilon(multiplier: float) -> float:
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(dp_accounting.GaussianDpEvent(multiplier))
        return float(accountant.get_epsilon(1e-5))

    multiplier = distributed_noise_multiplier(0.548, 1e-5)

    assert epsilon(multiplier) <= 0.548 * (1 + 1e-6)
    assert epsilon(multiplier * 0.999) > 0.548
    rho = 1 / (2 * multiplier**2)  # the classical zCDP conversion is never tighter
    assert epsilon(multiplier) <= rho + 2 * math.sqrt(rho * math.log(1e5))


def test_a_plans_epsilon_with_rounding_and_tau_stays_within_the_release():
    for vehicles in (20, 100, 1000, 10_000):
        plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=6.0, epsilon=0.548), vehicles)

        assert plan.epsilon <= 0.548 * (1 + 1e-6)


def test_a_full_round_of_1000_carries_at_most_113_percent_of_central_noise():
    # The same lifetime budget of 1 over three releases; central's sum carries its
    # multiplier times 2C, the protocol's its kept noise of every input.
    central = calibrated("gaussian", 1.0, 3, 1e-5, 4.0).noise_std
    plan = RoundPlan.make(SecAggConfig(54, 4.0, release_epsilon(1.0, 3, 1e-5)), 1000)

    full = math.sqrt(1000 * plan.level_variance(0)) * plan.ring.resolution
    quorum_only = plan.share_noise_std * math.sqrt(1000) * plan.ring.resolution

    assert central == pytest.approx(51.7, abs=0.1)
    assert 1.0 < full / central < 1.13  # zCDP against PLD, and the colluders' own noise
    assert quorum_only / central > 1.35  # what sizing every share for the dropout cost
