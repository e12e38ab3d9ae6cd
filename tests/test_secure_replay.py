"""Secure rounds in the replay: each round's releases go through the real protocol, and its
unmasked average merges as the live gateway merges a secure round."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import analytics.secure
from analytics.datasets import load
from analytics.report import evaluate
from analytics.secure import SecureRounds
from federation.features import VEHICLE_SCHEMA
from federation.messages import RoundOpen, Update
from federation.privacy import clip, public_centre
from federation.secagg.simulation import simulate
from federation.summary import ModelSummary
from federation.whitening import Whitening
from gateway.private import unmasked_piece
from gateway.rounds import Round

CMAPSS = Path(__file__).parent.parent.parent / "shared" / "datasets" / "cmapss"
NAMES = VEHICLE_SCHEMA.names
# A coordinate of discrete Gaussian noise beyond this many of its standard deviations has
# probability below 1e-9.
NOISE_STDS = 6.2


def _round(vehicles: int, number: int = 1, seed: int = 0) -> Round:
    """A round holding ``vehicles`` central releases about the public centre, of 100
    readings each, some of them far enough off to be clipped."""
    rng = np.random.default_rng(seed)
    centre = public_centre(NAMES)
    current = Round(RoundOpen(number, 0.0, 30.0, 1, 0))
    for k in range(vehicles):
        mean = np.clip(centre.mean + rng.normal(0.0, 0.1 * (1 + k % 3), len(NAMES)), 0, 1)
        summary = ModelSummary(NAMES, 100.0, mean, centre.cov * rng.uniform(0.5, 1.5))
        current.accepted[f"veh-{k:02d}"] = Update(f"veh-{k:02d}", number, 0, summary, 0.5,
                                                  1e-5, 0.5, 0.0, privacy="central",
                                                  replaces_readings=10.0)
    return current


def _clipped_sum(current: Round, bound: float) -> np.ndarray:
    whitening = Whitening(public_centre(NAMES))
    return sum(clip(whitening.pack(u.summary), bound) for u in current.accepted.values())


def test_without_noise_the_merged_piece_is_the_plain_clipped_average_to_the_fixed_point():
    current = _round(12)
    bound = 4.0  # the clip norm, about the public centre too (where a central release has 6)
    plain = _clipped_sum(current, bound)
    assert any(np.linalg.norm(Whitening(public_centre(NAMES)).pack(u.summary)) > bound
               for u in current.accepted.values())  # some are clipped
    secure = SecureRounds(VEHICLE_SCHEMA, epsilon=0.0, delta=1e-5, clip_norm=4.0, seed=1)

    secure.close(current, None, Counter())

    expected = unmasked_piece(plain / 12, 1200.0, public_centre(NAMES), 0.0)
    (piece,) = current.unmasked
    assert current.accepted == {} and len(current.held) == 12
    assert [s.inputs for s in secure.sums] == [12]
    assert current.unmasked_replaces_readings == 120.0
    np.testing.assert_allclose(piece.summary.mean, expected.summary.mean, atol=1e-5)
    np.testing.assert_allclose(piece.summary.cov, expected.summary.cov, atol=1e-5)
    assert piece.summary.n == expected.summary.n == 1200.0


def test_a_round_too_small_for_the_protocol_waits_for_the_next():
    first, second = _round(3, number=1), _round(2, number=2, seed=1)
    secure = SecureRounds(VEHICLE_SCHEMA, epsilon=0.5, delta=1e-5, clip_norm=4.0, seed=1)
    waiting = {**first.accepted, **{f"{v}-b": u for v, u in second.accepted.items()}}
    second.accepted = {v: u for v, u in waiting.items() if v.endswith("-b")}

    secure.close(first, None, Counter())
    secure.close(second, None, Counter())

    assert first.accepted == {} and first.unmasked == [] and not first.held
    assert len(second.held) == 5 and [s.inputs for s in secure.sums] == [5]


@pytest.mark.parametrize(("dropout", "merged"), [(0.25, True), (0.6, False)])
def test_dropouts_beyond_the_tolerated_third_refuse_the_round(dropout, merged):
    current = _round(30)
    secure = SecureRounds(VEHICLE_SCHEMA, epsilon=0.5, delta=1e-5, clip_norm=4.0, seed=2,
                          dropout=dropout)
    rejected: Counter[str] = Counter()

    secure.close(current, None, rejected)

    if merged:
        assert 22 <= len(current.held) < 30 and len(current.unmasked) == 1
        assert rejected == Counter({"secagg_dropped": 30 - len(current.held)})
    else:
        assert not current.held and current.unmasked == []
        assert rejected == Counter({"secagg_refused": 30})


def test_the_evaluation_aggregates_every_secure_round_through_the_protocol(monkeypatch):
    sums = []

    def recorded(config, vectors, **kwargs):
        result = simulate(config, vectors, **kwargs)
        sums.append((config, dict(vectors), result))
        return result

    monkeypatch.setattr(analytics.secure, "simulate", recorded)
    dataset = load(f"cmapss:{CMAPSS}", limit=30)

    report, runs = evaluate(dataset, epsilons=[1.0], privacy="secagg", seed=0)

    regime = report["regimes"]["federated_dp_eps=1"]
    assert len(sums) == regime["secure_sums"] > 1
    assert sum(len(vectors) for _, vectors, _ in sums) == regime["secure_inputs"]
    assert regime["secure_inputs"] > 0.9 * regime["updates"]  # the rest still wait at the end
    for config, vectors, (aggregate, _) in sums:
        plain = sum(clip(vector, config.clip_norm) for vector in vectors.values())
        bound = NOISE_STDS * aggregate.noise_std + len(vectors) * aggregate.resolution
        assert aggregate.noise_std > 0
        assert np.abs(aggregate.total - plain).max() < bound
    assert regime["epsilon_spent"] == pytest.approx(1.0, abs=1e-3)
    assert runs["federated_dp_eps=1"].model is not None
