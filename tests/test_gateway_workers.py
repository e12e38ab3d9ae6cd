"""Gateway workers on a shared subscription: partials, the coordinator's merge, a lost worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from federation import messages, topics
from federation.messages import GlobalModel, Partial, RoundOpen, Update
from federation.summary import ModelSummary
from federation.transport import MqttTarget, parse_mqtt_url
from gateway.coordinator import Coordinator
from gateway.rounds import Round
from gateway.service import RoundClosed
from gateway.store import SQLiteStore
from gateway.strategy import make_strategy
from gateway.worker import Worker
from tests import factories
from tests.processes import Command, wait_until
from tests.scaleout import assert_same_model, exact, publish_updates
from tests.servers import Mosquitto

ROUND_S = 5.0  # long enough for a loaded machine to start every part and publish
VEHICLES = 40
MERGING = make_strategy("mean")  # the strategy whose merge of exact updates decomposes


def partial(worker: str, vehicles: tuple[str, ...], summary: ModelSummary) -> Partial:
    return Partial(worker, 1, 0, vehicles, summary, 0.0)


# --- the coordinator's round, without a network ---------------------------------------------
def test_a_partial_holding_a_vehicle_another_partial_holds_is_refused_whole():
    current = Round(RoundOpen(1, 0.0, 10.0, 1, 0))
    one = exact("veh-1").summary

    first = current.add_partial(partial("w1", ("veh-1", "veh-2"), one + one))
    second = current.add_partial(partial("w2", ("veh-2", "veh-3"), one + one))

    assert (first, second) == (None, "duplicate")
    assert current.participants == 2


def test_an_update_the_coordinator_holds_gives_way_to_the_partial_holding_its_vehicle():
    current = Round(RoundOpen(1, 0.0, 10.0, 1, 0))
    current.offer("veh-1", exact("veh-1"))

    current.add_partial(partial("w1", ("veh-1",), exact("veh-1", seed=1).summary))
    again = current.offer("veh-1", exact("veh-1", seed=2))

    assert current.accepted == {}
    assert again == "duplicate"
    assert current.participants == 1


def test_a_worker_forwards_a_private_release_and_merges_an_exact_update():
    sent: list[str] = []
    worker = Worker(MqttTarget("127.0.0.1", 1), "w1", clock=lambda: 1.0,
                    send=lambda topic, payload: sent.append(topic), strategy=MERGING)
    worker.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))

    worker.handle(topics.update_topic("veh-1"), messages.encode(factories.update("veh-1")))
    worker.handle(topics.update_topic("veh-2"), messages.encode(exact("veh-2")))
    made = worker.close_due(now_s=10.0)

    assert made is not None and made.vehicles == ("veh-2",) and made.forwarded == 1
    assert sent == [topics.forwarded_topic("veh-1"), topics.partial_topic("w1")]


def test_under_a_robust_strategy_a_worker_forwards_every_update_and_merges_none():
    sent: list[str] = []
    worker = Worker(MqttTarget("127.0.0.1", 1), "w1", strategy=make_strategy("median"),
                    clock=lambda: 1.0, send=lambda topic, payload: sent.append(topic))
    worker.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))

    worker.handle(topics.update_topic("veh-2"), messages.encode(exact("veh-2")))
    made = worker.close_due(now_s=10.0)

    assert made is not None and made.vehicles == () and made.summary.n == 0
    assert sent[0] == topics.forwarded_topic("veh-2")


def test_a_coordinator_under_a_robust_strategy_refuses_a_partial_that_holds_updates():
    hub = Coordinator(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), workers=1,
                      strategy=make_strategy("trimmed"), clock=lambda: 0.0)
    hub._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    hub._open_round()

    held = partial("w1", ("veh-1",), exact("veh-1").summary)
    hub.handle(topics.partial_topic("w1"), messages.encode(held))

    assert hub.round is not None and hub.round.partials == {}
    assert hub.rejected == {"not_decomposable": 1}


def test_a_worker_forwards_a_release_about_a_model_it_never_saw_for_the_gateway_to_check():
    sent: list[str] = []
    worker = Worker(MqttTarget("127.0.0.1", 1), "w1", clock=lambda: 1.0,
                    send=lambda topic, payload: sent.append(topic))
    worker.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 3)))
    release = factories.update("veh-1")  # it adds 10 readings to a total of a million
    about_v3 = replace(release, base_version=3, summary=release.summary.weighted(1e6),
                       replaces_readings=1e6 - 10)

    worker.handle(topics.update_topic("veh-1"), messages.encode(about_v3))

    assert sent == [topics.forwarded_topic("veh-1")] and worker.rejected == {}


# --- against a real Mosquitto ---------------------------------------------------------------
class Deployment:
    """A coordinator of ``workers`` on one broker, and ``threads`` of them in threads here."""

    def __init__(self, url: str, workers: int, threads: int, grace_s: float = 5.0) -> None:
        self.target = parse_mqtt_url(url)
        self.closed: list[RoundClosed] = []
        self.merged: list[Round] = []
        self.stop = threading.Event()
        self.hub = Coordinator(self.target, SQLiteStore(":memory:"), workers=workers,
                               partial_grace_s=grace_s, round_seconds=ROUND_S,
                               observer=self._observe, strategy=MERGING)
        merge = self.hub._merge
        self.hub._merge = lambda current: (  # type: ignore[method-assign]
            self.merged.append(current), merge(current))[1]
        self.workers = [Worker(self.target, f"w{i}", round_seconds=ROUND_S, strategy=MERGING)
                        for i in range(threads)]
        self.threads = [threading.Thread(target=self.hub.run, args=(self.stop,), daemon=True)]
        self.threads += [threading.Thread(target=w.run, args=(self.stop,), daemon=True)
                         for w in self.workers]

    def _observe(self, event: object) -> None:
        if isinstance(event, RoundClosed):
            self.closed.append(event)

    def __enter__(self) -> Deployment:
        for thread in self.threads:
            thread.start()
        wait_until(lambda: self.hub.round is not None
                   and all(w.round is not None for w in self.workers), 10, "round 1 everywhere")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def first_close(self) -> tuple[GlobalModel, Round]:
        wait_until(lambda: bool(self.closed), 3 * ROUND_S + 5, "the round's close")
        model = self.closed[0].model
        assert model is not None
        return model, self.merged[0]


@pytest.fixture
def updates() -> list[Update]:
    return [exact(f"veh-{i:04d}", seed=i) for i in range(VEHICLES)]


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as server:  # its own: no retained round of another test's gateway
        yield server


def test_two_workers_and_their_coordinator_merge_the_single_gateway_model(broker, updates):
    with Deployment(broker.url, workers=2, threads=2) as deployment:
        publish_updates(deployment.target, updates)
        model, merged = deployment.first_close()

    assert_same_model(model, updates, MERGING)
    assert sorted(merged.partials) == ["w0", "w1"]
    assert all(partial.vehicles for partial in merged.partials.values())  # each had a share
    assert merged.accepted  # and so had the coordinator


def test_a_worker_killed_mid_round_loses_its_share_of_that_round_and_nothing_counts_twice(
        broker, updates, tmp_path):
    doomed = Command("gateway", "--role", "worker", "--worker-id", "doomed", "--mqtt",
                     broker.url, "--round-seconds", str(ROUND_S), "--strategy", "mean",
                     cwd=tmp_path)
    doomed.wait_for("subscribed to", 20)
    with Deployment(broker.url, workers=2, threads=1, grace_s=2.0) as deployment:
        doomed.wait_for("round 1 open", 10)
        publish_updates(deployment.target, updates)
        wait_until(lambda: deployment.workers[0].round is not None
                   and len(deployment.workers[0].round.accepted) > 0, 10, "the shares")
        doomed.kill()
        model, merged = deployment.first_close()

    held = merged.held
    assert list(merged.partials) == ["w0"]  # the killed worker's partial never came
    assert not held & set(merged.accepted)  # no vehicle counted twice
    kept = [u for u in updates if u.vehicle_id in held | set(merged.accepted)]
    assert 0 < len(kept) < VEHICLES  # what the killed worker held is lost with it
    assert_same_model(model, kept, MERGING)
