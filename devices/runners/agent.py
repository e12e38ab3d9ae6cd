"""The device agent: one vehicle on a real sensor source, with an MQTT connection of its own.

Reading, scoring, learning, alerting and taking part in rounds are :class:`Vehicle`'s, exactly
as for a simulated vehicle; the agent adds the connection. paho's network thread keeps it
alive and reconnects every second; the calling thread reads the source and runs the vehicle,
so a slow sensor never starves the keepalive and a reconnect never stops the readings.

Alerts and updates go out with QoS 1 and stay in paho's outgoing queue until the broker
acknowledges them. While the broker is away they wait there, in order, up to ``max_queued``
messages (more are dropped, counted and logged), and are sent once it is back (the agent
tries every ``RECONNECT_EVERY_S``): a reconnect loses nothing that fits the queue. An
update that arrives after its round has closed is refused by the gateway; the readings it
summarised stay in the vehicle's own model.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from devices.onboard.vehicle import Outgoing, Vehicle
from devices.sources import Reading, SensorSource
from federation.messages import MAX_PAYLOAD_BYTES, Alert, Update
from federation.transport import MqttTarget, make_client

__all__ = ["AgentStatus", "DeviceAgent"]

log = logging.getLogger(__name__)

_INBOX_SIZE = 64  # rounds and models are few; a flood beyond this is dropped and counted
RECONNECT_EVERY_S = 1  # how often a lost broker is tried again: back within a second or so


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """How the agent is doing; reported to the observer every ``status_every_s``."""

    connected: bool
    readings: int
    readings_per_s: float
    incomplete_readings: int
    alerts_raised: int
    alerts_delivered: int
    queued: int
    dropped: int
    updates_sent: int
    updates_delivered: int
    model_version: int


class _Metered(SensorSource):
    """Pass readings through, counting those that miss a schema channel (never learned)."""

    def __init__(self, inner: SensorSource, channels: Iterable[str]) -> None:
        self.inner = inner
        self.channels = frozenset(channels)
        self.readings = 0
        self.incomplete = 0
        self.never_seen = set(self.channels)

    def read(self) -> Reading | None:
        reading = self.inner.read()
        if reading is not None:
            self.readings += 1
            self.never_seen -= reading.values.keys()
            if not self.channels <= reading.values.keys():
                self.incomplete += 1
        return reading

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def close(self) -> None:
        self.inner.close()


class DeviceAgent:
    """Runs one :class:`Vehicle` against a broker on its own paho client.

    Parameters
    ----------
    target
        The broker.
    vehicle
        The vehicle, with its source; the agent connects as ``fedfleet-{vehicle_id}`` with a
        Last Will that marks it offline, and says ``online`` on every (re)connect. Readings
        without every channel of its schema are scored but not learned: the agent counts them
        and warns when a channel never appears.
    max_queued
        The most messages waiting for the broker's acknowledgement (alerts kept while the
        broker is away); beyond it new ones are dropped and counted.
    observer
        Called with every :class:`~federation.messages.Alert` raised and an
        :class:`AgentStatus` every ``status_every_s``.

    Examples
    --------
    >>> from devices.sim.simulator import SimulatedVehicle
    >>> from federation.transport import parse_mqtt_url
    >>> vehicle = Vehicle("veh-0001", SimulatedVehicle("veh-0001", seed=1), mechanism=None)
    >>> agent = DeviceAgent(parse_mqtt_url("mqtt://127.0.0.1:1"), vehicle)
    >>> agent.status().connected, agent.status().queued
    (False, 0)
    """

    def __init__(
        self,
        target: MqttTarget,
        vehicle: Vehicle,
        *,
        max_queued: int = 1000,
        observer: Callable[[Alert | AgentStatus], None] | None = None,
        status_every_s: float = 10.0,
        keepalive_s: int = 30,
        idle_wait_s: float = 0.05,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self.vehicle = vehicle
        self.meter = _Metered(vehicle.source, vehicle.schema.names)
        vehicle.source = self.meter
        self.observer = observer or (lambda event: None)
        self.status_every_s = status_every_s
        self.idle_wait_s = idle_wait_s
        self._target, self._keepalive_s = target, keepalive_s
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(_INBOX_SIZE)
        self._lock = threading.Lock()
        self._pending: dict[int, type] = {}  # mid -> message kind, until the broker acks
        self._early_acks: set[int] = set()
        self._delivered = {Alert: 0, Update: 0}
        self.dropped = 0
        self._connected = threading.Event()
        self._closing = False
        self._refused = ""
        self._unreachable_logged = False
        self._rate = (time.monotonic(), 0)
        will = vehicle.status("offline")
        self.client = make_client(f"fedfleet-{vehicle.vehicle_id}", target,
                                  will=(will.topic, will.payload))
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(RECONNECT_EVERY_S, RECONNECT_EVERY_S)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def status(self) -> AgentStatus:
        now, readings = time.monotonic(), self.meter.readings
        since, before = self._rate
        self._rate = (now, readings)
        with self._lock:
            queued = len(self._pending)
            alerts, updates = self._delivered[Alert], self._delivered[Update]
        return AgentStatus(
            self._connected.is_set(), readings, (readings - before) / max(now - since, 1e-9),
            self.meter.incomplete, self.vehicle.alerts_raised, alerts, queued, self.dropped,
            self.vehicle.updates_sent, updates, self.vehicle.model_version)

    def run(self, stop: threading.Event, duration_s: float | None = None,
            drain_timeout_s: float = 10.0) -> None:
        """Read and run the vehicle until ``stop``, ``duration_s``, or the source ends.

        Then wait up to ``drain_timeout_s`` for queued messages to be acknowledged, say
        ``offline``, and disconnect cleanly. A broker that refuses the connection (bad
        credentials) raises :class:`ConnectionError`: retrying would not help.
        """
        self.client.connect_async(self._target.host, self._target.port, self._keepalive_s)
        self.client.loop_start()
        deadline = math.inf if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + self.status_every_s
        warned_incomplete = False
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if self._refused:  # bad credentials: retrying will not help
                    break
                self._take_inbox()
                before = self.meter.readings
                for out in self.vehicle.step():
                    self._send(out)
                if self.meter.readings == before:
                    if self.meter.finished:
                        log.info("%s: the source has ended", self.vehicle.vehicle_id)
                        self._last_round(min(drain_timeout_s, deadline - time.monotonic()))
                        break
                    self._wait_inbox(self.idle_wait_s)
                if time.monotonic() >= next_status:
                    next_status += self.status_every_s
                    self.observer(self.status())
                    if not warned_incomplete:
                        warned_incomplete = self._warn_incomplete()
        finally:
            if not warned_incomplete:  # a short run still says what never came
                self._warn_incomplete()
            self._shut_down(drain_timeout_s)
        if self._refused:
            raise ConnectionError(f"the broker refused {self.vehicle.vehicle_id}: {self._refused}")

    def _last_round(self, timeout_s: float) -> None:
        """Give what the vehicle learned since its last update to a round, waiting for one.

        A recorded log or a pipe can end before the broker has even told the vehicle of the
        open round (or after the vehicle sent to it): its last readings then wait for the next
        round, up to ``timeout_s``.
        """
        end = time.monotonic() + timeout_s
        waiting = False
        while not self._refused:
            self._take_inbox()
            owed = self.vehicle.take_part()
            for out in owed:
                self._send(out)
            # A secure round goes on over four phases: the vehicle answers them all.
            if (owed or not self.vehicle.owes_update) and not self.vehicle.in_secure_round:
                return
            remaining = end - time.monotonic()
            if remaining <= 0:
                log.warning("%s: no round came; %d readings learned since the last update "
                            "stay in the vehicle's own model", self.vehicle.vehicle_id,
                            self.vehicle.detector.recent_readings)
                return
            if not waiting:
                log.info("%s: waiting up to %.0f s for a round to send the last readings to",
                         self.vehicle.vehicle_id, remaining)
                waiting = True
            self._wait_inbox(min(remaining, self.idle_wait_s))

    def _warn_incomplete(self) -> bool:
        if not self.meter.readings or not self.meter.never_seen:
            return False
        log.warning("%s: no reading so far has %s: readings are scored but the detector "
                    "learns only complete ones; give the fleet a schema of the channels "
                    "this device has", self.vehicle.vehicle_id,
                    ", ".join(sorted(self.meter.never_seen)))
        return True

    def _send(self, out: Outgoing) -> None:
        if isinstance(out.message, Alert):
            self.observer(out.message)
        rc = self._publish(out)
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.dropped += 1
            log.warning("%s: %s dropped (%s); %d dropped so far", self.vehicle.vehicle_id,
                        type(out.message).__name__.lower(), mqtt.error_string(rc),
                        self.dropped)

    def _publish(self, out: Outgoing) -> int:
        """Publish, and track the message until the broker acknowledges it."""
        # Not under self._lock: paho calls on_publish holding its own lock, which publish needs.
        info = self.client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            with self._lock:
                if info.mid in self._early_acks:  # acknowledged before publish() returned
                    self._early_acks.discard(info.mid)
                    self._count_delivered(type(out.message))
                else:
                    self._pending[info.mid] = type(out.message)
        return int(info.rc)

    def _take_inbox(self) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            self.vehicle.on_message(topic, payload)

    def _wait_inbox(self, timeout_s: float) -> None:
        try:
            topic, payload = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return
        self.vehicle.on_message(topic, payload)

    def _shut_down(self, drain_timeout_s: float) -> None:
        self._wait_acknowledged(drain_timeout_s)
        if self._pending:
            log.warning("%s: %d messages were never acknowledged by the broker and are lost",
                        self.vehicle.vehicle_id, len(self._pending))
        if self._connected.is_set():
            self._publish(self.vehicle.status("offline"))
            self._wait_acknowledged(2.0)
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
        self.meter.close()

    def _wait_acknowledged(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while self._pending and not self._refused and time.monotonic() < end:
            time.sleep(0.05)

    # paho callbacks, on its network thread: never let an exception escape them.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            return
        client.subscribe(self.vehicle.subscriptions())
        self._publish(self.vehicle.status("online"))
        self._connected.set()
        self._unreachable_logged = False
        log.info("%s: connected to %s:%d", self.vehicle.vehicle_id, self._target.host,
                 self._target.port)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._unreachable_logged:  # once per outage, not once per try
            return
        self._unreachable_logged = True
        log.warning("%s: cannot reach the broker at %s:%d; retrying every %d s, readings and "
                    "alerts go on", self.vehicle.vehicle_id, self._target.host,
                    self._target.port, RECONNECT_EVERY_S)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("%s: lost the broker (%s); alerts wait in the queue",
                        self.vehicle.vehicle_id, rc)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > MAX_PAYLOAD_BYTES:  # refused before it takes any memory
            self.vehicle.rejections.reject("too_large", f"a message on {msg.topic[:200]}")
            return
        try:
            self._inbox.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.vehicle.rejections.reject("overloaded", f"a message on {msg.topic[:200]}: "
                                           "inbox full")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                    props: Any) -> None:
        with self._lock:
            kind = self._pending.pop(mid, None)
            if kind is None:
                self._early_acks.add(mid)
            else:
                self._count_delivered(kind)

    def _count_delivered(self, kind: type) -> None:
        if kind in self._delivered:
            self._delivered[kind] += 1
