"""Gateway behaviour without a network: validation, rounds, quorum, merge."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from federation import messages, topics
from federation.messages import Status
from federation.transport import MqttTarget
from gateway.service import RESUME_GRACE_S, Gateway, RoundClosed
from gateway.store import SQLiteStore, Traffic
from tests import factories


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw() -> Gateway:
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), round_seconds=10,
                      min_updates=2, clock=Clock())
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
    return gateway


def _send_update(gw: Gateway, vehicle: str, round_number: int = 1, seed: int = 0) -> None:
    payload = messages.encode(factories.update(vehicle, round_number, seed))
    gw.handle(topics.update_topic(vehicle), payload)


def test_a_private_release_that_missed_its_round_joins_the_next_and_an_exact_one_does_not(gw):
    gw._close_round()
    gw._open_round()  # round 2
    private = factories.update("veh-0001", 1)  # local noise: a release its vehicle paid for
    exact = replace(factories.update("veh-0002", 1, seed=1), privacy="off", mechanism="none",
                    epsilon=0.0, delta=0.0, epsilon_total=0.0)

    for update in (private, exact):
        gw.handle(topics.update_topic(update.vehicle_id), messages.encode(update))

    assert list(gw.round.accepted) == ["veh-0001"]
    assert gw.rejected == {"wrong_round": 1}


def test_a_late_private_release_is_kept_and_paid_for_under_the_round_that_accepted_it(gw):
    gw._close_round()
    gw._open_round()  # round 2
    gw.handle(topics.update_topic("veh-0001"), messages.encode(factories.update("veh-0001", 1)))
    gw.store.flush()  # a crash now

    resumed = gw.store.open_round()

    assert resumed is not None and resumed.info.round == 2
    assert [u.vehicle_id for u in resumed.accepted] == ["veh-0001"]
    assert [r for (_, r) in gw.store._read("SELECT vehicle_id, round FROM budgets")] == [2]


def test_valid_updates_are_accepted_into_the_open_round(gw):
    _send_update(gw, "veh-0001")
    _send_update(gw, "veh-0002", seed=1)

    assert sorted(gw.round.accepted) == ["veh-0001", "veh-0002"]
    assert not gw.rejected


@pytest.mark.parametrize(
    ("topic_vehicle", "payload", "reason"),
    [
        ("veh-0001", b"\x00garbage", "not_json"),
        ("veh-0001", b'{"v": 1}', "missing_field"),
        ("veh-0009", messages.encode(factories.update("veh-0001")), "topic_mismatch"),
        ("veh-0001", messages.encode(factories.update("veh-0001", round_number=7)), "wrong_round"),
        ("veh-0001", b"{" * 100_000, "too_large"),
    ],
)
def test_bad_updates_are_counted_recorded_and_do_not_touch_the_round(gw, topic_vehicle, payload,
                                                                     reason):
    gw.handle(topics.update_topic(topic_vehicle), payload)

    assert gw.rejected == {reason: 1}
    assert gw.round.accepted == {}
    assert gw.round.rejected == {reason: 1}
    gw._flush_counters()
    assert gw.store.rejection_counts() == {reason: 1}


def test_a_duplicate_update_is_rejected_and_the_first_one_kept(gw):
    _send_update(gw, "veh-0001", seed=1)
    first = gw.round.accepted["veh-0001"]

    _send_update(gw, "veh-0001", seed=2)

    assert gw.rejected == {"duplicate": 1}
    assert gw.round.accepted["veh-0001"] is first


def test_a_round_with_quorum_publishes_the_next_model_version(gw):
    events = []
    gw.observer = events.append
    _send_update(gw, "veh-0001")
    _send_update(gw, "veh-0002", seed=1)

    gw._close_round()

    assert gw.model is not None and gw.model.version == 1 and gw.model.participants == 2
    assert gw.model.summary.n == 100
    assert isinstance(events[-1], RoundClosed) and events[-1].record.quorum_met
    assert gw.store.latest_model().version == 1


def test_a_round_without_quorum_keeps_the_previous_model(gw):
    _send_update(gw, "veh-0001")
    _send_update(gw, "veh-0002", seed=1)
    gw._close_round()
    gw._open_round()
    _send_update(gw, "veh-0001", round_number=2)

    gw._close_round()

    assert gw.model.version == 1
    assert gw.store.rounds(1)[0].quorum_met is False


def test_a_burst_of_garbage_between_good_updates_does_not_spoil_the_round(gw):
    _send_update(gw, "veh-0001")
    for i in range(200):
        gw.handle(topics.update_topic("veh-0003"), json.dumps({"v": 1, "junk": i}).encode())
        gw.handle("fleet/v1/vehicles/evil/../update", b"{}")
    _send_update(gw, "veh-0002", seed=1)

    gw._close_round()

    assert gw.model.participants == 2
    assert gw.rejected == {"missing_field": 200, "unknown_topic": 200}


def test_alerts_and_statuses_are_recorded(gw):
    gw.handle(topics.alert_topic("veh-0001"), messages.encode(factories.alert("veh-0001")))
    gw.handle(topics.status_topic("veh-0001"),
              messages.encode(messages.Status("veh-0001", "online", 1.0)))

    assert gw.store.alerts()[0].subsystem == "cooling"
    assert gw.online == {"veh-0001"}


def test_a_restarted_gateway_resumes_from_the_stored_model(gw):
    _send_update(gw, "veh-0001")
    _send_update(gw, "veh-0002", seed=1)
    gw._close_round()

    again = Gateway(MqttTarget("127.0.0.1", 1), gw.store, round_seconds=10)
    again._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    again._open_round()

    assert again.model.version == 1
    assert again.round.number == 2


def test_traffic_counts_every_message_apart_from_invalid_ones_and_the_readings_learned():
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), min_updates=1,
                      clock=Clock())
    gateway._client.publish = lambda *args, **kwargs: SimpleNamespace(rc=0)  # type: ignore
    gateway._open_round()
    status = messages.encode(Status("veh-0001", "online", 1.0))
    update = messages.encode(factories.update("veh-0001"))
    gateway.handle(topics.status_topic("veh-0001"), status)
    gateway.handle(topics.update_topic("veh-0001"), update)
    gateway.handle(topics.update_topic("veh-0001"), update)  # a duplicate: sent, not learned
    gateway.handle(topics.update_topic("veh-0002"), b"junk")

    gateway._close_round()

    traffic = gateway.store.traffic()
    assert traffic["status"] == Traffic(1, len(status))
    assert traffic["update"] == Traffic(2, 2 * len(update), factories.summary().n)
    assert traffic["invalid"] == Traffic(1, 4)
    model = messages.encode_binary(gateway.model)
    assert traffic["model"] == Traffic(1, len(model))  # one copy for the one vehicle online
    assert traffic["model_json"] == Traffic(1, len(messages.encode(gateway.model)))  # retained


def _gateway_sending_models() -> tuple[Gateway, list[str]]:
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), clock=Clock())
    sent: list[str] = []
    gateway._client.publish = lambda topic, *args, **kwargs: (  # type: ignore[method-assign]
        sent.append(topic), SimpleNamespace(rc=0))[1]
    return gateway, sent


def test_a_model_too_close_to_the_last_one_sent_is_stored_but_not_sent_down():
    gateway, sent = _gateway_sending_models()
    for vehicles in (("veh-0001", "veh-0002", "veh-0003"), ("veh-0004",)):  # alike, 4/3 of it
        gateway._open_round()
        for vehicle in vehicles:
            update = replace(factories.update(vehicle, gateway.round.number), privacy="off")
            gateway.handle(topics.update_topic(vehicle), messages.encode(update))
        gateway._close_round()

    assert gateway.model.version == 2
    assert gateway.store.latest_model().version == 2
    assert sent.count(topics.MODEL_BINARY_TOPIC) == sent.count(topics.MODEL_TOPIC) == 1
    assert gateway.sent.version == 1


def _online(gw: Gateway, vehicle: str, exhausted: bool = False) -> None:
    status = Status(vehicle, "online", 1.0, exhausted=exhausted)
    gw.handle(topics.status_topic(vehicle), messages.encode(status))


def _offline(gw: Gateway, vehicle: str) -> None:
    gw.handle(topics.status_topic(vehicle), messages.encode(Status(vehicle, "offline", 2.0)))


def test_a_round_records_who_left_it_without_sending_an_update():
    gw = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), round_seconds=10,
                 clock=Clock())
    gw._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    for vehicle in ("veh-0001", "veh-0002", "veh-0003", "veh-0007"):
        _online(gw, vehicle)
    _online(gw, "veh-0005", exhausted=True)  # past its budget: it owes nothing
    gw._open_round()
    _send_update(gw, "veh-0001")
    _send_update(gw, "veh-0003", round_number=9)  # an update for another round is none
    gw.handle(topics.alert_topic("veh-0004"), messages.encode(factories.alert("veh-0004")))
    gw.handle(topics.update_topic("veh-0006"), b"junk")  # not a message: nobody was heard
    for vehicle in ("veh-0001", "veh-0002", "veh-0003", "veh-0004", "veh-0005"):
        _offline(gw, vehicle)  # veh-0007 stays online: sending nothing is not dropping out

    gw._close_round()

    assert gw.store.rounds(1)[0].dropped == ("veh-0002", "veh-0003", "veh-0004")


def test_a_restarted_gateway_resumes_the_open_round_with_the_updates_it_accepted(gw):
    _send_update(gw, "veh-0001")
    gw.store.flush()  # a crash now: the round and its one update are in the store

    again = Gateway(MqttTarget("127.0.0.1", 1), gw.store, round_seconds=10, min_updates=2,
                    clock=gw.clock)
    again._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    again._resume(gw.store.open_round())
    _send_update(again, "veh-0002", seed=1)
    again._close_round()
    again._open_round()

    assert again.model.participants == 2 and again.model.round == 1
    assert again.round.number == 2


def test_a_round_overdue_at_a_restart_waits_a_grace_for_what_the_broker_kept(gw):
    _send_update(gw, "veh-0001")
    clock = Clock()
    clock.now = gw.round.info.deadline + 60  # the gateway was away for a minute

    again = Gateway(MqttTarget("127.0.0.1", 1), gw.store, round_seconds=10, clock=clock)
    again._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    again._resume(gw.store.open_round())

    assert again.round.number == 1 and list(again.round.accepted) == ["veh-0001"]
    assert not again.round.is_due(clock.now + RESUME_GRACE_S - 0.1)
    assert again.round.is_due(clock.now + RESUME_GRACE_S)


def test_a_round_number_is_never_used_twice_even_for_a_round_never_closed(gw):
    gw.store.flush()
    again = Gateway(MqttTarget("127.0.0.1", 1), gw.store, round_seconds=10, clock=gw.clock)
    again._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    again._resume(None)  # the open round was lost: say, a store copied from before it opened

    assert again.round.number == 2


def test_an_alert_the_broker_delivers_again_is_stored_and_reported_once(gw):
    seen = []
    gw.observer = seen.append
    payload = messages.encode(factories.alert("veh-0001"))

    gw.handle(topics.alert_topic("veh-0001"), payload)
    gw.handle(topics.alert_topic("veh-0001"), payload)

    assert len(gw.store.alerts()) == 1 and len(seen) == 1


def test_a_binary_update_is_validated_accepted_and_kept_as_json():
    gateway, _ = _gateway_sending_models()
    gateway._open_round()
    update = factories.update("veh-0001", gateway.round.number)
    wild = replace(factories.update("veh-0002", gateway.round.number), privacy="off",
                   summary=replace(update.summary, mean=update.summary.mean + 2.0))

    gateway.handle(topics.update_topic("veh-0001"), messages.encode_binary(update))
    gateway.handle(topics.update_topic("veh-0002"), messages.encode_binary(wild))

    assert list(gateway.round.accepted) == ["veh-0001"]
    assert gateway.rejected["infeasible"] == 1
    kept = gateway.store.open_round().accepted
    assert messages.encode(kept[0]) == messages.encode(update)


@pytest.mark.parametrize("bound", ["messages", "bytes"])
def test_a_full_inbox_refuses_what_it_cannot_hold_counted_and_acknowledged_then_takes_more(
        gw, monkeypatch, bound):
    sent = {mid: messages.encode(factories.update(f"veh-{mid:04d}", 1, seed=mid))
            for mid in range(1, 7)}
    if bound == "messages":
        monkeypatch.setattr("gateway.service.MAX_QUEUED_MESSAGES", 3)
    else:
        three = sum(len(sent[mid]) for mid in (1, 2, 3))
        monkeypatch.setattr("gateway.service.MAX_QUEUED_BYTES", three)
    acked: list[int] = []
    gw._ack = acked.append  # type: ignore[method-assign]

    def arrive(mid: int) -> None:
        gw._on_message(None, None, SimpleNamespace(  # type: ignore[arg-type]
            topic=topics.update_topic(f"veh-{mid:04d}"), qos=1, mid=mid, payload=sent[mid]))

    for mid in range(1, 6):
        arrive(mid)

    assert gw.rejected == {"overloaded": 2}
    assert acked == [4, 5]  # refused: the broker need not send them again
    gw._drain(timeout_s=0, pass_s=60)  # the first update loads the checks: a long pass
    assert sorted(gw.round.accepted) == ["veh-0001", "veh-0002", "veh-0003"], gw.rejected
    assert acked == [4, 5, 1, 2, 3]  # committed, then acknowledged
    arrive(6)  # room again
    gw._drain(timeout_s=0, pass_s=60)
    assert "veh-0006" in gw.round.accepted and gw.rejected == {"overloaded": 2}
