"""Private aggregation: releases are averaged about the round's model; central updates are
clipped again and noised once, K times less per vehicle than local noise."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from federation import messages, topics
from federation.features import FEATURE_NAMES, VEHICLE_SCHEMA
from federation.messages import GlobalModel, MessageError, Partial, RoundOpen, Update
from federation.privacy import (
    PUBLIC_CLIP_FACTOR,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    NoiseSource,
    SeededNoise,
    credence,
    public_centre,
)
from federation.summary import ModelSummary
from federation.transport import MqttTarget
from federation.whitening import Whitening
from gateway.private import pieces
from gateway.rounds import Round
from gateway.service import Gateway
from gateway.store import SQLiteStore
from gateway.strategy import ExactMerge, make_strategy
from tests import factories

VEHICLES = 10
CENTRE = public_centre(FEATURE_NAMES)
PACK = Whitening(CENTRE).pack
# So little noise that no direction of an aggregate is near what the noise cannot resolve.
QUIET = GaussianMechanism(1000.0, 1e-5, 0.5)
MEAN = ExactMerge()  # the averages these tests are about


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
                      noise=noise, clip_norm=QUIET.clip_norm / PUBLIC_CLIP_FACTOR)
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
    for update in updates:
        gateway.handle(topics.update_topic(update.vehicle_id), messages.encode(update))
    gateway._close_round()
    return gateway


def _noise_of(privacy: str, mechanism: Mechanism, draws: int = 200) -> np.ndarray:
    """What noise leaves in a round's aggregate, in the centre's whitened coordinates."""
    exact = [_update(i, mechanism, privacy, NoNoise()) for i in range(VEHICLES)]
    clean = PACK(pieces(exact, CENTRE, NoNoise(), MEAN, mechanism.clip_norm)[0].summary)
    noise = SeededNoise(11)
    found = []
    for _ in range(draws):
        updates = [_update(i, mechanism, privacy, noise) for i in range(VEHICLES)]
        made = pieces(updates, CENTRE, noise, MEAN, mechanism.clip_norm)
        found.append(PACK(made[0].summary) - clean)
    return np.array(found).ravel()


@pytest.mark.parametrize("mechanism", [replace(QUIET, epsilon=300.0),
                                       LaplaceMechanism(300.0, 1e-5, 0.5)],
                         ids=["gaussian", "laplace"])
def test_central_noise_is_k_times_smaller_per_vehicle_and_sqrt_k_below_local(mechanism):
    central, local = _noise_of("central", mechanism), _noise_of("local", mechanism)

    # Fixed seeds; 10,800 draws each, so each standard deviation is within 4 %.
    assert central.std() == pytest.approx(mechanism.noise_std / VEHICLES, rel=0.04)
    assert local.std() == pytest.approx(mechanism.noise_std / math.sqrt(VEHICLES), rel=0.04)


def test_a_round_of_central_updates_is_one_aggregate_of_every_vehicle():
    gateway = _close_round([_update(i, QUIET, "central", SeededNoise(4))
                            for i in range(VEHICLES)], SeededNoise(4))

    assert gateway.model is not None
    assert gateway.model.participants == VEHICLES
    # Its readings, shrunk by its little noise (federation.privacy.credence).
    assert gateway.model.summary.n == pytest.approx(
        VEHICLES * 60 * credence(QUIET.noise_std / VEHICLES), rel=1e-9)
    assert 0.99 * VEHICLES * 60 < gateway.model.summary.n < VEHICLES * 60
    # Relative to the aggregate's narrowest spread, which is narrower than the public centre's.
    assert QUIET.noise_std / VEHICLES < gateway.model.noise_std < 0.01


def test_the_gateway_clips_again_so_an_unclipped_central_update_moves_nothing_more():
    honest = [_update(i, QUIET, "central", NoNoise()) for i in range(VEHICLES - 1)]
    d = len(FEATURE_NAMES)
    huge = ModelSummary(FEATURE_NAMES, 60.0, np.full(d, 1e5), np.eye(d) * 1e5)
    cheat = replace(honest[0], vehicle_id=f"veh-{VEHICLES:04d}", summary=huge)

    aggregate = pieces([*honest, cheat], CENTRE, NoNoise(), clip_norm=QUIET.clip_norm)[0].summary

    honest_part = sum(PACK(u.summary) for u in honest) / VEHICLES
    assert np.linalg.norm(PACK(aggregate) - honest_part) == pytest.approx(
        QUIET.clip_norm / VEHICLES, rel=1e-6)


def test_the_gateway_clips_at_its_own_norm_whatever_an_update_declares():
    honest = [_update(i, QUIET, "central", NoNoise()) for i in range(VEHICLES - 1)]
    d = len(FEATURE_NAMES)
    huge = ModelSummary(FEATURE_NAMES, 60.0, np.full(d, 1e5), np.eye(d) * 1e5)
    cheat = replace(honest[0], vehicle_id=f"veh-{VEHICLES:04d}", summary=huge, clip_norm=1e5)

    aggregate = pieces([*honest, cheat], CENTRE, NoNoise(), clip_norm=QUIET.clip_norm)

    assert len(aggregate) == 1  # one group: the declared clip norm does not split it
    honest_part = sum(PACK(u.summary) for u in honest) / VEHICLES
    assert np.linalg.norm(PACK(aggregate[0].summary) - honest_part) == pytest.approx(
        QUIET.clip_norm / VEHICLES, rel=1e-6)


def test_local_releases_average_to_the_pooled_model_of_their_vehicles():
    updates = [_update(i, QUIET, "local", NoNoise()) for i in range(VEHICLES)]

    pooled = pieces(updates, CENTRE, NoNoise(), MEAN, QUIET.clip_norm)[0].summary

    assert np.allclose(PACK(pooled), np.mean([PACK(u.summary) for u in updates], axis=0))
    noise_std = QUIET.noise_std / math.sqrt(VEHICLES)  # declared by each, averaged
    assert pooled.n == pytest.approx(VEHICLES * 60 * credence(noise_std), rel=1e-9)


def test_a_central_update_without_usable_parameters_is_refused():
    update = _update(1, GaussianMechanism(1.0, 1e-5, 0.5), "central", NoNoise())

    with pytest.raises(MessageError, match="central-privacy update needs"):
        messages.decode(Update, messages.encode(replace(update, clip_norm=0.0)))


def test_a_round_of_one_noisy_release_barely_moves_a_model_of_many_readings():
    noisy = GaussianMechanism(0.5, 1e-5, 4.0)  # one vehicle's noise: some 40 times its spread
    fleet = pieces([_update(i, QUIET, "central", NoNoise()) for i in range(VEHICLES)], CENTRE,
                   NoNoise())[0].summary.weighted(1e6)
    previous = messages.GlobalModel(3, 3, VEHICLES, fleet, 0.0, 0.01, VEHICLE_SCHEMA.digest)
    lonely = Round(messages.RoundOpen(4, 0.0, 30.0, 1, 3))
    late = replace(_update(0, noisy, "central", NoNoise()), round=4, base_version=3,
                   summary=factories.summary(rows=2700, seed=99))
    assert lonely.offer(late.vehicle_id, late) is None

    merged = lonely.merge(previous, ExactMerge(), VEHICLE_SCHEMA, 1.0, SeededNoise(5))

    spreads = Whitening(fleet).spreads(merged.summary)  # each direction's, relative to before
    assert np.all((spreads > 0.99) & (spreads < 1.01)), spreads
    assert merged.summary.n < 1e6 + 27  # its 2,700 readings count for about 1 %
    assert merged.noise_std < 0.02


def _mixed_round(prepared_about: GlobalModel | str | None) -> Round:
    """A round of central, local and exact updates, one of them then held by a partial;
    packed as they arrive about ``prepared_about``'s centre, unless it is ``"unprepared"``."""
    current = Round(RoundOpen(1, 0.0, 30.0, 1, 0))
    if prepared_about != "unprepared":
        current.prepare(prepared_about, make_strategy(), VEHICLE_SCHEMA)  # type: ignore[arg-type]
    for i in range(VEHICLES):
        privacy = ("central", "local", "off")[i % 3]
        update = _update(i, QUIET, privacy, SeededNoise(i))
        if privacy == "off":
            update = replace(update, summary=factories.summary(rows=60, seed=i), noise_std=0.0)
        current.offer(update.vehicle_id, update)
    current.add_partial(Partial("worker-1", 1, 0, ("veh-0004",), factories.summary(), 0.0))
    return current


@pytest.mark.parametrize("previous", [None, factories.summary(rows=500, seed=99)],
                         ids=["public-centre", "global-model"])
def test_a_round_packed_as_its_updates_arrive_merges_as_one_packed_at_its_close(
        monkeypatch, previous):
    monkeypatch.setattr("gateway.private.PACK_BLOCK", 3)  # several blocks, and a remainder
    model = previous and GlobalModel(1, 1, 5, previous, 0.0)

    packed = _mixed_round(model).merge(model, make_strategy(), VEHICLE_SCHEMA, 1.0,
                                       SeededNoise(5))
    unpacked = _mixed_round("unprepared").merge(model, make_strategy(), VEHICLE_SCHEMA, 1.0,
                                                SeededNoise(5))

    assert packed.participants == unpacked.participants == VEHICLES
    assert packed.summary.n == pytest.approx(unpacked.summary.n, rel=1e-12)
    np.testing.assert_allclose(packed.summary.mean, unpacked.summary.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(packed.summary.cov, unpacked.summary.cov, rtol=0, atol=1e-12)


def test_a_round_packed_about_another_centre_is_packed_again_at_its_close():
    model = GlobalModel(1, 1, 5, factories.summary(rows=500, seed=99), 0.0)

    stale = _mixed_round(None).merge(model, make_strategy(), VEHICLE_SCHEMA, 1.0, SeededNoise(5))
    fresh = _mixed_round(model).merge(model, make_strategy(), VEHICLE_SCHEMA, 1.0, SeededNoise(5))

    np.testing.assert_allclose(stale.summary.cov, fresh.summary.cov, rtol=0, atol=1e-12)
