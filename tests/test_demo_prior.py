"""The demo's default privacy, over a real Mosquitto with short rounds: once its vehicles have
made the releases their budget pays for (within 45 simulated minutes), every vehicle holds a
private fleet model that it counts for readings."""

from __future__ import annotations

import threading
import time

import pytest

from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from federation.transport import parse_mqtt_url
from fedfleet import commands
from fedfleet.config import resolve
from gateway.store import SQLiteStore
from tests.servers import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RELEASES = 3  # at 300, 900 and 2,700 readings: 22.5 s of wall time at the demo's speedup of 120


def test_the_demos_default_privacy_gives_every_vehicle_a_usable_fleet_model_in_minutes(tmp_path):
    settings = resolve("demo", {"round_seconds": 1.0, "seed": 0})
    assert (settings["privacy"], settings["epsilon_budget"]) == ("central", 8.0)  # the defaults
    vehicles = commands._vehicles(settings, time.time(), tmp_path / "ledgers")
    store = SQLiteStore(tmp_path / "gw.db")
    stop = threading.Event()
    with Mosquitto() as broker:
        target = parse_mqtt_url(broker.url)
        gateway = commands._gateway(settings, target, store, observer=lambda event: None)
        thread = threading.Thread(target=gateway.run, args=(stop,))
        thread.start()
        threading.Thread(target=_stop_after_the_releases, args=(vehicles, stop)).start()
        try:
            Fleet(target, vehicles, speedup=settings["speedup"]).run(stop, duration_s=90)
        finally:
            stop.set()
            thread.join(30)
    store.close()

    model = gateway.model
    assert model is not None and model.version >= RELEASES, model
    assert 0 < model.noise_std < 2  # private, and not buried in its noise
    prior_readings = vehicles[0].detector.prior_readings
    for vehicle in vehicles:
        assert vehicle.global_model is not None and vehicle.global_model.version >= 1
        prior, trust = vehicle.detector.prior_for(vehicle.global_model.summary,
                                                  vehicle.global_model.noise_std)
        assert 0.02 < trust < 1.0  # counted, at less than an exact model's weight
        assert prior.n >= 0.02 * prior_readings
        assert vehicle.releases >= RELEASES - 1
    assert sum(v.releases == RELEASES for v in vehicles) >= 0.8 * len(vehicles)


def _stop_after_the_releases(vehicles: list[Vehicle], stop: threading.Event) -> None:
    """Two rounds after most vehicles made their last release (the gateway merges it), stop: a
    vehicle whose fault began early stops learning, and may never reach its last milestone."""
    deadline = time.monotonic() + 60
    while (sum(v.releases >= RELEASES for v in vehicles) < 0.9 * len(vehicles)
           and time.monotonic() < deadline):
        time.sleep(0.2)
    stop.wait(2.5)
    stop.set()
