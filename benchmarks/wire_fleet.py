"""Simulated vehicles for :mod:`benchmarks.secagg_wire`, in a process of their own, counting
what each sends and receives on the wire and the CPU they spend.

A process runs a slice of the fleet on two MQTT clients: one for the broadcasts every vehicle
hears (the ``round`` announcement and the binary ``model``, as a real vehicle subscribes to
them), and, in a plain round, the vehicles' central ``update`` for each round (in the binary
form real vehicles send), or, in a secure round, the four phases through
:class:`tests.secagg_clients.Vehicles` (each vehicle answering on its own topic). A broadcast
is received once by the process and counted once for each vehicle in it.

**What is counted** for each message: the MQTT 3.1.1 ``PUBLISH`` packet (fixed header, the
remaining length, the topic, the packet id at QoS 1, the payload), and the 4-byte ``PUBACK``
that answers it at QoS 1, in the other direction. Not counted: ``CONNECT``, ``SUBSCRIBE``,
``PINGREQ`` (once a session, not once a round), and TCP, IP or TLS framing.

>>> frame_bytes("fleet/v1/secagg/veh-00001", 100, qos=1)
132
>>> frame_bytes("t", 200, qos=0)
206
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from federation import messages, topics
from federation.messages import GlobalModel, RoundOpen, Update
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from tests.secagg_clients import Vehicles

__all__ = ["PUBACK_BYTES", "Tally", "frame_bytes", "run_plain", "run_secure"]

PUBACK_BYTES = 4
_LIMIT_S = 3600.0  # the longest a process waits to be told to stop


def frame_bytes(topic: str, payload_bytes: int, qos: int) -> int:
    """The size of the MQTT 3.1.1 ``PUBLISH`` packet of a payload on ``topic``."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_bytes
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16_384) + (remaining >= 2_097_152)
    return 1 + length_bytes + remaining


@dataclasses.dataclass
class Tally:
    """Bytes on the wire, by round: ``up`` (the vehicles sent) and ``down`` (they received),
    packets as :func:`frame_bytes` counts them, ``payload_up`` and ``payload_down`` the
    payloads alone."""

    up: dict[int, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    down: dict[int, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    payload_up: dict[int, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    payload_down: dict[int, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def __call__(self, direction: str, round_number: int, topic: str, size: int, qos: int,
                 times: int = 1) -> None:
        packet = frame_bytes(topic, size, qos) * times
        ack = PUBACK_BYTES * times if qos else 0
        with self.lock:
            self._add(direction, round_number, packet, ack, size * times)

    def _add(self, direction: str, round_number: int, packet: int, ack: int,
             size: int) -> None:
        if direction == "up":
            self.up[round_number] += packet
            self.payload_up[round_number] += size
            self.down[round_number] += ack
        else:
            self.down[round_number] += packet
            self.payload_down[round_number] += size
            self.up[round_number] += ack

    def plain(self) -> dict[str, dict[int, int]]:
        return {name: dict(getattr(self, name)) for name in
                ("up", "down", "payload_up", "payload_down")}


class _Broadcasts:
    """The round announcements and models every vehicle of the process hears: counted for
    each, and a snapshot of the process's CPU (``cpu``, and the vehicles' own, ``work``)
    taken when each round's model arrives."""

    def __init__(self, target: MqttTarget, name: str, vehicles: int, tally: Tally,
                 work: Any) -> None:
        self.vehicles, self.tally, self.work = vehicles, tally, work
        self.snapshots: dict[int, tuple[float, float]] = {}
        self.on_round: Any = None
        self.client = make_client(name, target)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(topics.ROUND_TOPIC, 1), (topics.MODEL_BINARY_TOPIC, 1)])
        self.client.on_message = self._on_message
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if msg.topic == topics.MODEL_BINARY_TOPIC:
            number = messages.decode(GlobalModel, payload).round
            self.snapshots[number] = (time.process_time(), self.work())
        else:
            number = messages.decode(RoundOpen, payload).round
            if self.on_round is not None:
                self.on_round(number)
        self.tally("down", number, msg.topic, len(payload), msg.qos, self.vehicles)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _finish(broadcasts: _Broadcasts, heard: dict[int, float], stop: Event,
            results: Queue[dict[str, Any]]) -> None:
    stop.wait(_LIMIT_S)
    broadcasts.close()
    results.put({"heard": heard, "snapshots": broadcasts.snapshots,
                 "tally": broadcasts.tally.plain()})


def run_secure(url: str, vectors: dict[str, np.ndarray], seed: int, ready: Event, stop: Event,
               results: Queue[dict[str, Any]]) -> None:
    """Secure vehicles for ``vectors`` (seeded by ``seed``) until ``stop``; then put what
    they heard, spent and counted on ``results``."""
    target, tally = parse_mqtt_url(url), Tally()
    fleet = Vehicles(target, vectors, seed=seed, count=tally)
    broadcasts = _Broadcasts(target, f"bench-wire-{seed}", len(vectors), tally,
                             lambda: fleet.cpu_seconds)
    ready.set()
    try:
        _finish(broadcasts, fleet.heard, stop, results)
    finally:
        fleet.close()


def run_plain(url: str, update: Update, vehicle_ids: list[str], seed: int, ready: Event,
              stop: Event, results: Queue[dict[str, Any]]) -> None:
    """Plain vehicles: each sends ``update`` as its own, in the binary form, for every round
    it hears of, until ``stop``; then put what they heard, spent and counted on
    ``results``."""
    target, tally = parse_mqtt_url(url), Tally()
    heard: dict[int, float] = {}
    spent = [0.0]
    broadcasts = _Broadcasts(target, f"bench-wire-{seed}", len(vehicle_ids), tally,
                             lambda: spent[0])
    client = make_client(f"bench-plain-{seed}", target)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(target.host, target.port)
    client.loop_start()
    lock = threading.Lock()

    def on_round(number: int) -> None:
        with lock:
            if number in heard:
                return
            heard[number] = time.monotonic()
        for vehicle in vehicle_ids:
            began = time.thread_time()
            payload = messages.encode_binary(
                dataclasses.replace(update, vehicle_id=vehicle, round=number))
            spent[0] += time.thread_time() - began
            topic = topics.update_topic(vehicle)
            client.publish(topic, payload, qos=1)
            tally("up", number, topic, len(payload), 1)

    broadcasts.on_round = on_round
    ready.set()
    try:
        _finish(broadcasts, heard, stop, results)
    finally:
        client.loop_stop()
        client.disconnect()
