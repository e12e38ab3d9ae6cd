"""A gateway worker: one share of the update stream, merged into a partial aggregate.

The workers and the coordinator (:mod:`gateway.coordinator`) subscribe to the vehicles'
updates as one shared-subscription group, so the broker hands each update to one member of
the group. A worker checks its share as the gateway does (the form, the open round,
duplicates, plausibility, less what only the gateway can check), merges the exact updates by
the exact rule, and at the round's
deadline publishes that one summary with the vehicles it holds as a
:class:`~federation.messages.Partial`. What the exact rule cannot merge does not decompose (a
private release, which the coordinator must combine and noise with all the others; any
update under a robust strategy, which needs every vector at once): the worker forwards it,
checked, to the coordinator as it came.

A region gateway is a worker on its region's broker, whose bridge carries its partials and
forwarded updates up and the round and model down (``broker/bridge.py``).

A worker keeps no store and acknowledges what it receives at once: killed mid-round, what it
held of that round is lost (the coordinator closes without it once its grace is over), and
none of it counts twice. Private releases it had forwarded are already the coordinator's.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.features import VEHICLE_SCHEMA, Schema
from federation.messages import MessageError, Partial, RoundOpen, Update
from federation.rejections import RejectionLog
from federation.summary import ModelSummary
from federation.transport import MqttTarget, make_client
from gateway.rounds import Round
from gateway.strategy import Strategy, make_strategy
from gateway.validation import Plausibility

__all__ = ["GROUP", "Worker"]

log = logging.getLogger(__name__)

GROUP = "fedfleet-gateways"  # the shared-subscription group of the workers and coordinator
MAX_QUEUED_MESSAGES = 100_000


class Worker:
    """Validates and merges one share of a round's updates; publishes a partial at its deadline.

    Parameters
    ----------
    target
        The broker (a region's own broker, for a region gateway).
    worker_id
        The worker's name: its client id and its partial's topic; unique among the workers.
    group
        The shared-subscription group; ``None`` subscribes to every update (a region gateway,
        the only one on its broker).
    strategy
        The coordinator's strategy: exact updates are merged only where it merges them by the
        exact rule (``mean``; the default clips them centred, which needs every vector at once).
    schema, readings_per_s, round_seconds
        As the gateway's (:class:`~gateway.service.Gateway`).
    send
        Publishes ``(topic, payload)``; default the worker's own MQTT client.

    Examples
    --------
    >>> from federation.features import FEATURE_NAMES
    >>> import numpy as np
    >>> from gateway.strategy import ExactMerge
    >>> sent = []
    >>> worker = Worker(MqttTarget("127.0.0.1", 1), "w1", clock=lambda: 5.0,
    ...                 send=lambda topic, payload: sent.append(topic), strategy=ExactMerge())
    >>> worker.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 10.0, 1, 0)))
    >>> exact = ModelSummary(FEATURE_NAMES, 300.0, np.full(9, 0.5), np.eye(9) * 0.01)
    >>> update = Update("veh-1", 1, 0, exact, 0.0, 0.0, 0.0, 0.0, privacy="off")
    >>> worker.handle(topics.update_topic("veh-1"), messages.encode(update))
    >>> worker.close_due(now_s=10.0).vehicles, sent
    (('veh-1',), ['fleet/v1/gateway/partial/w1'])
    """

    def __init__(
        self,
        target: MqttTarget,
        worker_id: str,
        *,
        group: str | None = GROUP,
        strategy: Strategy | None = None,
        schema: Schema = VEHICLE_SCHEMA,
        readings_per_s: float = 1000.0,
        round_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        send: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.worker_id = topics.check_vehicle_id(worker_id)
        self.group = group
        self.schema = schema
        self.merges = (strategy or make_strategy()).under("off").exact
        self.plausibility = Plausibility(readings_per_s, round_seconds, deferred=True)
        self.clock = clock
        self.round: Round | None = None
        self.summary = ModelSummary.empty(schema.names)
        self.forwarded = 0
        self.published = 0  # partials
        self._rejections = RejectionLog(log)
        self.rejected = self._rejections.counts
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(MAX_QUEUED_MESSAGES)
        self._client = make_client(worker_id, target)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._target = target
        self._send = send or self._publish

    # --- network thread: queue only -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                    props: object) -> None:
        updates = topics.subscription(topics.UPDATE)
        shared = topics.shared(self.group, updates) if self.group else updates
        client.subscribe([(topics.ROUND_TOPIC, 1), (shared, 1)])
        log.info("worker %s subscribed to %s", self.worker_id, shared)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self._rejections.reject("overloaded", f"a message on {msg.topic[:200]}: inbox full")

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("could not publish on %s: %s", topic, mqtt.error_string(info.rc))

    # --- worker thread ----------------------------------------------------------------
    def run(self, stop: threading.Event, connect_timeout_s: float = 10.0) -> None:
        """Connect, then take the share of every round until ``stop`` is set."""
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        try:
            deadline = time.monotonic() + connect_timeout_s
            while not self._client.is_connected():
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no MQTT broker answered at {self._target.host}:"
                                          f"{self._target.port} within {connect_timeout_s:g} s")
                time.sleep(0.02)
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    self.handle(*self._inbox.get(timeout=0.05))
                self.close_due(self.clock())
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def handle(self, topic: str, payload: bytes) -> None:
        """Apply a round announcement or check one update; reject with a reason, never raise."""
        try:
            if topic == topics.ROUND_TOPIC:
                return self._on_round(messages.decode(RoundOpen, payload, self.schema))
            parsed = topics.parse_vehicle_topic(topic)
            if parsed is None or parsed[1] != topics.UPDATE:
                return self._rejections.reject("unknown_topic", topic[:200])
            self._on_update(parsed[0], messages.decode(Update, payload, self.schema), payload)
        except MessageError as exc:
            if self.round is not None and topic != topics.ROUND_TOPIC:
                self.round.rejected[exc.reason] += 1
            self._rejections.reject(exc.reason, f"{topic[:200]}: {exc}")

    def _on_round(self, info: RoundOpen) -> None:
        current = self.round
        if current is not None and info.round <= current.number:
            if info.round == current.number:  # the coordinator resumed it: a later deadline
                current.info = info
            return
        if current is not None:  # the next round opened before this one's deadline came
            self._close()
        self.round = Round(info)
        log.info("round %d open until %.1f", info.round, info.deadline)

    def _on_update(self, vehicle: str, update: Update, payload: bytes) -> None:
        if self.round is None:  # closed here: a private release may join the next round
            if update.privacy != "off":
                return self._forward(vehicle, payload)
            return self._rejections.reject("wrong_round", f"update from {vehicle}: no round")
        now = self.clock()
        self.plausibility.heard(vehicle, now)
        reason = self.round.admit(vehicle, update, self.plausibility, now)
        if reason is not None:
            return self._rejections.reject(reason, f"update from {vehicle}")
        if update.privacy == "off" and update.round == self.round.number and self.merges:
            self.summary = self.summary + update.summary
        else:
            del self.round.accepted[vehicle]  # the coordinator's to accept
            self._forward(vehicle, payload)

    def _forward(self, vehicle: str, payload: bytes) -> None:
        self.forwarded += 1
        self._send(topics.forwarded_topic(vehicle), payload)

    def close_due(self, now_s: float) -> Partial | None:
        """Publish the open round's partial once its deadline has come; ``None`` before."""
        if self.round is None or now_s < self.round.info.deadline:
            return None
        return self._close()

    def _close(self) -> Partial:
        assert self.round is not None
        current, self.round = self.round, None
        partial = Partial(
            self.worker_id, current.number, current.info.model_version,
            tuple(current.accepted), self.summary, self.clock(),
            sum(current.rejected.values()), self.forwarded,
            tuple((v, u.alert_report) for v, u in current.accepted.items()
                  if u.alert_report is not None),
            self.schema.digest)
        self.summary, self.forwarded = ModelSummary.empty(self.schema.names), 0
        self._send(topics.partial_topic(self.worker_id), messages.encode(partial))
        self.published += 1
        log.info("round %d: partial of %d updates (%.0f readings), %d forwarded, %d rejected",
                 partial.round, len(partial.vehicles), partial.summary.n, partial.forwarded,
                 partial.rejected)
        return partial
