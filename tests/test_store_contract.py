"""One contract, one suite: every store backend passes the same checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from federation import messages
from federation.messages import GlobalModel, RoundOpen, Status
from gateway.store import RoundRecord, SQLiteStore, Store, Traffic
from gateway.store.influx import InfluxSettings, InfluxStore
from tests import factories


def _influx(request: pytest.FixtureRequest, tmp: Path) -> Store:
    server = request.getfixturevalue("victoria_metrics")
    url = f"influx://127.0.0.1:{server.port}/fleet?local={tmp / 'local.db'}"
    return InfluxStore(InfluxSettings.from_url(url, {"INFLUXDB_V2_ORG": "o",
                                                     "INFLUXDB_V2_TOKEN": "t"}))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite-file": lambda request, tmp: SQLiteStore(tmp / "store.db"),
    "sqlite-memory": lambda request, tmp: SQLiteStore(":memory:"),
    "influx": _influx,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = BACKENDS[request.param](request, tmp_path)
    yield backend
    backend.close()
    if isinstance(backend, InfluxStore):  # and the server took every point it was sent
        stats = backend.outbox_stats()
        assert stats.written == stats.queued and stats.write_errors == 0


def _model(version: int) -> GlobalModel:
    return GlobalModel(version, version, 3, factories.summary(seed=version), 1.7e9, 0.01)


def test_an_empty_store_has_no_model_rounds_or_alerts(store):
    assert store.latest_model() is None
    assert store.rounds() == [] and store.alerts() == [] and store.budgets() == {}
    assert store.vehicles() == [] and store.participants() == {} and store.traffic() == {}


def test_the_latest_model_reads_back_exactly(store):
    for version in (1, 3, 2):
        store.record_model(_model(version))

    latest = store.latest_model()

    assert latest.version == 3
    assert latest.summary.n == _model(3).summary.n
    assert latest.summary.cov.tolist() == _model(3).summary.cov.tolist()
    assert latest.noise_std == 0.01


def test_rounds_and_alerts_come_back_newest_first(store):
    for number in (1, 2, 3):
        store.record_round(RoundRecord(number, 0.0, 1.0, 5, 1, number != 2, number))
        store.record_alert(factories.alert(f"veh-{number:04d}"))

    assert [r.round for r in store.rounds(2)] == [3, 2]
    assert store.rounds()[1].quorum_met is False
    assert [a.vehicle_id for a in store.alerts()] == ["veh-0003", "veh-0002", "veh-0001"]


def test_alerts_come_back_in_the_order_received_whatever_the_vehicles_clocks_say(store):
    ahead = replace(factories.alert("veh-0001"), ts=2.0e9)  # a simulated clock run fast
    real = replace(factories.alert("truck-9"), ts=1.7e9)  # a real device, received later
    store.record_alert(ahead)
    store.record_alert(real)

    assert [a.vehicle_id for a in store.alerts()] == ["truck-9", "veh-0001"]


def test_budgets_report_each_vehicles_latest_total(store):
    store.record_budget(factories.update("veh-0001", 1))
    store.record_budget(replace(factories.update("veh-0001", 2), epsilon_total=2.0))

    assert store.budgets()["veh-0001"].epsilon_total == 2.0


def test_a_budget_follows_updates_and_a_stale_last_will_never_undoes_exhaustion(store):
    update = replace(factories.update("veh-0001", 4), epsilon_total=2.0, epsilon_budget=3.0,
                     mechanism="laplace")
    store.record_budget(update)
    store.record_status(Status("veh-0001", "online", 5.0, "local", 2.9, 3.0, exhausted=True))
    store.record_status(Status("veh-0001", "offline", 6.0, "local", 1.0, 3.0, exhausted=False))
    store.record_status(Status("veh-0002", "online", 5.0))

    budgets = store.budgets()

    one = budgets["veh-0001"]
    assert (one.privacy, one.mechanism, one.updates, one.last_round) == ("local", "laplace", 1, 4)
    assert (one.epsilon_total, one.epsilon_budget, one.exhausted) == (2.9, 3.0, True)
    assert one.remaining == pytest.approx(0.1)
    assert (budgets["veh-0002"].privacy, budgets["veh-0002"].exhausted) == ("off", False)


def test_statuses_and_rejections_are_kept(store):
    store.record_status(Status("veh-0001", "online", 1.0))
    store.record_status(Status("veh-0001", "offline", 2.0))
    store.record_rejection(3.0, "not_json", None)

    assert store.statuses() == {"veh-0001": "offline"}
    assert store.rejection_counts() == {"not_json": 1}


def test_vehicles_join_status_alerts_and_accepted_updates(store):
    store.record_status(Status("veh-0002", "online", 5.0))
    store.record_status(Status("veh-0001", "online", 1.0))
    store.record_status(Status("veh-0001", "offline", 2.0))
    store.record_alert(factories.alert("veh-0001"))
    store.record_alert(replace(factories.alert("veh-0001"), ts=1.8e9, subsystem="charging"))
    store.record_alert(factories.alert("veh-0003"))
    for number in (1, 2):
        store.record_budget(replace(factories.update("veh-0001", number), epsilon_total=number))

    one, two, three = store.vehicles()

    assert (one.vehicle_id, one.state, one.status_ts) == ("veh-0001", "offline", 2.0)
    assert (one.alerts, one.last_alert.subsystem, one.last_alert.ts) == (2, "charging", 1.8e9)
    assert (one.updates, one.epsilon_spent) == (2, 2.0)
    assert (two.vehicle_id, two.state, two.alerts, two.last_alert) == (
        "veh-0002", "online", 0, None)
    assert (two.updates, two.epsilon_spent) == (0, 0.0)
    assert (three.vehicle_id, three.state, three.status_ts) == ("veh-0003", "unknown", None)
    assert three.last_alert == factories.alert("veh-0003")


def test_participants_are_the_accepted_vehicles_of_the_latest_rounds(store):
    for number, vehicles in ((1, "ab"), (2, "cb"), (3, "a")):
        for letter in vehicles:
            store.record_budget(factories.update(f"veh-{letter}", number))

    assert store.participants(2) == {3: ["veh-a"], 2: ["veh-b", "veh-c"]}
    assert list(store.participants()) == [3, 2, 1]


def test_traffic_adds_up_by_kind(store):
    store.record_traffic(1.0, "update", Traffic(10, 9_000, 600))
    store.record_traffic(2.0, "update", Traffic(5, 4_000, 300))
    store.record_traffic(2.0, "alert", Traffic(1, 200))

    assert store.traffic() == {"update": Traffic(15, 13_000, 900), "alert": Traffic(1, 200, 0)}


def test_what_was_flushed_survives_a_reopen(tmp_path):
    first = SQLiteStore(tmp_path / "store.db")
    first.record_model(_model(4))
    first.record_traffic(1.0, "status", Traffic(3, 240))
    first.close()

    again = SQLiteStore(tmp_path / "store.db")

    assert again.latest_model().version == 4
    assert again.traffic() == {"status": Traffic(3, 240)}
    again.close()


def test_an_open_round_comes_back_with_its_accepted_updates_until_it_closes(store):
    info = RoundOpen(7, 1.0, 31.0, 2, 3)
    store.record_open_round(info)
    for vehicle in ("veh-0002", "veh-0001"):
        store.record_accepted(factories.update(vehicle, 7))

    state = store.open_round()
    store.record_round(RoundRecord(7, 1.0, 31.0, 2, 0, True, 4, ("veh-0003",)))

    assert state.info == info
    assert [u.vehicle_id for u in state.accepted] == ["veh-0001", "veh-0002"]
    assert state.accepted[0].summary.n == factories.update().summary.n
    assert store.open_round() is None
    assert store.rounds(1)[0].dropped == ("veh-0003",)


@pytest.mark.parametrize("encode", [messages.encode, messages.encode_binary],
                         ids=["json", "binary"])
def test_an_accepted_update_kept_as_it_arrived_comes_back_as_sent(store, encode):
    update = factories.update("veh-0001", 7)
    store.record_open_round(RoundOpen(7, 1.0, 31.0, 1, 0))

    store.record_accepted(update, encode(update))

    [back] = store.open_round().accepted
    assert messages.encode(back) == messages.encode(update)


def test_an_alert_delivered_twice_is_stored_once(store):
    alert = factories.alert("veh-0001")

    first, again = store.record_alert(alert), store.record_alert(alert)
    other = store.record_alert(replace(alert, ts=alert.ts + 1))

    assert (first, again, other) == (True, False, True)
    assert len(store.alerts()) == 2


def test_a_store_written_before_dropouts_and_open_rounds_is_brought_up_to_date(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE rounds (round INTEGER PRIMARY KEY, opened_at REAL, closed_at REAL, "
            "accepted INTEGER, rejected INTEGER, quorum_met INTEGER, model_version INTEGER);"
            "INSERT INTO rounds VALUES (3, 0.0, 1.0, 2, 0, 1, 1);"
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY, vehicle_id TEXT, ts REAL, "
            "subsystem TEXT, score REAL, threshold REAL, model_version INTEGER, payload TEXT);")
        row = ("veh-0001", 1.7e9, "cooling", 8.5, 6.0, 3, messages.encode(
            factories.alert()).decode())
        old.executemany("INSERT INTO alerts VALUES (NULL,?,?,?,?,?,?,?)", [row, row])
    store = SQLiteStore(path)

    assert store.rounds() == [RoundRecord(3, 0.0, 1.0, 2, 0, True, 1, ())]
    assert len(store.alerts()) == 1 and store.open_round() is None
    assert store.record_alert(factories.alert()) is False
    store.close()
