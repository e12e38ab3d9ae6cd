"""Secure rounds end to end, in one process through the codec: the sum is the plain sum, and
the round survives dropouts at every phase up to its tolerance, and refuses beyond it."""

from __future__ import annotations

import numpy as np
import pytest

from federation.secagg import SecAggConfig, SecAggError
from federation.secagg.simulation import PHASES, simulate

VEHICLES = 60


def _vectors(count: int, dimension: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"veh-{i:04d}": rng.uniform(-0.5, 0.5, dimension) for i in range(count)}


def _plain_sum(vectors: dict[str, np.ndarray], ids: tuple[str, ...]) -> np.ndarray:
    return np.sum([vectors[v] for v in ids], axis=0)


def _dropping(vectors: dict[str, np.ndarray], fraction: float, phase: str) -> dict[str, str]:
    ids = sorted(vectors)
    chosen = np.random.default_rng(1).choice(len(ids), int(fraction * len(ids)), replace=False)
    return {ids[i]: phase for i in chosen}


def test_the_unmasked_sum_equals_the_plain_sum_to_the_fixed_point_resolution():
    vectors = _vectors(VEHICLES, 54)
    config = SecAggConfig(dimension=54, clip_norm=4.0)

    result, _ = simulate(config, vectors)

    assert result.inputs == VEHICLES
    error = np.abs(result.total - _plain_sum(vectors, result.vehicle_ids))
    assert error.max() < VEHICLES * result.resolution
    assert result.resolution <= 2.0**-16


def test_vectors_longer_than_the_clip_norm_are_summed_clipped():
    vectors = {f"veh-{i:04d}": np.full(4, 10.0) for i in range(30)}
    config = SecAggConfig(dimension=4, clip_norm=1.0)

    result, _ = simulate(config, vectors)

    np.testing.assert_allclose(result.total, np.full(4, 30 * 0.5), atol=30 * result.resolution)


@pytest.mark.parametrize("fraction", [0.10, 0.33])
@pytest.mark.parametrize("phase", PHASES)
def test_a_round_finishes_when_vehicles_drop_out_before_a_phase(phase, fraction):
    vectors = _vectors(VEHICLES, 8)
    dropouts = _dropping(vectors, fraction, phase)
    config = SecAggConfig(dimension=8, clip_norm=4.0)

    result, _ = simulate(config, vectors, dropouts=dropouts)

    inputs_lost = PHASES.index(phase) <= PHASES.index("input")
    assert result.inputs == VEHICLES - (len(dropouts) if inputs_lost else 0)
    error = np.abs(result.total - _plain_sum(vectors, result.vehicle_ids))
    assert error.max() < VEHICLES * result.resolution


@pytest.mark.parametrize("phase", PHASES)
def test_a_round_refuses_to_unmask_when_60_percent_drop_out(phase):
    vectors = _vectors(VEHICLES, 8)
    config = SecAggConfig(dimension=8, clip_norm=4.0)

    with pytest.raises(SecAggError) as refused:
        simulate(config, vectors, dropouts=_dropping(vectors, 0.60, phase))

    assert refused.value.reason == "below_threshold"


def test_dropouts_spread_over_every_phase_within_the_tolerance_still_finish():
    vectors = _vectors(VEHICLES, 8)
    ids = sorted(vectors)
    dropouts = {v: PHASES[i % 4] for i, v in enumerate(ids[:20])}  # 5 before each phase
    config = SecAggConfig(dimension=8, clip_norm=4.0)

    result, _ = simulate(config, vectors, dropouts=dropouts)

    assert result.inputs == VEHICLES - 15
    error = np.abs(result.total - _plain_sum(vectors, result.vehicle_ids))
    assert error.max() < VEHICLES * result.resolution


def test_a_sparse_round_keeps_each_vehicle_to_its_neighbours():
    vectors = _vectors(150, 4)
    config = SecAggConfig(dimension=4, clip_norm=4.0)

    result, traffic = simulate(config, vectors, dropouts=_dropping(vectors, 0.2, "input"))

    assert result.inputs == 120
    error = np.abs(result.total - _plain_sum(vectors, result.vehicle_ids))
    assert error.max() < 150 * result.resolution
    # Bytes grow with the degree (40 here), not with the 150 vehicles.
    assert max(traffic.received_bytes.values()) < 150 * 100
