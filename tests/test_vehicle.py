"""A vehicle's behaviour without a broker: rounds, updates, privacy, global model, alerts."""

from __future__ import annotations

import numpy as np
import pytest

from devices.onboard.detector import FleetGaussian
from devices.onboard.vehicle import Vehicle
from devices.sources import Reading, SensorSource
from federation import messages, topics
from federation.accounting import epsilon_spent
from federation.features import FEATURE_NAMES, FEATURES
from federation.messages import GlobalModel, RoundOpen, Update
from federation.privacy import GaussianMechanism, SeededNoise
from federation.summary import ModelSummary


class Steady(SensorSource):
    """Mid-range readings with a little noise; ``hot`` adds to the coolant."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.t = 0.0
        self.hot = 0.0

    def read(self) -> Reading:
        self.t += 1.0
        values = {f.name: f.low + (f.high - f.low) * (0.5 + 0.01 * self.rng.standard_normal())
                  for f in FEATURES}
        values["coolant_temp_c"] += self.hot
        return Reading(self.t, values)


def _vehicle(mechanism: GaussianMechanism | None = None, now: float = 0.0,
             **kwargs: float) -> Vehicle:
    return Vehicle("veh-0001", Steady(), mechanism=mechanism, noise=SeededNoise(0),
                   clock=lambda: now, **kwargs)  # type: ignore[arg-type]


def _open_round(vehicle: Vehicle, number: int, version: int = 0) -> None:
    info = RoundOpen(number, 0.0, 100.0, 1, version)
    vehicle.on_message(topics.ROUND_TOPIC, messages.encode(info))


def _updates(out) -> list[Update]:
    return [messages.decode(Update, o.payload) for o in out if o.topic.endswith("/update")]


def test_a_vehicle_sends_one_update_per_round_with_what_it_learned_since_the_last():
    vehicle = _vehicle()
    _open_round(vehicle, 1)

    sent = [u for _ in range(200) for u in _updates(vehicle.step())]
    _open_round(vehicle, 2)
    sent += [u for _ in range(50) for u in _updates(vehicle.step())]

    assert [u.round for u in sent] == [1, 2]
    assert sent[0].summary.n == vehicle.min_readings_per_update
    assert sent[0].summary.n + sent[1].summary.n + vehicle.detector.recent_readings == 250
    assert sent[0].epsilon == 0.0


def test_no_update_is_sent_after_the_rounds_deadline():
    vehicle = _vehicle(now=500.0)
    _open_round(vehicle, 1)

    sent = [u for _ in range(100) for u in _updates(vehicle.step())]

    assert sent == []


def test_a_private_update_spends_its_epsilon_and_differs_from_the_exact_summary():
    mechanism = GaussianMechanism(epsilon=2.0, delta=1e-6, clip_norm=0.1)
    vehicle = _vehicle(mechanism, first_release_readings=30, release_growth=1.0)
    _open_round(vehicle, 1)
    sent = [u for _ in range(40) for u in _updates(vehicle.step())]
    _open_round(vehicle, 2)
    sent += [u for _ in range(40) for u in _updates(vehicle.step())]

    assert [u.epsilon for u in sent] == [2.0, 2.0]
    assert sent[-1].epsilon_total == epsilon_spent([mechanism.spend] * 2, 1e-6) < 4.0
    assert not np.allclose(sent[0].summary.mean, vehicle.detector._history.mean)


def test_private_releases_summarise_all_learned_and_come_less_often_as_it_grows():
    vehicle = _vehicle(GaussianMechanism(epsilon=2.0, delta=1e-6, clip_norm=0.1),
                       first_release_readings=30, release_growth=2.0)
    sent = []
    for number in range(1, 8):
        _open_round(vehicle, number)
        sent += [u for _ in range(40) for u in _updates(vehicle.step())]

    # Releases once 30, 60, 120 and 240 readings are learned, each of all of them.
    assert [u.round for u in sent] == [1, 2, 3, 6]
    assert [u.summary.n for u in sent] == [30, 60, 120, 240]
    assert [u.replaces_readings for u in sent] == [0, 30, 60, 120]


def test_a_new_vehicle_uses_the_global_model_from_its_first_reading():
    fleet_data = Steady(seed=5)
    rows = np.array([[f.scale(fleet_data.read().values[f.name]) for f in FEATURES]
                     for _ in range(4000)])
    model = GlobalModel(7, 7, 30, ModelSummary.from_array(FEATURE_NAMES, rows), 0.0)
    vehicle = _vehicle()
    vehicle.on_message(topics.MODEL_TOPIC, messages.encode(model))
    vehicle.source.hot = 20.0

    vehicle.step()

    assert vehicle.model_version == 7
    residuals = vehicle.detector.residuals()
    assert max(residuals, key=lambda name: abs(residuals[name])) == "coolant_temp_c"
    assert residuals["coolant_temp_c"] > 10


def test_an_overheating_vehicle_raises_a_cooling_alert():
    vehicle = _vehicle()
    for _ in range(vehicle.detector.min_readings + 100):
        vehicle.step()
    vehicle.source.hot = 15.0

    out = [o for _ in range(300) for o in vehicle.step()]

    alerts = [messages.decode(messages.Alert, o.payload) for o in out if "/alert" in o.topic]
    assert len(alerts) == 1
    assert alerts[0].subsystem == "cooling"
    assert alerts[0].sensors[0][0] == "coolant_temp_c"


def test_invalid_broker_messages_are_counted_and_change_nothing():
    vehicle = _vehicle()

    vehicle.on_message(topics.MODEL_TOPIC, b'{"v":1,"version":"x"}')
    vehicle.on_message(topics.ROUND_TOPIC, b"\x00")

    assert vehicle.rejected == {"wrong_type": 1, "not_json": 1}
    assert vehicle.global_model is None and vehicle.round is None


def test_an_older_global_model_does_not_replace_a_newer_one():
    vehicle = _vehicle()
    summary = ModelSummary.from_array(FEATURE_NAMES, np.full((10, 9), 0.5))
    vehicle.on_message(topics.MODEL_TOPIC, messages.encode(GlobalModel(5, 5, 1, summary, 0.0)))

    vehicle.on_message(topics.MODEL_TOPIC, messages.encode(GlobalModel(4, 4, 1, summary, 0.0)))

    assert vehicle.model_version == 5


def test_a_global_model_counts_for_less_the_more_privacy_noise_it_carries():
    rows = np.full((4000, len(FEATURES)), 0.5)
    counted = []
    for noise_std in (0.0, 0.3, 3.0, 1e12):
        vehicle = _vehicle()
        vehicle.on_message(topics.MODEL_TOPIC, messages.encode(GlobalModel(
            3, 3, 30, ModelSummary.from_array(FEATURE_NAMES, rows), 0.0, noise_std=noise_std)))
        counted.append(vehicle.detector.model().n)

    assert vehicle.model_version == 3
    assert counted[0] == vehicle.detector.prior_readings
    assert counted[1] == pytest.approx(counted[0] / 2)  # the preset's noise scale: half
    assert counted[0] > counted[1] > counted[2] > counted[3]
    assert counted[3] < 1e-15


def test_nan_and_infinite_values_are_dropped_counted_and_never_learned():
    vehicle = _vehicle()
    for _ in range(100):
        vehicle.step()
    learned = vehicle.detector.recent_readings
    vehicle.source.read = lambda: Reading(999.0, dict.fromkeys(FEATURE_NAMES, float("nan")) | {
        "battery_v": float("inf")})

    vehicle.step()

    assert vehicle.rejected == {"not_finite": 1}
    assert vehicle.detector.recent_readings == learned
    assert np.isfinite(vehicle.detector.model().cov).all()


def _fleet_model(version: int = 7) -> GlobalModel:
    """Five healthy vehicles whose coolant runs 2 degrees apart from one another."""
    rows = []
    for offset in (-4.0, -2.0, 0.0, 2.0, 4.0):
        fleet_data = Steady(seed=5)
        fleet_data.hot = offset
        rows += [[f.scale(fleet_data.read().values[f.name]) for f in FEATURES]
                 for _ in range(800)]
    return GlobalModel(version, version, 30, ModelSummary.from_array(FEATURE_NAMES, np.array(rows)),
                       0.0)


def _unlike_the_fleet(burn_in_readings: int, own_mean_after: int = 0, hot: float = 3.0) -> Vehicle:
    """A vehicle whose coolant runs ``hot`` degrees above the fleet's, after 900 readings."""
    vehicle = Vehicle("veh-0002", Steady(seed=2), mechanism=None, clock=lambda: 0.0,
                      burn_in_readings=burn_in_readings,
                      detector=FleetGaussian(own_mean_after=own_mean_after))
    vehicle.on_message(topics.MODEL_TOPIC, messages.encode(_fleet_model()))
    vehicle.source.hot = hot
    for _ in range(900):
        vehicle.step()
    return vehicle


def test_a_healthy_vehicle_unlike_the_fleet_learns_its_own_normal_during_burn_in():
    settled = _unlike_the_fleet(burn_in_readings=600, hot=8.0)
    stuck = _unlike_the_fleet(burn_in_readings=0, hot=8.0)

    prior = settled.detector.prior_readings
    assert settled.detector.model().n == prior + 600
    assert stuck.detector.model().n < prior + 60  # suspicious within its first minute
    assert settled.policy.level < 0.9 * stuck.policy.level


def test_centred_on_its_own_mean_a_vehicle_unlike_the_fleet_is_not_suspicious():
    centred = _unlike_the_fleet(burn_in_readings=150, own_mean_after=60, hot=5.5)
    stuck = _unlike_the_fleet(burn_in_readings=150, hot=5.5)

    prior = centred.detector.prior_readings
    assert centred.detector.model().n > prior + 850  # it went on learning its own normal
    assert stuck.detector.model().n == prior + 150  # suspicious from its burn-in's end on
    assert centred.policy.level < 0.5 * stuck.policy.level


def test_a_vehicle_further_from_the_fleet_than_its_vehicles_differ_is_judged_by_the_fleet():
    # A radiator failing when the vehicle joins: 15 degrees above the hottest of the fleet.
    arrived_worn = _unlike_the_fleet(burn_in_readings=150, own_mean_after=60, hot=19.0)
    healthy = _unlike_the_fleet(burn_in_readings=150, own_mean_after=60, hot=3.0)

    assert arrived_worn.detector.model().n == arrived_worn.detector.prior_readings + 150
    assert arrived_worn.policy.level > 4 * healthy.policy.level


@pytest.mark.parametrize(("stagger", "due_s"), [(0.0, 0.0), (0.5, 0.0), (0.5, 60.0)])
def test_vehicles_that_owe_an_update_at_once_spread_it_over_their_staggered_share_of_the_round(
        stagger, due_s):
    now = [0.0]
    vehicles = [Vehicle(f"veh-{i:04d}", Steady(i), mechanism=None, stagger=stagger,
                        clock=lambda: now[0]) for i in range(40)]
    for vehicle in vehicles:
        _open_round(vehicle, 1)  # from 0 s to 100 s
        for _ in range(vehicle.min_readings_per_update - 2):
            vehicle.step()
    now[0] = due_s
    for vehicle in vehicles:  # the update comes due at due_s
        vehicle.step()
    sent_at: dict[str, float] = {}

    for second in range(int(due_s), 100):
        now[0] = float(second)
        for vehicle in vehicles:
            if _updates(vehicle.step()):
                sent_at[vehicle.vehicle_id] = now[0]

    assert len(sent_at) == len(vehicles)
    assert max(sent_at.values()) < due_s + (100 - due_s) * stagger + 1
    assert len(set(sent_at.values())) >= (10 if stagger else 1)


@pytest.mark.parametrize(("stagger", "due_s", "sent_in"), [
    (0.0, 85.0, 1), (0.0, 95.0, 2), (0.5, 70.0, 1), (0.5, 92.0, 2)])
def test_an_update_that_would_leave_under_a_tenth_of_its_round_waits_for_the_next_one(
        stagger, due_s, sent_in):
    # Sent that close to the deadline, it would reach the gateway late and be refused.
    now = [0.0]
    vehicle = Vehicle("veh-0007", Steady(), mechanism=None, stagger=stagger,
                      clock=lambda: now[0])
    _open_round(vehicle, 1)  # from 0 s to 100 s
    for _ in range(vehicle.min_readings_per_update - 1):
        vehicle.step()
    sent: list[tuple[float, int]] = []
    for second in range(int(due_s), 100):
        now[0] = float(second)
        sent += [(now[0], u.round) for u in _updates(vehicle.step())]
    vehicle.on_message(topics.ROUND_TOPIC, messages.encode(RoundOpen(2, 100.0, 200.0, 1, 0)))
    for second in range(100, 200):
        now[0] = float(second)
        sent += [(now[0], u.round) for u in _updates(vehicle.step())]

    assert [number for _, number in sent][:1] == [sent_in]
    assert sent[0][0] <= 100.0 * sent_in - 10.0  # a tenth of its round still to go


@pytest.mark.parametrize("stagger", [0.0, 0.5])
def test_staggered_vehicles_adopt_one_model_over_ten_readings_rather_than_on_one(stagger):
    vehicles = [Vehicle(f"veh-{i:04d}", Steady(i), mechanism=None, stagger=stagger)
                for i in range(60)]
    for vehicle in vehicles:
        for _ in range(200):  # past the first refresh: each now at its own place
            vehicle.step()
    model = _fleet_model()

    for vehicle in vehicles:
        vehicle.on_message(topics.MODEL_TOPIC, messages.encode(model))
    waits = [vehicle.detector.readings_to_refresh for vehicle in vehicles]
    for vehicle in vehicles:
        for _ in range(10):
            vehicle.step()
    regular = {vehicle.detector.readings_to_refresh for vehicle in vehicles}

    assert max(waits) < 10
    assert len(set(waits)) == (10 if stagger else 1)
    assert len(regular) > (30 if stagger else 0)  # the period restarts at each one's place
    assert all(v.detector.model().n >= v.detector.prior_readings for v in vehicles)


def test_a_stagger_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="stagger"):
        _vehicle(stagger=1.0)
