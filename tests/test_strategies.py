"""One contract for every aggregation strategy, and what sets the robust ones apart."""

from __future__ import annotations

import numpy as np
import pytest

from federation.features import FEATURE_NAMES
from federation.messages import Update
from federation.privacy import SeededNoise, clip, public_centre
from federation.summary import ModelSummary
from federation.whitening import Whitening
from gateway.private import pieces
from gateway.strategy import STRATEGIES, ExactMerge, Strategy, make_strategy

ALL = [make_strategy(name) for name in STRATEGIES]
ROBUST = [s for s in ALL if s.name in ("median", "trimmed", "norm-bounded", "centred-clip")]
CENTRE = public_centre(FEATURE_NAMES)


def _honest(count: int, size: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3, (count, size))


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_vehicles_that_agree_give_what_they_agree_on(strategy: Strategy):
    same = np.tile(np.array([0.1, -0.2, 0.3]), (7, 1))

    assert np.allclose(strategy.combine(same), same[0])
    assert strategy.readings(np.full(7, 30.0)) == pytest.approx(210.0)


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
@pytest.mark.parametrize("order", [1, 2])
def test_replacing_one_vehicle_moves_the_combination_at_most_its_sensitivity(
        strategy: Strategy, order: int):
    rng = np.random.default_rng(3)
    bound, count, worst = 1.0, 9, 0.0
    for _ in range(300):
        vectors = np.array([clip(v, bound, order) for v in rng.normal(0, 1, (count, 5))])
        other = vectors.copy()
        other[rng.integers(count)] = clip(rng.normal(0, 3, 5), bound, order)
        moved = np.linalg.norm(strategy.combine(other) - strategy.combine(vectors), ord=order)
        worst = max(worst, moved / strategy.sensitivity(count, bound, order))

    assert worst <= 1.0 + 1e-9


@pytest.mark.parametrize("strategy", ROBUST, ids=lambda s: s.name)
def test_a_fifth_of_vehicles_far_away_moves_a_robust_strategy_little_and_the_mean_far(
        strategy: Strategy):
    honest = _honest(40)
    hostile = np.vstack([honest, np.full((10, 6), 50.0)])

    robust_shift = np.linalg.norm(strategy.combine(hostile) - honest.mean(axis=0))
    mean_shift = np.linalg.norm(ExactMerge().combine(hostile) - honest.mean(axis=0))

    assert robust_shift < 1.0 < mean_shift


@pytest.mark.parametrize("strategy", ROBUST, ids=lambda s: s.name)
def test_one_huge_count_does_not_outweigh_the_others_in_a_robust_strategy(strategy: Strategy):
    counts = np.array([30.0] * 9 + [3e7])

    assert strategy.readings(counts) <= 30.0 * 10 * 2
    assert ExactMerge().readings(counts) > 3e7


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
@pytest.mark.parametrize("privacy", ["off", "local", "central"])
def test_every_strategy_merges_a_round_in_every_privacy_mode(strategy: Strategy, privacy: str):
    rng = np.random.default_rng(1)
    updates = []
    for k in range(10):
        data = np.clip(rng.normal(0.5, 0.1, (60, len(FEATURE_NAMES))), 0, 1)
        summary = ModelSummary.from_array(FEATURE_NAMES, data)
        # An epsilon so large that the central noise leaves the strategy's combination visible.
        updates.append(Update(f"veh-{k}", 1, 0, summary, 1e5, 1e-5, 1e5, 0.0,
                              0.01 if privacy == "local" else 0.0, privacy=privacy,
                              mechanism="none" if privacy == "off" else "gaussian",
                              clip_norm=4.0 if privacy == "central" else 0.0))

    made = pieces(updates, CENTRE, SeededNoise(0), strategy)

    whole = sum((p.summary for p in made), ModelSummary.empty(FEATURE_NAMES))
    assert whole.n == pytest.approx(600.0, rel=0.05)  # private ones shrunk by their noise
    assert np.all(np.abs(whole.mean - 0.5) < 0.05)


def test_central_noise_follows_the_strategys_sensitivity():
    median, mean = make_strategy("median"), make_strategy("mean")
    d = len(FEATURE_NAMES)
    summary = ModelSummary(FEATURE_NAMES, 60.0, np.full(d, 0.5), np.eye(d) / 12)
    updates = [Update(f"veh-{k}", 1, 0, summary, 1.0, 1e-5, 1.0, 0.0, privacy="central",
                      mechanism="gaussian", clip_norm=4.0) for k in range(16)]

    def spread(strategy: Strategy) -> float:
        draws = [Whitening(CENTRE).pack(pieces(updates, CENTRE, SeededNoise(k), strategy)[0]
                                        .summary)[:d] for k in range(200)]
        return float(np.std(draws))

    # 2 C sqrt(K) against 2 C / K: K^1.5 = 64 times the noise.
    assert spread(median) / spread(mean) == pytest.approx(64.0, rel=0.15)


def test_the_default_clips_exact_updates_centred_bounds_what_the_gateway_noises():
    auto = make_strategy()

    assert (auto.name, auto.exact) == ("auto", False)
    assert [auto.under(p).name for p in ("off", "local", "central")] == [
        "centred-clip", "mean", "norm-bounded"]


def test_centred_clipping_keeps_an_honest_round_close_to_its_mean():
    honest = _honest(200, size=54, seed=4) + 0.2

    combined = make_strategy("centred-clip").combine(honest)

    # Honest offsets spread 0.3 a coordinate (4.2 in norm); their mean is 0.2 from the centre.
    assert np.linalg.norm(combined - honest.mean(axis=0)) < 0.05 * np.linalg.norm(
        honest.mean(axis=0))


def test_colluders_pull_centred_clipping_no_further_however_far_they_go():
    honest = _honest(160, size=54, seed=5)  # offsets of 2.2 whitened units, in all directions

    def shift(strategy: Strategy, far: float) -> float:
        colluders = np.tile(np.full(54, far), (40, 1))  # a fifth, all at one point
        combined = strategy.combine(np.vstack([honest, colluders]))
        return float(np.linalg.norm(combined - honest.mean(axis=0)))

    clipping = make_strategy("centred-clip")

    # Three times as far as honest vehicles (7.3 units), or a hundred times.
    assert shift(clipping, 1.0) == pytest.approx(shift(clipping, 30.0), rel=1e-2)
    assert shift(clipping, 1.0) < 0.7 * shift(ExactMerge(), 1.0)


def test_centred_clipping_adapts_its_radius_to_the_round():
    # The same round in units ten thousand times smaller: the same combination, scaled.
    vectors = np.vstack([_honest(40), np.full((10, 6), 50.0)])
    strategy = make_strategy("centred-clip")

    assert np.allclose(strategy.combine(vectors * 1e-4), strategy.combine(vectors) * 1e-4)


def test_an_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy 'krum'"):
        make_strategy("krum")
