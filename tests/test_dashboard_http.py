"""The dashboard's HTTP side: JSON figures, health, the live stream, bad requests, shutdown."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from federation.messages import GlobalModel, Status
from gateway.dashboard import Dashboard, DashboardError
from gateway.store import RoundRecord, SQLiteStore, Store, StoreError, Traffic, raw_reading_bytes
from gateway.store.influx import InfluxSettings, InfluxStore
from tests import factories
from tests.servers import HOST, free_port


def _fill(filled: Store) -> None:
    filled.record_status(Status("veh-0001", "online", 1.0))
    filled.record_status(Status("veh-0002", "offline", 2.0))
    for ts in (1.0, 2.0):
        filled.record_alert(replace(factories.alert("veh-0001"), ts=ts))
    for number in (1, 2):
        filled.record_budget(replace(factories.update("veh-0001", number), epsilon_total=number))
        filled.record_round(RoundRecord(number, 0.0, 1.0, 1, 0, True, number))
    filled.record_model(GlobalModel(2, 2, 1, factories.summary(), 5.0, 0.01))
    filled.record_traffic(1.0, "update", Traffic(2, 4_000, 1_000))
    filled.record_rejection(1.0, "not_json", None)


@pytest.fixture
def store() -> Iterator[SQLiteStore]:
    filled = SQLiteStore(":memory:")
    _fill(filled)
    yield filled
    filled.close()


@pytest.fixture
def dashboard(store: SQLiteStore) -> Iterator[Dashboard]:
    with Dashboard(store, port=0, refresh_seconds=0.1) as serving:
        yield serving


def _get(dashboard: Dashboard, path: str, method: str = "GET",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    port = int(dashboard.url.rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def _json(dashboard: Dashboard, path: str) -> Any:
    status, headers, body = _get(dashboard, path)
    assert (status, headers["Content-Type"]) == (200, "application/json"), body
    return json.loads(body)


@pytest.fixture(params=["sqlite", "influx"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend the gateway can be configured with, filled the same way."""
    if request.param == "sqlite":
        backend: Store = SQLiteStore(tmp_path / "store.db")
    else:
        server = request.getfixturevalue("victoria_metrics")
        backend = InfluxStore(InfluxSettings.from_url(
            f"influx://127.0.0.1:{server.port}/fleet?local={tmp_path / 'local.db'}",
            {"INFLUXDB_V2_ORG": "o", "INFLUXDB_V2_TOKEN": "t"}))
    _fill(backend)
    yield backend
    backend.close()


def test_the_api_serves_every_figure_from_whichever_store_is_configured(any_store):
    with Dashboard(any_store, port=0) as dashboard:
        _the_api_serves_every_figure(dashboard)


def _the_api_serves_every_figure(dashboard: Dashboard) -> None:
    fleet = _json(dashboard, "/api/vehicles")
    alerts = _json(dashboard, "/api/alerts?limit=1")
    rounds = _json(dashboard, "/api/rounds")
    traffic = _json(dashboard, "/api/traffic")

    assert [(v["vehicle_id"], v["health"]) for v in fleet["vehicles"]] == [
        ("veh-0001", "alert"), ("veh-0002", "offline")]
    assert fleet["health"] == {"alert": 1, "watch": 0, "ok": 0, "offline": 1}
    assert fleet["by_subsystem"] == {"cooling": 1}
    assert [(a["vehicle_id"], a["subsystem"], a["ts"]) for a in alerts] == [
        ("veh-0001", "cooling", 2.0)]
    assert [(r["round"], r["participants"]) for r in rounds] == [
        (2, ["veh-0001"]), (1, ["veh-0001"])]
    assert _json(dashboard, "/api/model")["version"] == 2
    assert _json(dashboard, "/api/privacy")["epsilon_spent"] == {"veh-0001": 2.0}
    assert traffic["raw_bytes"] == 1_000 * raw_reading_bytes()
    assert traffic["saved_bytes"] == 1_000 * raw_reading_bytes() - 4_000
    assert _json(dashboard, "/api/rejections") == {"not_json": 1}
    assert set(_json(dashboard, "/api/snapshot")) == {
        "fleet", "alerts", "rounds", "model", "privacy", "traffic", "rejections"}


def test_healthz_says_whether_the_store_answers(dashboard, store, monkeypatch):
    assert _json(dashboard, "/healthz") == {"status": "ok", "store": "SQLiteStore"}

    def fail(limit: int = 100) -> list[RoundRecord]:
        raise StoreError("the disk has gone")

    monkeypatch.setattr(store, "rounds", fail)
    health = _get(dashboard, "/healthz")
    figures = _get(dashboard, "/api/rounds")

    assert health[0] == 503 and json.loads(health[2]) == {
        "status": "failing", "error": "the disk has gone"}
    assert figures[0] == 500
    assert _json(dashboard, "/api/model")["version"] == 2


def test_the_page_its_files_and_plotly_from_site_packages_are_served(dashboard):
    page = _get(dashboard, "/")
    script = _get(dashboard, "/static/dashboard.js")
    plotly = _get(dashboard, "/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})

    assert page[0] == 200 and b"/static/plotly.min.js" in page[2]
    assert script[0] == 200 and script[1]["Content-Type"].startswith("text/javascript")
    assert plotly[0] == 200 and plotly[1]["Content-Encoding"] == "gzip"
    assert len(plotly[2]) > 500_000


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/static/../server.py", 404),
        ("GET", "/static/figures.py", 404),
        ("GET", "/api/alerts?limit=many", 400),
        ("GET", "/api/rounds?limit=0", 400),
        ("GET", "/api/rounds?limit=100000", 400),
        ("POST", "/api/vehicles", 405),
        ("DELETE", "/", 405),
    ],
)
def test_a_bad_request_gets_a_clear_status_and_the_server_keeps_serving(dashboard, method, path,
                                                                       status):
    answer = _get(dashboard, path, method)

    assert answer[0] == status
    assert _json(dashboard, "/healthz")["status"] == "ok"


def test_garbage_on_the_socket_does_not_stop_the_server(dashboard):
    port = int(dashboard.url.rsplit(":", 1)[1].strip("/"))
    for garbage, code in ((b"\x00\xff\xfe\r\n\r\n", b"400"),
                          (b"GET " + b"/a" * 40_000 + b" HTTP/1.1\r\n\r\n", b"414"),
                          (b"GET / HTTP/9.9\r\n\r\n", b"505")):
        with socket.create_connection((HOST, port), timeout=5) as raw:
            raw.sendall(garbage)
            assert code in raw.recv(1000)

    assert _json(dashboard, "/healthz")["status"] == "ok"


def _events(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    port = int(dashboard.url.rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    connection.request("GET", "/api/events")
    reply = connection.getresponse()
    assert reply.getheader("Content-Type") == "text/event-stream"
    while line := reply.readline():
        if line.startswith(b"data: "):
            yield json.loads(line.removeprefix(b"data: "))


def test_the_live_stream_pushes_a_snapshot_when_a_figure_changes(dashboard, store):
    events = _events(dashboard)
    first = next(events)

    store.record_alert(factories.alert("veh-0007"))
    second = next(events)

    assert len(second["alerts"]) == len(first["alerts"]) + 1
    assert second["alerts"][0]["vehicle_id"] == "veh-0007"


def test_stop_ends_open_streams_and_frees_the_port(store):
    dashboard = Dashboard(store, port=0, refresh_seconds=0.1).start()
    streams = [_events(dashboard) for _ in range(3)]
    for stream in streams:
        next(stream)
    before = threading.active_count()

    started = time.monotonic()
    dashboard.stop()

    assert time.monotonic() - started < 3
    for stream in streams:
        assert list(stream) == []  # each stream ended
    deadline = time.monotonic() + 3
    while threading.active_count() > before - 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before - 4  # the server and its three stream threads
    port = int(dashboard.url.rsplit(":", 1)[1].strip("/"))
    Dashboard(store, port=port).stop()


def test_a_port_already_taken_is_a_clear_error(store):
    with socket.socket() as taken:
        taken.bind((HOST, free_port()))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(DashboardError, match=f"port {port} is already in use; choose"):
            Dashboard(store, port=port)
