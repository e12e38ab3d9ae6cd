"""Two coordinators sharing a lease: the holder acts, the standby follows and takes over.

The lease's logic on its own, then two ``fedfleet gateway`` processes against a real
Mosquitto: the holder is killed with SIGKILL mid-round, the standby takes over within the
lease's bound, closes the round in flight with every update the holder had heard (none
lost, none twice), and the rounds go on."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import GlobalModel, Lease, Partial, RoundOpen
from federation.summary import ModelSummary
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from gateway.coordinator import Coordinator
from gateway.lease import LeaseState
from gateway.store import SQLiteStore
from gateway.strategy import make_strategy
from gateway.worker import Worker
from tests.processes import Command, wait_until
from tests.scaleout import assert_same_model, exact, publish_updates, single_gateway_model
from tests.servers import Mosquitto

LEASE_S = 2.0
ROUND_S = 12.0  # long enough for a loaded machine to start both, publish, and kill mid-round
VEHICLES = 30


# --- the lease, without a network -----------------------------------------------------------
def test_a_standby_claims_only_once_a_whole_lease_passed_without_a_renewal():
    standby = LeaseState("b", LEASE_S, now_s=0.0)
    standby.heard(Lease("a", 1, LEASE_S, 0.0), now_s=1.0)

    early = standby.to_send(now_s=2.9, wall_s=0.0)
    standby.heard(Lease("a", 1, LEASE_S, 0.0), now_s=2.9)  # a renewal
    still_early = standby.to_send(now_s=4.8, wall_s=0.0)
    claim = standby.to_send(now_s=4.9, wall_s=0.0)

    assert early is None and still_early is None
    assert claim is not None and (claim.holder, claim.term) == ("b", 2)


def test_a_holder_that_hears_a_higher_term_steps_down_at_once():
    holder = LeaseState("a", LEASE_S, now_s=0.0)
    holder.to_send(now_s=2.0, wall_s=0.0)
    holder.acked(sent_s=2.0)
    assert holder.holds(now_s=2.6)

    stepped_down = holder.heard(Lease("b", 2, LEASE_S, 0.0), now_s=2.7)

    assert stepped_down and not holder.holds(now_s=2.7)
    assert holder.to_send(now_s=2.8, wall_s=0.0) is None  # and waits a lease before claiming


def test_of_two_claims_of_one_term_both_sides_choose_the_lower_id():
    a, b = LeaseState("a", LEASE_S, now_s=0.0), LeaseState("b", LEASE_S, now_s=0.0)
    claim_b = b.to_send(now_s=2.0, wall_s=0.0)
    claim_a = a.to_send(now_s=2.0, wall_s=0.0)
    assert claim_a is not None and claim_b is not None

    a_stepped, b_stepped = a.heard(claim_b, now_s=2.1), b.heard(claim_a, now_s=2.1)
    a.acked(sent_s=2.0)
    b.acked(sent_s=2.0)

    assert (a_stepped, b_stepped) == (False, True)
    assert a.holds(now_s=2.6) and not b.holds(now_s=2.6)


def test_a_holder_whose_renewals_go_unacknowledged_stops_before_any_standby_may_start():
    holder, standby = LeaseState("a", LEASE_S, now_s=0.0), LeaseState("b", LEASE_S, now_s=0.0)
    claim = holder.to_send(now_s=2.0, wall_s=0.0)
    assert claim is not None
    holder.acked(sent_s=2.0)
    standby.heard(claim, now_s=2.0)  # then the holder is cut off: nothing more is heard

    ticks = [t / 100 for t in range(200, 600)]
    last_acting_s = max(t for t in ticks if holder.holds(now_s=t))
    first_claim_s = next(t for t in ticks if standby.to_send(now_s=t, wall_s=0.0) is not None)

    assert last_acting_s < first_claim_s - LEASE_S / 4


# --- a coordinator under a lease, without a network ------------------------------------------
def standby(now_s: float = 5.0) -> Coordinator:
    """A standby coordinator (no broker: it neither claims nor publishes) at ``now_s``."""
    return Coordinator(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), workers=1,
                       group=None, lease=LeaseState("b", LEASE_S, now_s=time.monotonic()),
                       round_seconds=10.0, clock=lambda: now_s)


def take_over(hub: Coordinator) -> None:
    """Make ``hub`` the lease's holder, as a claim the broker acknowledged would."""
    assert hub.lease is not None
    hub.lease.heard(Lease("a", 1, LEASE_S, 0.0), now_s=-10.0)  # the old holder's, long ago
    now = time.monotonic()
    hub.lease.term, hub.lease.leader, hub.lease.claimed_at = 2, "b", now - 1.0
    hub.lease.acked(sent_s=now)


def test_a_standby_follows_the_holders_round_and_publishes_nothing(monkeypatch):
    hub = standby()
    sent: list[str] = []
    monkeypatch.setattr(hub._client, "publish", lambda topic, *a, **k: sent.append(topic))
    hub._connected.set()  # as if the broker were there: what it publishes is recorded

    hub.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))
    hub.handle(topics.forwarded_topic("veh-001"), messages.encode(exact("veh-001")))
    hub._send_model(single_gateway_model([exact("veh-002")]))  # as run() does at its start
    hub._open_round()
    due = hub._due()

    assert hub.round is not None and hub.round.number == 1 and list(hub.round.accepted) == [
        "veh-001"]
    assert not due and sent == []


def test_a_standby_taking_over_closes_the_round_in_flight_with_what_it_heard():
    hub = standby(now_s=10.5)
    hub.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))
    for vehicle in ("veh-001", "veh-002"):
        hub.handle(topics.forwarded_topic(vehicle), messages.encode(exact(vehicle)))
    hub.handle(topics.partial_topic("w0"), messages.encode(
        Partial("w0", 1, 0, (), ModelSummary.empty(FEATURE_NAMES), 10.0)))

    take_over(hub)
    due = hub._due()
    hub._close_round()

    assert due and hub.model is not None
    assert (hub.model.version, hub.model.round, hub.model.participants) == (1, 1, 2)


def test_a_round_whose_model_the_holder_published_is_never_closed_again():
    hub = standby(now_s=10.5)
    hub.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))
    hub.handle(topics.forwarded_topic("veh-001"), messages.encode(exact("veh-001")))
    published = single_gateway_model([exact("veh-001")])  # the holder's close, then it died
    hub.handle(topics.MODEL_TOPIC, messages.encode(published))

    take_over(hub)
    due = hub._due()
    hub._open_round()

    assert not due and hub.model is not None
    assert (hub.model.version, hub.model.round, hub.model.summary.n) == (
        1, 1, published.summary.n)
    assert hub.round is not None and hub.round.number == 2 and not hub.round.accepted


# --- against a real Mosquitto ---------------------------------------------------------------
class Watch:
    """What a client on the broker sees: retained rounds and models, and forwarded updates."""

    def __init__(self, target: MqttTarget) -> None:
        self.models: queue.Queue[GlobalModel] = queue.Queue()
        self.rounds: list[RoundOpen] = []
        self.forwarded: set[str] = set()
        self.client = make_client("watch", target)
        self.client.on_message = lambda c, u, msg: self._got(msg.topic, bytes(msg.payload))
        self.client.connect(target.host, target.port)
        self.client.subscribe([(topics.MODEL_TOPIC, 1), (topics.ROUND_TOPIC, 1),
                               (topics.FORWARDED, 1), (topics.PARTIALS, 1)])
        self.client.loop_start()

    def _got(self, topic: str, payload: bytes) -> None:
        if topic == topics.MODEL_TOPIC:
            self.models.put(messages.decode(GlobalModel, payload))
        elif topic == topics.ROUND_TOPIC:
            self.rounds.append(messages.decode(RoundOpen, payload))
        else:  # a forwarded update, or a partial: who sent it
            self.forwarded.add(topic.rsplit("/", 1)[1])

    def model(self, timeout_s: float) -> GlobalModel:
        return self.models.get(timeout=timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as server:  # its own: no retained lease or round of another test
        yield server


def coordinator(name: str, url: str, cwd: Path, *options: str) -> Command:
    return Command("gateway", "--gateway-id", name, "--lease-seconds", str(LEASE_S),
                   "--round-seconds", str(ROUND_S), "--mqtt", url, "--store",
                   f"sqlite:///{cwd / name}.db", *(options or ("--workers", "1",
                                                               "--partial-grace-seconds", "3")),
                   cwd=cwd)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_standby_takes_over_a_killed_coordinator_and_closes_its_round_with_every_update(
        broker, tmp_path):
    target = parse_mqtt_url(broker.url)
    watch = Watch(target)
    stop = threading.Event()
    worker = Worker(target, "w0", round_seconds=ROUND_S)  # default strategy: forwards them all
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    holder = coordinator("a", broker.url, tmp_path)
    try:
        holder.wait_for("coordinator a holds the lease, term 1", 30)
        standby = coordinator("b", broker.url, tmp_path)
        standby.wait_for("following round 1", 30)
        wait_until(lambda: worker.round is not None, 10, "round 1 at the worker")
        first = [exact(f"veh-{i:03d}", seed=i) for i in range(VEHICLES)]
        publish_updates(target, first)
        wait_until(lambda: len(watch.forwarded) == VEHICLES, 20, "every update forwarded")
        time.sleep(0.5)  # for both coordinators to take them in
        assert time.time() < watch.rounds[-1].deadline - 1, "not mid-round: the machine lags"

        killed_at = time.monotonic()
        holder.kill()
        took_over = standby.wait_for("coordinator b holds the lease, term 2", 3 * LEASE_S + 10)
        model = watch.model(ROUND_S + 15)

        wait_until(lambda: worker.round is not None and worker.round.number == 2, 15,
                   "round 2, opened by the standby")
        second = [exact(f"veh-{i:03d}", round_number=2, seed=100 + i) for i in range(10)]
        publish_updates(target, second)
        following = watch.model(ROUND_S + 15)
    finally:
        stop.set()
        thread.join(10)
        watch.close()

    takeover_s = took_over - killed_at
    # The bound: a lease plus a quarter (the claim standing), plus a loaded machine's lag.
    assert takeover_s < LEASE_S * 1.25 + 2.0, f"took {takeover_s:.1f} s to take over"
    assert (model.version, model.round) == (1, 1)
    assert_same_model(model, first)  # all the holder had heard; none twice
    assert (following.version, following.round, following.participants) == (2, 2, 10)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_partial_the_killed_holder_had_received_counts_in_the_standbys_close(broker, tmp_path):
    """Workers that merge (``--strategy mean``): the holder waits past the deadline for a
    second worker that never comes, is killed while it waits, and the standby closes the
    round with the partial the holder had received, which no worker sends again."""
    target = parse_mqtt_url(broker.url)
    watch = Watch(target)
    stop = threading.Event()
    worker = Worker(target, "w0", round_seconds=ROUND_S, strategy=make_strategy("mean"))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    waiting = ("--workers", "2", "--partial-grace-seconds", "20", "--strategy", "mean")
    holder = coordinator("a", broker.url, tmp_path, *waiting)
    try:
        holder.wait_for("coordinator a holds the lease, term 1", 30)
        standby = coordinator("b", broker.url, tmp_path, *waiting)
        standby.wait_for("following round 1", 30)
        wait_until(lambda: worker.round is not None, 10, "round 1 at the worker")
        updates = [exact(f"veh-{i:03d}", seed=i) for i in range(VEHICLES)]
        publish_updates(target, updates)
        wait_until(lambda: "w0" in watch.forwarded, ROUND_S + 10, "the worker's partial")
        time.sleep(0.5)  # for both coordinators to take it in
        holder.kill()
        model = watch.model(3 * LEASE_S + 30)
    finally:
        stop.set()
        thread.join(10)
        watch.close()

    assert (model.version, model.round) == (1, 1)
    assert_same_model(model, updates, make_strategy("mean"))
    assert not holder.matching("round 1:.*merged")  # the holder never closed it
