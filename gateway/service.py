"""The gateway on the wire: open rounds, collect and validate updates, publish global models.

All state changes happen on the thread that calls :meth:`Gateway.run`; the MQTT network
thread only queues incoming messages, so no callback can raise into paho's loop and no
two threads touch a round.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.features import VEHICLE_SCHEMA, Schema
from federation.messages import Alert, GlobalModel, MessageError, RoundOpen, Status, Update
from federation.privacy import NoiseSource, SecureNoise
from federation.rejections import RejectionLog
from federation.transport import MqttTarget, make_client
from gateway.alert_rate import AlertRate, DayRate
from gateway.rounds import Round
from gateway.store import INVALID, RoundRecord, Store, Traffic
from gateway.strategy import ExactMerge, Strategy

__all__ = ["Gateway", "RoundClosed"]

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 100_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # what the queue may hold while the gateway is busy
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
    ) -> None:
        if round_seconds <= 0 or min_updates < 1:
            raise ValueError("round_seconds must be > 0 and min_updates >= 1")
        self.store = store
        self.schema = schema
        self.round_seconds = round_seconds
        self.min_updates = min_updates
        self.target_updates = target_updates
        self.strategy = strategy or ExactMerge()
        self.observer = observer or (lambda event: None)
        self.noise = noise or SecureNoise()
        self.alert_rate = AlertRate()
        self.clock = clock
        self.received: Counter[str] = Counter()
        self._rejections = RejectionLog(log)
        self.rejected = self._rejections.counts
        self._failures: set[type[BaseException]] = set()
        self.online: set[str] = set()
        self._traffic: dict[str, Traffic] = {}
        self.model: GlobalModel | None = _compatible(store.latest_model(), schema)
        self.round: Round | None = None
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(MAX_QUEUED_MESSAGES)
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()  # the queue's bytes, and rejections not written
        self._unwritten: Counter[tuple[str, str | None]] = Counter()
        self._connected = threading.Event()
        self._refused = ""
        self._client = make_client(client_id, target)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._target = target

    # --- network thread: queue only -------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            self._connected.set()
            return
        client.subscribe([(topics.subscription(kind), 1) for kind in topics.VEHICLE_KINDS])
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        size = len(msg.payload)
        if size > messages.MAX_PAYLOAD_BYTES:  # refused before it takes any memory
            vehicle = topics.parse_vehicle_topic(msg.topic)
            self._reject("too_large", vehicle[0] if vehicle else None,
                         f"{size} bytes on {msg.topic[:200]}")
            return
        with self._queued_lock:
            room = self._queued_bytes + size <= MAX_QUEUED_BYTES and not self._inbox.full()
            if room:
                self._queued_bytes += size
                self._inbox.put_nowait((msg.topic, bytes(msg.payload)))
        if not room:
            self._reject("overloaded", None, f"a message on {msg.topic[:200]}: inbox full")

    # --- gateway thread ---------------------------------------------------------------
    def run(self, stop: threading.Event, connect_timeout_s: float = 10.0) -> None:
        """Connect, then run rounds until ``stop`` is set; flush the store on the way out."""
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        try:
            if not self._connected.wait(connect_timeout_s):
                raise ConnectionError(
                    f"no MQTT broker answered at {self._target.host}:{self._target.port} "
                    f"within {connect_timeout_s:g} s"
                )
            if self._refused:
                raise ConnectionError(f"the broker refused the gateway: {self._refused}")
            if self.model is not None:
                self._publish(topics.MODEL_TOPIC, messages.encode(self.model), retain=True)
            self._open_round()
            while not stop.is_set():
                self._drain(timeout_s=0.05)
                assert self.round is not None
                if self.round.is_due(self.clock()):
                    self._close_round()
                    self._open_round()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self._flush_counters()
            self.store.flush()

    def _drain(self, timeout_s: float) -> None:
        try:
            item = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            with self._queued_lock:
                self._queued_bytes -= len(item[1])
            self.handle(*item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

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
            self._count(INVALID, Traffic(1, len(payload)))
            if kind == topics.UPDATE and self.round is not None:
                self.round.rejected[exc.reason] += 1
            return self._reject(exc.reason, vehicle, f"{topic}: {exc}")
        self._count(kind, Traffic(1, len(payload)))
        try:
            if isinstance(message, Update):
                self._on_update(vehicle, message)
            elif isinstance(message, Alert):
                self._on_alert(vehicle, message)
            else:
                self._on_status(vehicle, message)
        except Exception as exc:
            if type(exc) not in self._failures:  # the traceback once per kind of failure
                self._failures.add(type(exc))
                log.exception("internal error handling a message on %s", topic)
            self._reject("internal_error", vehicle, f"{topic}: {type(exc).__name__}")

    def _reject(self, reason: str, vehicle: str | None, detail: str) -> None:
        self._rejections.reject(reason, detail)
        with self._queued_lock:
            if (reason, vehicle) not in self._unwritten and len(self._unwritten) >= _MAX_KEYS:
                vehicle = None  # a spray of made-up vehicle ids costs no more rows
            self._unwritten[reason, vehicle] += 1

    def _on_update(self, vehicle: str, update: Update) -> None:
        assert self.round is not None
        reason = self.round.offer(vehicle, update)
        if reason is not None:
            return self._reject(reason, vehicle, f"update from {vehicle} for round {update.round}")
        self._count(topics.UPDATE, Traffic(0, 0, round(update.summary.n)))
        self.store.record_budget(update)
        if update.alert_report is not None:
            self.alert_rate.add(vehicle, update.alert_report)

    def _on_alert(self, vehicle: str, alert: Alert) -> None:
        if alert.vehicle_id != vehicle:
            return self._reject("topic_mismatch", vehicle, f"alert from {vehicle}")
        self.store.record_alert(alert)
        self.observer(alert)

    def _on_status(self, vehicle: str, status: Status) -> None:
        if status.vehicle_id != vehicle:
            return self._reject("topic_mismatch", vehicle, f"status from {vehicle}")
        (self.online.add if status.state == "online" else self.online.discard)(vehicle)
        self.store.record_status(status)

    def _open_round(self) -> None:
        now = self.clock()
        last = self.round.number if self.round else max(
            [r.round for r in self.store.rounds(1)], default=0)
        info = RoundOpen(last + 1, now, now + self.round_seconds, self.min_updates,
                         self.model.version if self.model else 0, self.schema.names,
                         self.schema.digest)
        self.round = Round(info, self.target_updates)
        self._publish(topics.ROUND_TOPIC, messages.encode(info), retain=True)

    def _close_round(self) -> None:
        assert self.round is not None
        current = self.round
        model = None
        if current.quorum_met:
            model = self._merge(current)
            self.store.record_model(model)
            self._publish(topics.MODEL_TOPIC, messages.encode(model), retain=True)
        else:
            log.warning("round %d: quorum not met (%d < %d updates), keeping model v%d",
                        current.number, len(current.accepted), current.info.min_updates,
                        self.model.version if self.model else 0)
        record = RoundRecord(
            current.number, current.info.opened_at, self.clock(), len(current.accepted),
            sum(current.rejected.values()), current.quorum_met,
            self.model.version if self.model else 0,
        )
        self.store.record_round(record)
        self._flush_counters()
        self.store.flush()
        self.observer(RoundClosed(record, model, len(self.online), self.alert_rate.latest()))

    def _merge(self, current: Round) -> GlobalModel:
        self.model = current.merge(self.model, self.strategy, self.schema, self.clock(),
                                   self.noise)
        return self.model

    def _count(self, kind: str, traffic: Traffic) -> None:
        self._traffic[kind] = self._traffic.get(kind, Traffic(0, 0)) + traffic

    def _flush_counters(self) -> None:
        """Write the traffic and the rejections counted since the last write."""
        now = self.clock()
        for kind, traffic in self._traffic.items():
            self.store.record_traffic(now, kind, traffic)
        self._traffic.clear()
        with self._queued_lock:
            unwritten, self._unwritten = self._unwritten, Counter()
        for (reason, vehicle), count in unwritten.items():
            self.store.record_rejection(now, reason, vehicle, count)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        # The broker hands a global message to every subscribed vehicle: count those copies.
        copies = len(self.online)
        self._count(topic.rsplit("/", 1)[-1], Traffic(copies, copies * len(payload)))
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
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
