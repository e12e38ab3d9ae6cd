"""The gateway on the wire: open rounds, collect and validate updates, publish global models.

All state changes happen on the thread that calls :meth:`Gateway.run`; the MQTT network
thread only queues incoming messages, so no callback can raise into paho's loop and no
two threads touch a round.

Nothing the broker hands over is lost to a crash: the gateway keeps a persistent session
(``clean_session`` off, a stable client id, QoS 1 subscriptions), so the broker queues for
it while it is away, and it acknowledges a message only once what the message changed is
committed to the store. The store commits after each pass over the queue (at most
``PASS_S``). A round is written to the store when it opens, and each update as it is
accepted, so a restarted gateway resumes the open round (see ``docs/STORAGE.md``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.features import VEHICLE_SCHEMA, Schema
from federation.messages import Alert, GlobalModel, MessageError, RoundOpen, Status, Update
from federation.privacy import NoiseSource, SecureNoise
from federation.rejections import RejectionLog
from federation.transport import MqttTarget, make_client
from gateway.alert_rate import AlertRate, DayRate
from gateway.downlink import MODEL_CHANGE, worth_sending
from gateway.private import CLIP_NORM
from gateway.rounds import Round
from gateway.store import INVALID, OpenRound, Rollback, RoundRecord, Store, Traffic
from gateway.strategy import Strategy, make_strategy
from gateway.validation import Plausibility

__all__ = ["Gateway", "RoundClosed"]

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 100_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # what the queue may hold while the gateway is busy
PASS_S = 0.1  # the longest pass over the queue; its messages are committed, then acknowledged
RESUME_GRACE_S = 2.0  # a round overdue at a restart stays open this long for the broker's backlog
RECONNECT_EVERY_S = 1  # how often a lost connection is retried
# The most readings a vehicle learns a second: the fastest sensor rate times the speed-up of
# a simulated or replayed fleet (1 Hz vehicles at up to 1,000 times real time).
READINGS_PER_S = 1000.0
_MAX_KEYS = 1000  # (reason, vehicle) pairs counted between two writes of rejections
_KINDS: dict[str, type[Update | Alert | Status]] = {
    topics.UPDATE: Update, topics.ALERT: Alert, topics.STATUS: Status}


@dataclass(frozen=True, slots=True)
class RoundClosed:
    """Reported to the observer when a round closes; ``model`` is ``None`` without quorum.

    ``alert_rate`` is the fleet-wide alert rate estimated from randomized answers so far."""

    record: RoundRecord
    model: GlobalModel | None
    online: int
    alert_rate: DayRate | None = None


class Gateway:
    """Runs rounds of federation over MQTT and records everything in a store.

    Parameters
    ----------
    target
        The broker.
    store
        Where rounds, models, alerts, statuses, budgets and rejections go.
    round_seconds
        How long a round collects updates.
    min_updates
        The quorum: fewer accepted updates and the previous model is kept.
    target_updates
        Close a round early once this many updates are in (``None``: at the deadline only).
    schema
        The fleet's features and limits: the round announces them, and updates and alerts
        about any other schema are rejected (``wrong_features``).
    observer
        Called on the gateway thread with each :class:`RoundClosed` and each accepted
        :class:`~federation.messages.Alert`.
    noise
        Where the noise for updates that ask for central privacy comes from; default
        :class:`~federation.privacy.SecureNoise`.
    client_id
        The gateway's MQTT client id: the broker keeps the gateway's session under it, so it
        must stay the same across restarts.
    strategy
        How a round's releases are combined (:mod:`gateway.strategy`; default
        :data:`~gateway.strategy.DEFAULT_STRATEGY`).
    clip_norm
        The norm, in whitened units, the gateway clips each central release to again.
    readings_per_s
        The most readings a vehicle can learn a second (:mod:`gateway.validation`).

    Examples
    --------
    Messages are validated before they touch anything; a bad one is counted by reason:

    >>> from gateway.store import SQLiteStore
    >>> gateway = Gateway(MqttTarget("127.0.0.1", 1883), SQLiteStore(":memory:"))
    >>> gateway.handle("fleet/v1/vehicles/veh-0001/update", b"not json")
    >>> gateway.handle("fleet/v1/vehicles/veh-0001/alert", b'{"v": 1}')
    >>> dict(gateway.rejected)
    {'not_json': 1, 'missing_field': 1}
    """

    def __init__(
        self,
        target: MqttTarget,
        store: Store,
        *,
        round_seconds: float = 30.0,
        min_updates: int = 1,
        target_updates: int | None = None,
        strategy: Strategy | None = None,
        schema: Schema = VEHICLE_SCHEMA,
        observer: Callable[[Any], None] | None = None,
        noise: NoiseSource | None = None,
        client_id: str = "fedfleet-gateway",
        clock: Callable[[], float] = time.time,
        clip_norm: float = CLIP_NORM,
        readings_per_s: float = READINGS_PER_S,
    ) -> None:
        if round_seconds <= 0 or min_updates < 1:
            raise ValueError("round_seconds must be > 0 and min_updates >= 1")
        self.store = store
        self.schema = schema
        self.round_seconds = round_seconds
        self.min_updates = min_updates
        self.target_updates = target_updates
        self.strategy = strategy or make_strategy()
        self.observer = observer or (lambda event: None)
        self.noise = noise or SecureNoise()
        self.alert_rate = AlertRate()
        self.clock = clock
        self.clip_norm = clip_norm
        opened = _opened(store)
        self.plausibility = Plausibility(readings_per_s, round_seconds, clip_norm=clip_norm,
                                         started_s=min(opened.values(), default=clock()))
        self.plausibility.last |= _last_accepted(store, opened)
        self.received: Counter[str] = Counter()
        self._rejections = RejectionLog(log)
        self.rejected = self._rejections.counts
        self._failures: set[type[BaseException]] = set()
        self.online = {v for v, state in store.statuses().items() if state == "online"}
        self.exhausted = {v for v, b in store.budgets().items() if b.exhausted}
        self._traffic: dict[str, list[int]] = {}  # by kind: messages, bytes, readings
        self.model: GlobalModel | None = _compatible(store.latest_model(), schema)
        self.sent: GlobalModel | None = None  # the last model published (gateway.downlink)
        if self.model is not None:  # a late release may be about the one before
            for version in (self.model.version - 1, self.model.version):
                self._published(_compatible(store.model(version), schema))
        self.round: Round | None = None
        self._left_open = store.open_round()  # a round a previous run left open: resumed
        self._round_number = max([r.round for r in store.rounds(1)]
                                 + [self._left_open.info.round if self._left_open else 0])
        # (topic, payload, packet id to acknowledge or 0, the connection it came over)
        # SimpleQueue (C) costs a fraction of Queue's locks and conditions a message; its
        # bounds, messages and bytes, are kept under _queued_lock.
        self._inbox: queue.SimpleQueue[tuple[str, bytes, int, int]] = queue.SimpleQueue()
        self._queued_bytes = self._queued_messages = 0
        self._queued_lock = threading.Lock()  # the queue's size, and rejections not written
        self._unwritten: Counter[tuple[str, str | None]] = Counter()
        self._answered = threading.Event()  # the broker took or refused the first connection
        self._connected = threading.Event()
        self._connection = 0  # counts connections: an acknowledgement is for its own only
        self._lost_at: float | None = None
        self._closing = False
        self._refused = ""
        self._client = make_client(client_id, target, clean_session=False)
        self._client.manual_ack_set(True)
        self._client.reconnect_delay_set(RECONNECT_EVERY_S, RECONNECT_EVERY_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._target = target

    def rollback(self, version: int) -> GlobalModel:
        """Make the stored model ``version`` the newest again: republished as the next version
        (versions only increase, so every vehicle takes it), recorded in the store, and pushed
        retained when :meth:`run` connects. Asked again for the rollback that made the newest
        model, it does nothing. Raises ``ValueError`` for a version the store does not hold
        over the fleet's schema."""
        stored = _compatible(self.store.model(version), self.schema)
        if stored is None:
            raise ValueError(f"the store holds no model v{version} over schema {self.schema.name}")
        latest = self.model.version if self.model else 0
        done = self.store.rollbacks()
        if done and (done[0].restored, done[0].published) == (version, latest):
            log.info("model v%d already restores v%d: nothing to roll back", latest, version)
            assert self.model is not None
            return self.model
        self.model = replace(stored, version=latest + 1, created_at=self.clock())
        self._published(self.model)
        self.store.record_model(self.model)
        self.store.record_rollback(Rollback(self.clock(), version, latest + 1, latest))
        self.store.flush()
        log.warning("rolled back to model v%d: republished as v%d over v%d", version,
                    latest + 1, latest)
        return self.model

    # --- network thread: queue only -------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._answered.set()
        if rc.is_failure:
            self._refused = str(rc)
            return
        client.subscribe(self._subscriptions())
        self._connection += 1
        if self._lost_at is not None:
            log.info("reconnected to the broker after %.1f s away",
                     time.monotonic() - self._lost_at)
            self._lost_at = None
        self._connected.set()

    def _subscriptions(self) -> list[tuple[str, int]]:
        """The topic filters the gateway subscribes to, with their QoS."""
        return [(topics.subscription(kind), 1) for kind in topics.VEHICLE_KINDS]

    def _max_bytes(self, topic: str) -> int:
        """The largest payload accepted on ``topic``."""
        return messages.MAX_PAYLOAD_BYTES

    def _due(self) -> bool:
        """Whether the open round is to close now."""
        return self.round is not None and self.round.is_due(self.clock())

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:
        if self._connected.is_set() and not self._closing:
            self._lost_at = time.monotonic()
            log.warning("lost the broker (%s); retrying every %d s, no round opens meanwhile",
                        rc, RECONNECT_EVERY_S)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        size, topic = len(msg.payload), msg.topic  # paho decodes the topic at each reading
        ack = msg.mid if msg.qos else 0
        if size > self._max_bytes(topic):  # refused before it takes any memory
            vehicle = topics.parse_vehicle_topic(topic)
            self._reject("too_large", vehicle[0] if vehicle else None,
                         f"{size} bytes on {topic[:200]}")
            self._ack(ack)
            return
        with self._queued_lock:
            room = (self._queued_bytes + size <= MAX_QUEUED_BYTES
                    and self._queued_messages < MAX_QUEUED_MESSAGES)
            if room:
                self._queued_bytes += size
                self._queued_messages += 1
                self._inbox.put_nowait((topic, bytes(msg.payload), ack, self._connection))
        if not room:
            self._reject("overloaded", None, f"a message on {topic[:200]}: inbox full")
            self._ack(ack)

    def _ack(self, packet_id: int) -> None:
        if packet_id:
            self._client.ack(packet_id, 1)

    # --- gateway thread ---------------------------------------------------------------
    def run(self, stop: threading.Event, connect_timeout_s: float = 10.0) -> None:
        """Connect, then run rounds until ``stop`` is set; flush the store on the way out."""
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        try:
            if not self._answered.wait(connect_timeout_s):
                raise ConnectionError(
                    f"no MQTT broker answered at {self._target.host}:{self._target.port} "
                    f"within {connect_timeout_s:g} s"
                )
            if self._refused:
                raise ConnectionError(f"the broker refused the gateway: {self._refused}")
            if self.model is not None:
                self._send_model(self.model)
            self._resume(self._left_open)
            while not stop.is_set():
                # A pass ends at the deadline: the close waits on no pass and no idle wait.
                due_s = self.round.info.deadline - self.clock() if self.round else PASS_S
                self._drain(timeout_s=min(0.05, max(due_s, 0.0)), pass_s=min(PASS_S, due_s))
                if self._due():
                    self._close_round()
                # While the broker is away no round opens: an outage costs one overdue
                # round, closed once, and the next opens with a full round ahead of it.
                if self.round is None and self._connected.is_set():
                    self._open_round()
        finally:
            self._closing = True
            self._client.disconnect()
            self._client.loop_stop()
            self._flush_counters()
            self.store.flush()

    def _drain(self, timeout_s: float, pass_s: float = PASS_S) -> None:
        """Handle what is queued (one pass, at most ``pass_s``), commit it, then acknowledge
        it: the broker forgets a message only once the store holds what it changed."""
        try:
            item = self._inbox.get(timeout=timeout_s) if timeout_s > 0 else (
                self._inbox.get_nowait())
        except queue.Empty:
            return
        end = time.monotonic() + pass_s
        acks = []
        while True:
            topic, payload, ack, connection = item
            with self._queued_lock:
                self._queued_bytes -= len(payload)
                self._queued_messages -= 1
            self.handle(topic, payload)
            if ack:
                acks.append((ack, connection))
            if time.monotonic() >= end:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        self.store.flush()
        for ack, connection in acks:
            # A message from an earlier connection is the broker's to send again (its
            # session kept it); acknowledging it here could acknowledge another.
            if connection == self._connection:
                self._ack(ack)

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate and apply one message; reject with a counted reason, never raise.

        A failure that validation did not foresee is a rejection too (``internal_error``,
        logged with its traceback): no message can stop the gateway.
        """
        if topic.startswith(topics.GLOBAL_PREFIX):
            return None  # our own retained messages, which some brokers echo unasked
        parsed = topics.parse_vehicle_topic(topic)
        if parsed is None:
            return self._reject("unknown_topic", None, topic[:200])
        vehicle, kind = parsed
        self.received[kind] += 1
        try:
            message: Update | Alert | Status = messages.decode(
                _KINDS[kind], payload, self.schema)  # type: ignore[type-var]
        except MessageError as exc:
            # Not a message of the protocol: counted apart from the fleet's traffic.
            self._count(INVALID, 1, len(payload))
            if kind == topics.UPDATE and self.round is not None:
                self.round.rejected[exc.reason] += 1
            return self._reject(exc.reason, vehicle, f"{topic}: {exc}")
        self._count(kind, 1, len(payload))
        self.plausibility.heard(vehicle, self.clock())
        if self.round is not None:
            self.round.expected.add(vehicle)  # heard from while the round is open
        try:
            if isinstance(message, Update):  # kept as it came
                self._on_update(vehicle, message, payload)
            elif isinstance(message, Alert):
                self._on_alert(vehicle, message)
            else:
                self._on_status(vehicle, message)
        except Exception as exc:
            self._internal_error(exc, topic, vehicle)

    def _internal_error(self, exc: Exception, topic: str, vehicle: str | None) -> None:
        """A failure validation did not foresee: rejected as ``internal_error``, its traceback
        logged once per kind of failure. Called from an ``except`` block."""
        if type(exc) not in self._failures:
            self._failures.add(type(exc))
            log.exception("internal error handling a message on %s", topic)
        self._reject("internal_error", vehicle, f"{topic}: {type(exc).__name__}")

    def _reject(self, reason: str, vehicle: str | None, detail: str) -> None:
        self._rejections.reject(reason, detail)
        with self._queued_lock:
            if (reason, vehicle) not in self._unwritten and len(self._unwritten) >= _MAX_KEYS:
                vehicle = None  # a spray of made-up vehicle ids costs no more rows
            self._unwritten[reason, vehicle] += 1

    def _on_update(self, vehicle: str, update: Update, payload: bytes | None = None) -> None:
        if self.round is None:  # the broker is away and the overdue round closed
            return self._reject("wrong_round", vehicle, f"update from {vehicle}: no round open")
        reason = self.round.admit(vehicle, update, self.plausibility, self.clock())
        if reason is not None:
            return self._reject(reason, vehicle, f"update from {vehicle} for round {update.round}")
        # The readings new to this update: a release repeats those of its vehicle's last one.
        self._count(topics.UPDATE, 0, 0, round(update.summary.n - update.replaces_readings))
        if update.round != self.round.number:  # a late private release: this round's now, so
            update, payload = replace(update, round=self.round.number), None  # it resumes
        self.store.record_accepted(update, payload)
        self.store.record_budget(update)
        if update.alert_report is not None:
            self.alert_rate.add(vehicle, update.alert_report)

    def _on_alert(self, vehicle: str, alert: Alert) -> None:
        if alert.vehicle_id != vehicle:
            return self._reject("topic_mismatch", vehicle, f"alert from {vehicle}")
        if self.store.record_alert(alert):  # not when the broker delivers it again
            self.observer(alert)

    def _on_status(self, vehicle: str, status: Status) -> None:
        if status.vehicle_id != vehicle:
            return self._reject("topic_mismatch", vehicle, f"status from {vehicle}")
        (self.online.add if status.state == "online" else self.online.discard)(vehicle)
        if status.state == "offline" and self.round is not None:
            self.round.left.add(vehicle)
        # An offline status may be the Last Will, whose figures date from the connection.
        if status.exhausted:
            self.exhausted.add(vehicle)
        elif status.state == "online":
            self.exhausted.discard(vehicle)
        self.store.record_status(status)

    def _open_round(self) -> None:
        now = self.clock()
        info = RoundOpen(self._round_number + 1, now, now + self.round_seconds,
                         self.min_updates, self.model.version if self.model else 0,
                         self.schema.names, self.schema.digest)
        self._start(Round(info, self.target_updates))

    def _start(self, current: Round) -> None:
        """Make ``current`` the open round: in the store first, then on the broker."""
        current.expected |= self.online - self.exhausted
        current.prepare(self.model, self.strategy, self.schema)
        self.store.record_open_round(current.info)
        self.store.flush()  # its number is taken before any vehicle hears of it
        self.round, self._round_number = current, current.number
        self._publish(topics.ROUND_TOPIC, messages.encode(current.info), retain=True)

    def _resume(self, state: OpenRound | None) -> None:
        """Go on with the round a previous run left open, with the updates it accepted; a
        round already due gets ``RESUME_GRACE_S`` for what the broker kept for the gateway."""
        if state is None:
            return self._open_round()
        info, model_version = state.info, self.model.version if self.model else 0
        if (info.schema_digest, info.model_version) != (self.schema.digest, model_version):
            log.warning("round %d was left open over schema %s and model v%d, not %s and v%d: "
                        "closed unmerged", info.round, info.schema_digest, info.model_version,
                        self.schema.digest, model_version)
            self.store.record_round(RoundRecord(info.round, info.opened_at, self.clock(),
                                                len(state.accepted), 0, False, model_version))
            return self._open_round()
        grace = self.clock() + min(self.round_seconds, RESUME_GRACE_S)
        current = Round(replace(info, deadline=max(info.deadline, grace)), self.target_updates,
                        accepted={u.vehicle_id: u for u in state.accepted})
        current.senders |= set(current.accepted)
        for update in state.accepted:
            if update.alert_report is not None:
                self.alert_rate.add(update.vehicle_id, update.alert_report)
        log.info("resuming round %d with %d accepted updates; it closes in %.1f s",
                 info.round, len(state.accepted), current.info.deadline - self.clock())
        self._start(current)

    def _close_round(self) -> None:
        """Merge (with quorum), commit the model and the round, then publish the model: no
        vehicle ever holds a model the store could lose."""
        assert self.round is not None
        current, self.round = self.round, None
        model = None
        if current.quorum_met:
            model = self._merge(current)
            self.store.record_model(model)
        else:  # no update at all is the usual round of a private fleet, which releases rarely
            (log.warning if current.accepted else log.debug)(
                "round %d: quorum not met (%d < %d updates), keeping model v%d", current.number,
                len(current.accepted), current.info.min_updates,
                self.model.version if self.model else 0)
        record = RoundRecord(
            current.number, current.info.opened_at, self.clock(), current.participants,
            sum(current.rejected.values()), current.quorum_met,
            self.model.version if self.model else 0, current.dropped(self.exhausted),
            self._privacy_of(current),
        )
        self.store.record_round(record)
        self.store.flush()
        if model is not None and worth_sending(model, self.sent):
            self._send_model(model)
        elif model is not None:
            log.debug("model v%d is within %g of v%d: kept, not sent", model.version,
                      MODEL_CHANGE, self.sent.version if self.sent else 0)
        self._flush_counters()  # committed with the next pass
        self.observer(RoundClosed(record, model, len(self.online), self.alert_rate.latest()))

    def _privacy_of(self, current: Round) -> str:
        """How ``current``'s releases were protected (:class:`RoundRecord`'s ``privacy``)."""
        modes = {u.privacy for u in current.accepted.values()}
        return "+".join(sorted(modes | ({"off"} if current.held else set())))

    def _merge(self, current: Round) -> GlobalModel:
        self.model = current.merge(self.model, self.strategy, self.schema, self.clock(),
                                   self.noise, self.clip_norm)
        self._published(self.model)
        return self.model

    def _published(self, model: GlobalModel | None) -> None:
        """Validation checks the releases made about ``model`` against it."""
        if model is not None:
            self.plausibility.published(model)

    def _count(self, kind: str, messages: int, payload_bytes: int, readings: int = 0) -> None:
        counts = self._traffic.get(kind)
        if counts is None:
            counts = self._traffic[kind] = [0, 0, 0]
        counts[0] += messages
        counts[1] += payload_bytes
        counts[2] += readings

    def _flush_counters(self) -> None:
        """Write the traffic and the rejections counted since the last write."""
        now = self.clock()
        for kind, counts in self._traffic.items():
            self.store.record_traffic(now, kind, Traffic(*counts))
        self._traffic.clear()
        with self._queued_lock:
            unwritten, self._unwritten = self._unwritten, Counter()
        for (reason, vehicle), count in unwritten.items():
            self.store.record_rejection(now, reason, vehicle, count)

    def _send_model(self, model: GlobalModel) -> None:
        """Publish ``model`` retained in both forms: binary for the vehicles, which subscribe
        to that one, and JSON for people and dashboards (counted once: the retained copy)."""
        self._publish(topics.MODEL_BINARY_TOPIC, messages.encode_binary(model), retain=True)
        self._publish(topics.MODEL_TOPIC, messages.encode(model), retain=True, kind="model_json",
                      copies=1)
        self.sent = model
        self.plausibility.published(model, sent=True)

    def _publish(self, topic: str, payload: bytes, retain: bool, kind: str | None = None,
                 copies: int | None = None) -> None:
        # The broker hands a global message to every subscribed vehicle: count those copies.
        copies = len(self.online) if copies is None else copies
        self._count(kind or topic.split("/")[3], copies, copies * len(payload))
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        # Without a connection paho keeps the message and sends it once the broker is back.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("could not publish on %s: %s", topic, mqtt.error_string(info.rc))


def _compatible(model: GlobalModel | None, schema: Schema) -> GlobalModel | None:
    """A stored model to continue from, unless it is over other features than ``schema``."""
    stored_digest = model.schema_digest if model else ""
    if model is not None and (model.summary.features != schema.names
                              or stored_digest not in ("", schema.digest)):
        log.warning("the store's model v%d is over another schema than %s (%s): starting "
                    "a new model", model.version, schema.name, schema.digest)
        return None
    return model


def _opened(store: Store) -> dict[int, float]:
    """When each stored round opened, the one a previous run left open too."""
    opened = {r.round: r.opened_at for r in store.rounds(limit=2**31)}
    left_open = store.open_round()
    if left_open is not None:
        opened[left_open.info.round] = left_open.info.opened_at
    return opened


def _last_accepted(store: Store, opened: dict[int, float]) -> dict[str, tuple[float, float]]:
    """When each vehicle's last accepted update's round opened (its readings unknown): a
    restarted gateway counts a vehicle's next readings from there."""
    return {vehicle: (opened[b.last_round], math.inf) for vehicle, b in store.budgets().items()
            if b.last_round in opened}
