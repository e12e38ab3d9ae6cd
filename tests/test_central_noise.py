"""Central noise: the gateway clips again, averages, and noises the aggregate once."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import MessageError, Update
from federation.privacy import (
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    NoiseSource,
    SeededNoise,
    pack,
    public_centre,
)
from federation.summary import ModelSummary
from federation.transport import MqttTarget
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests import factories

VEHICLES = 10
CENTRE = public_centre(FEATURE_NAMES)


class NoNoise(NoiseSource):
    """A test double that adds nothing, to see exactly what is averaged."""

    def gaussian(self, values: np.ndarray, scale: float) -> np.ndarray:
        return values

    def laplace(self, values: np.ndarray, scale: float) -> np.ndarray:
        return values

    def bernoulli(self, p: float) -> bool:
        return True


def _update(vehicle: int, mechanism: Mechanism, privacy: str, noise: NoiseSource) -> Update:
    exact = factories.summary(rows=60, seed=vehicle)
    summary = (mechanism.clipped(exact, CENTRE) if privacy == "central"
               else mechanism.privatize(exact, CENTRE, noise))
    noise_std = 0.0 if privacy == "central" else mechanism.noise_std
    return Update(f"veh-{vehicle:04d}", 1, 0, summary, mechanism.epsilon, mechanism.delta,
                  mechanism.epsilon, 0.0, noise_std, privacy=privacy, mechanism=mechanism.name,
                  clip_norm=mechanism.clip_norm, epsilon_budget=10.0)


def _close_round(updates: list[Update], noise: NoiseSource) -> Gateway:
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), min_updates=1,
                      noise=noise)
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
    for update in updates:
        gateway.handle(topics.update_topic(update.vehicle_id), messages.encode(update))
    gateway._close_round()
    return gateway


@pytest.mark.parametrize("mechanism", [GaussianMechanism(1.0, 1e-5, 0.5),
                                       LaplaceMechanism(1.0, 1e-5, 0.5)])
def test_central_noise_is_k_times_smaller_per_vehicle_and_sqrt_k_below_local(mechanism):
    noise = SeededNoise(4)
    local = _close_round([_update(i, mechanism, "local", noise) for i in range(VEHICLES)], noise)
    central = _close_round([_update(i, mechanism, "central", noise) for i in range(VEHICLES)],
                           noise)

    assert central.model is not None and local.model is not None
    assert central.model.noise_std == pytest.approx(mechanism.noise_std / VEHICLES)
    assert local.model.noise_std == pytest.approx(mechanism.noise_std / math.sqrt(VEHICLES))
    assert central.model.participants == VEHICLES
    assert central.model.summary.n == VEHICLES * 60


def test_the_gateway_clips_again_so_an_unclipped_central_update_moves_nothing_more():
    mechanism = GaussianMechanism(1.0, 1e-5, 0.5)
    honest = [_update(i, mechanism, "central", NoNoise()) for i in range(VEHICLES - 1)]
    d = len(FEATURE_NAMES)
    huge = ModelSummary(FEATURE_NAMES, 60.0, np.full(d, 1e5), np.eye(d) * 1e5)
    cheat = replace(honest[0], vehicle_id=f"veh-{VEHICLES:04d}", summary=huge)

    gateway = _close_round([*honest, cheat], NoNoise())

    assert gateway.model is not None
    offset = pack(gateway.model.summary) - pack(CENTRE)
    honest_part = sum(pack(u.summary) - pack(CENTRE) for u in honest) / VEHICLES
    assert np.linalg.norm(offset - honest_part) == pytest.approx(0.5 / VEHICLES)


def test_the_aggregate_noise_has_the_calibrated_scale_over_many_rounds():
    mechanism = GaussianMechanism(1.0, 1e-5, 0.5)
    summaries = [factories.summary(rows=40, seed=i) for i in range(VEHICLES)]
    exact = mechanism.aggregate(summaries, CENTRE, NoNoise())
    noise = SeededNoise(11)

    draws = np.array([pack(mechanism.aggregate(summaries, CENTRE, noise)) - pack(exact)
                      for _ in range(300)]).ravel()

    # Fixed seed; 16,200 draws, so the standard deviation is within 3 % (6 standard errors).
    assert draws.std() == pytest.approx(mechanism.scale / VEHICLES, rel=0.03)


def test_a_central_update_without_usable_parameters_is_refused():
    update = _update(1, GaussianMechanism(1.0, 1e-5, 0.5), "central", NoNoise())

    with pytest.raises(MessageError, match="central-privacy update needs"):
        messages.decode(Update, messages.encode(replace(update, clip_norm=0.0)))
