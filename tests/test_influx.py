"""The InfluxDB store against a real time-series server (victoria-metrics, InfluxDB v2 write
API), read back through the server's export API; and its outbox on its own."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from devices.runners.fleet import Fleet, simulated_vehicles
from federation.features import VEHICLE_SCHEMA
from federation.messages import GlobalModel, Status
from federation.transport import parse_mqtt_url
from gateway.service import Gateway
from gateway.store import RoundRecord, Traffic, raw_reading_bytes
from gateway.store.influx import InfluxSettings, InfluxStore
from gateway.store.outbox import Outbox
from gateway.store.schema import MEASUREMENTS, model_from_fields
from tests import factories
from tests.servers import Mosquitto, VictoriaMetrics

ENV = {"INFLUXDB_V2_ORG": "fleet-org", "INFLUXDB_V2_TOKEN": "test-token"}
Tags = tuple[tuple[str, str], ...]
T = TypeVar("T")


def _store(vm: VictoriaMetrics, tmp_path: Path, clock: Callable[[], float] = time.time,
           query: str = "", retry_interval_s: float = 1.0) -> InfluxStore:
    url = f"influx://127.0.0.1:{vm.port}/fleet?local={tmp_path / 'fleet.db'}{query}"
    return InfluxStore(InfluxSettings.from_url(url, ENV), clock=clock,
                       retry_interval_s=retry_interval_s)


def _points(vm: VictoriaMetrics) -> dict[tuple[str, Tags, int], dict[str, float]]:
    """Every point on the server: (measurement, tags, time in ms) -> its fields."""
    points: dict[tuple[str, Tags, int], dict[str, float]] = defaultdict(dict)
    for series in vm.export():
        tags = dict(series["metric"])
        measurement, field = tags.pop("__name__").split("_", 1)
        for value, ts_ms in zip(series["values"], series["timestamps"], strict=True):
            points[measurement, tuple(sorted(tags.items())), ts_ms][field] = value
    return dict(points)


def _counts(vm: VictoriaMetrics) -> dict[str, int]:
    """Points per measurement: the samples of the field every point of it carries."""
    counts: dict[str, int] = defaultdict(int)
    for series in vm.export():
        measurement, field = series["metric"]["__name__"].split("_", 1)
        if field == next(iter(MEASUREMENTS[measurement].fields)):
            counts[measurement] += len(series["values"])
    return dict(counts)


def _settled(read: Callable[[], T], size: Callable[[T], int], expected: int,
             timeout_s: float = 10.0) -> T:
    """What ``read`` returns once ``size`` of it reaches ``expected``, or at the timeout:
    the server makes a series searchable up to about a second after it took its points."""
    deadline = time.monotonic() + timeout_s
    while size(found := read()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.mark.integration
def test_every_measurement_tag_and_field_reaches_the_server(victoria_metrics, tmp_path):
    received_s = iter([1.7e9 + 10, 1.7e9 + 11, 1.7e9 + 12])
    store = _store(victoria_metrics, tmp_path, clock=lambda: next(received_s))
    model = GlobalModel(4, 7, 3, factories.summary(seed=4), 1.7e9 + 5, 0.0125)
    alert = replace(factories.alert("veh-0002"),
                    sensors=(("coolant_temp_c", 8.5), ("intake_temp_c", -2.25)))
    update = replace(factories.update("veh-0003", 7), noise_std=0.03, epsilon_total=7.0)

    store.record_round(RoundRecord(7, 1.7e9, 1.7e9 + 30.5, 3, 1, True, 4, privacy="secagg"))
    store.record_model(model)
    store.record_alert(alert)                                  # received at +10
    store.record_status(Status("veh-0002", "offline", 99.0))   # +11
    store.record_budget(update)                                # +12
    store.record_rejection(1.7e9 + 20, "not_json", "veh-0009")
    store.record_traffic(1.7e9 + 30, "update", Traffic(12, 9_000, 600))
    assert store.drain(timeout_s=10)
    points = _settled(lambda: _points(victoria_metrics), len, len(MEASUREMENTS))

    ms = lambda offset_s: round((1.7e9 + offset_s) * 1000)  # noqa: E731
    state = points.pop(("model", (("schema_digest", VEHICLE_SCHEMA.digest),), ms(5)))
    expected = {
        ("round", (("privacy", "secagg"),), ms(30.5)): {
            "round": 7, "duration_s": 30.5, "accepted_updates": 3, "rejected_updates": 1,
            "quorum_met": 1, "model_version": 4},
        ("alert", (("subsystem", "cooling"), ("vehicle_id", "veh-0002")), ms(10)): {
            "score": 8.5, "threshold": 6.0, "model_version": 3, "vehicle_ts_s": 1.7e9,
            "z__coolant_temp_c": 8.5, "z__intake_temp_c": -2.25},
        ("status", (("vehicle_id", "veh-0002"),), ms(11)): {
            "online": 0, "vehicle_ts_s": 99.0, "exhausted": 0},
        ("participation", (("vehicle_id", "veh-0003"),), ms(12)): {
            "round": 7, "base_version": 0, "readings": 50, "noise_std": 0.03},
        ("privacy", (("vehicle_id", "veh-0003"),), ms(12)): {
            "epsilon_round": 1.0, "delta_round": 1e-5, "epsilon_spent": 7.0,
            "epsilon_budget": 0.0},
        ("rejection", (("reason", "not_json"),), ms(20)): {"count": 1},
        ("traffic", (("kind", "update"),), ms(30)): {
            "messages": 12, "payload_bytes": 9_000, "readings": 600,
            "raw_stream_bytes": 600 * raw_reading_bytes(VEHICLE_SCHEMA)},
    }
    assert points == expected
    names = VEHICLE_SCHEMA.names
    assert set(state) == set(MEASUREMENTS["model"].fields) | {f"mean__{f}" for f in names} | {
        f"cov__{a}__{b}" for i, a in enumerate(names) for b in names[i:]}
    again = model_from_fields(state, 1.7e9 + 5, VEHICLE_SCHEMA)
    assert (again.version, again.round, again.participants) == (4, 7, 3)
    assert again.summary.n == model.summary.n and again.noise_std == model.noise_std
    np.testing.assert_allclose(again.summary.mean, model.summary.mean, rtol=1e-10)
    np.testing.assert_allclose(again.summary.cov, model.summary.cov, rtol=1e-10, atol=1e-15)
    stats = store.outbox_stats()
    assert (stats.written, stats.write_errors) == (len(MEASUREMENTS), 0)
    store.close()


@pytest.mark.integration
def test_every_tag_and_field_written_is_declared_in_the_schema(victoria_metrics, tmp_path):
    store = _store(victoria_metrics, tmp_path)
    store.record_alert(factories.alert())
    store.record_budget(factories.update())
    store.record_status(Status("veh-0001", "online", 1.0))
    store.drain(timeout_s=10)
    points = _settled(lambda: _points(victoria_metrics), len, 4)

    assert len(points) == 4
    for (measurement, tags, _), fields in points.items():
        spec = MEASUREMENTS[measurement]
        assert tuple(name for name, _ in tags) == tuple(sorted(spec.tags))
        assert all(spec.field_type(field) for field in fields)
    store.close()


class _Run:
    """A gateway writing to InfluxDB and a small fleet, over Mosquitto, on threads."""

    def __init__(self, store: InfluxStore, broker: Mosquitto) -> None:
        target = parse_mqtt_url(broker.url)
        self.gateway = Gateway(target, store, round_seconds=0.5, min_updates=2)
        vehicles = simulated_vehicles(6, seed=3, mechanism=None, fault_fraction=0.5)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.gateway.run, args=(self.stop,)),
            threading.Thread(target=Fleet(target, vehicles, speedup=600).run, args=(self.stop,)),
        ]
        for thread in self.threads:
            thread.start()

    def rounds(self) -> int:
        return self.gateway.round.number - 1 if self.gateway.round else 0

    def wait_for_rounds(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.rounds() < count:
            assert time.monotonic() < deadline, f"fewer than {count} rounds in {timeout_s} s"
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)


@pytest.fixture
def mosquitto_broker() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.mark.integration
def test_an_outage_loses_no_point_and_the_gateway_keeps_federating(
        victoria_metrics, mosquitto_broker, tmp_path):
    store = _store(victoria_metrics, tmp_path, query="&batch_size=50", retry_interval_s=0.2)
    run = _Run(store, mosquitto_broker)
    try:
        run.wait_for_rounds(2, timeout_s=20)
        victoria_metrics.stop()
        before = run.rounds()
        run.wait_for_rounds(before + 4, timeout_s=20)  # the gateway federates on meanwhile
        buffered = store.outbox_stats()
        victoria_metrics.start()
        run.wait_for_rounds(run.rounds() + 1, timeout_s=20)
    finally:
        run.close()
    store.flush()
    assert store.drain(timeout_s=20)
    stats = store.outbox_stats()
    counts = _settled(lambda: _counts(victoria_metrics), lambda c: sum(c.values()), stats.written)

    print(f"\noutage: {buffered.waiting} points waited on disk "
          f"({buffered.write_errors} failed writes); after it, all {stats.written} points "
          f"queued ({stats.queued}) are on the server: {counts}")
    assert buffered.waiting > 0 and buffered.write_errors > 0
    assert stats.waiting == 0 and stats.written == stats.queued
    assert stats.dropped_full == stats.dropped_malformed == 0
    assert sum(counts.values()) == stats.written
    local_rounds = store.rounds(limit=1000)
    assert counts["round"] == len(local_rounds) >= 7
    accepted = sum(len(v) for v in store.participants(limit=1000).values())  # the open round too
    assert counts["participation"] == counts["privacy"] == accepted
    assert counts["model"] == sum(r.quorum_met for r in local_rounds)
    assert counts.get("alert", 0) == len(store.alerts(limit=10_000))
    store.close()


@pytest.mark.integration
def test_points_still_on_disk_at_shutdown_are_written_at_the_next_start(
        victoria_metrics, tmp_path, caplog):
    victoria_metrics.stop()
    first = _store(victoria_metrics, tmp_path)
    for number in range(1, 4):
        first.record_round(RoundRecord(number, 1.7e9 + number, 1.7e9 + number + 1, 2, 0,
                                       True, number))
    closing = time.monotonic()
    first.close()  # does not wait out its timeout for a server that is away
    assert time.monotonic() - closing < 5
    victoria_metrics.start()

    with caplog.at_level(logging.INFO, logger="gateway.store.outbox"):
        second = _store(victoria_metrics, tmp_path)
        assert second.drain(timeout_s=10)

    assert _settled(lambda: _counts(victoria_metrics), len, 1) == {"round": 3}
    assert "3 points from an earlier run wait" in caplog.text
    assert [r.round for r in second.rounds()] == [3, 2, 1]
    second.close()


def test_write_errors_are_logged_and_counted_while_points_wait(tmp_path, caplog):
    url = f"influx://127.0.0.1:9/fleet?local={tmp_path / 'fleet.db'}"  # nothing listens
    store = InfluxStore(InfluxSettings.from_url(url, ENV))

    with caplog.at_level(logging.ERROR, logger="gateway.store.outbox"):
        store.record_status(Status("veh-0001", "online", 1.0))
        assert not store.drain(timeout_s=1.0)

    stats = store.outbox_stats()
    assert stats.write_errors >= 1 and stats.waiting == 1
    assert "Connection refused" in stats.last_error or "NewConnectionError" in stats.last_error
    assert "cannot write to InfluxDB" in caplog.text and "1 points wait on disk" in caplog.text
    store.close(timeout_s=0.1)


class _Refusing(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_a_batch_with_a_malformed_point_is_split_and_only_that_point_dropped():
    written: list[str] = []

    def send(lines: Sequence[str]) -> None:
        if any("bad" in line for line in lines):
            raise _Refusing(400)
        written.extend(lines)

    outbox = Outbox(":memory:", send, batch_size=8, flush_interval_s=0.01)
    lines = [f"m v={i}i {i}" for i in range(7)] + ["m bad=x 7"]
    outbox.put(lines)
    assert outbox.drain(timeout_s=5)

    assert written == lines[:7]
    assert (outbox.stats().written, outbox.stats().dropped_malformed) == (7, 1)
    outbox.close()


def test_a_full_outbox_drops_its_oldest_points_and_counts_them(caplog):
    down = threading.Event()
    written: list[str] = []

    def send(lines: Sequence[str]) -> None:
        if not down.is_set():
            raise ConnectionRefusedError("down")
        written.extend(lines)

    outbox = Outbox(":memory:", send, batch_size=2, max_points=5, flush_interval_s=0.01,
                    retry_interval_s=0.01, max_retry_interval_s=0.05)
    with caplog.at_level(logging.ERROR, logger="gateway.store.outbox"):
        for i in range(8):
            outbox.put([f"m v={i}i {i}"])
    down.set()
    assert outbox.drain(timeout_s=5)

    assert written == [f"m v={i}i {i}" for i in range(3, 8)]
    assert outbox.stats().dropped_full == 3
    assert "outbox full (5 points): dropped the 1 oldest" in caplog.text
    outbox.close()


@pytest.mark.parametrize(("url", "environ", "expected"), [
    ("influx://db:8086/fleet?org=acme", {"INFLUXDB_V2_TOKEN": "t"},
     ("http://db:8086", "acme", "fleet")),
    ("influxs://db:8086", ENV, ("https://db:8086", "fleet-org", "fedfleet")),
    ("influx:///fleet", ENV | {"INFLUXDB_V2_URL": "https://cloud.example/"},
     ("https://cloud.example", "fleet-org", "fleet")),
])
def test_the_store_url_and_influxdb_variables_name_server_org_and_bucket(
        url: str, environ: dict[str, str], expected: tuple[str, str, str]):
    settings = InfluxSettings.from_url(url, environ)

    assert (settings.server_url, settings.org, settings.bucket) == expected
    assert settings.token == environ["INFLUXDB_V2_TOKEN"]


@pytest.mark.parametrize(("url", "environ", "message"), [
    ("influx://db:8086/fleet", {"INFLUXDB_V2_ORG": "acme"}, "set INFLUXDB_V2_TOKEN"),
    ("influx://db:8086/fleet?bucket=x", ENV, "unknown option(s) bucket"),
    ("influx://db:8086/fleet?batch_size=many", ENV, "must be integers"),
])
def test_an_incomplete_store_url_says_what_is_missing(
        url: str, environ: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        InfluxSettings.from_url(url, environ)
