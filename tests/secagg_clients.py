"""Many test vehicles of secure rounds on one MQTT client, for tests and benchmarks: each
answers every phase through its own :class:`SecAggClient` (seeded: whoever knows the seed
knows every secret), and any may drop out before a phase. Vehicles of several processes
need seeds of their own: the seed names the client and draws every secret."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from federation import topics
from federation.secagg import SecAggClient, SecAggError, messages
from federation.secagg.messages import Roster, SecureRound, SharesRelay, UnmaskRequest
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.randomness import SeededBytes
from federation.transport import MqttTarget, make_client

PHASES = ("advertise", "share", "input", "unmask")
# What a benchmark learns of each message a vehicle sends or receives: "up" or "down", the
# round, the topic, the payload's size and the QoS it travelled at.
Count = Callable[[str, int, str, int, int], None]


class Vehicles:
    """Test vehicles on one MQTT client: each answers every phase with its ``vectors`` entry
    through its own :class:`SecAggClient`, but those in ``dropouts`` stop before the phase
    named for them. Every reply is kept in ``sent``, unless ``count`` is given: then each
    message is counted by it instead, and none kept."""

    def __init__(self, target: MqttTarget, vectors: dict[str, np.ndarray],
                 dropouts: dict[str, str] | None = None, seed: int = 0,
                 count: Count | None = None) -> None:
        self.vectors, self.dropouts, self.seed = vectors, dropouts or {}, seed
        self.clients: dict[str, SecAggClient] = {}
        self.sent: list[tuple[str, bytes]] = []
        self.count = count
        self.heard: dict[int, float] = {}  # round: when its announcement arrived (monotonic)
        self.cpu_seconds = 0.0  # what the vehicles' state machines and codec took, together
        self.refused: dict[str, int] = {}  # messages a client refused, by reason
        self.inbox: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
        self.client = make_client(f"test-vehicles-{seed}", target)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        own = [(topics.secagg_reply_topic(v), 1) for v in sorted(vectors)]
        self.client.on_connect = lambda c, *_: [
            c.subscribe([(topics.SECAGG_ROUND_TOPIC, 1), *own[i:i + 1000]])
            for i in range(0, len(own), 1000)]
        self.client.on_message = lambda c, u, m: self.inbox.put(
            (m.topic, bytes(m.payload), m.qos))
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def publish(self, vehicle: str, payload: bytes) -> None:
        self.client.publish(topics.secagg_topic(vehicle), payload, qos=1)
        if self.count is not None:
            self.count("up", self.clients[vehicle].round, topics.secagg_topic(vehicle),
                       len(payload), 1)

    def _live(self, vehicle: str, phase: str) -> bool:
        gone = self.dropouts.get(vehicle)
        return gone is None or PHASES.index(gone) > PHASES.index(phase)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                topic, payload, qos = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            replies = self._answers(topic, payload)
            if self.count is not None:
                self._count_received(topic, len(payload), qos)
            else:
                self.sent.extend(replies)
            for vehicle, reply in replies:
                self.publish(vehicle, reply)

    def _count_received(self, topic: str, size: int, qos: int) -> None:
        assert self.count is not None
        if topic == topics.SECAGG_ROUND_TOPIC:  # each vehicle hears the announcement
            for client in self.clients.values():
                self.count("down", client.round, topic, size, qos)
        else:
            self.count("down", self.clients[topic.rsplit("/", 1)[1]].round, topic, size, qos)

    def _answers(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        began = time.thread_time()
        try:
            return self._answer(topic, payload)
        except SecAggError as exc:  # refused and counted, as a vehicle does
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            return []
        finally:
            self.cpu_seconds += time.thread_time() - began

    def _answer(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        if topic == topics.SECAGG_ROUND_TOPIC:
            announced = messages.decode(SecureRound, payload)
            if any(c.round == announced.round for c in self.clients.values()):
                return []  # the retained announcement again
            self.heard[announced.round] = time.monotonic()
            self.clients = {v: SecAggClient(v, announced.round, announced.config,
                                            noise=SeededIntegerNoise((self.seed, i)),
                                            random_bytes=SeededBytes(
                                                (self.seed, announced.round, i)))
                            for i, v in enumerate(sorted(self.vectors))}
            return [(v, messages.encode_binary(c.advertise()))
                    for v, c in self.clients.items() if self._live(v, "advertise")]
        vehicle = topic.rsplit("/", 1)[1]
        client = self.clients[vehicle]
        if client.phase == "share" and self._live(vehicle, "share"):
            reply = client.share_keys(messages.decode(Roster, payload))
        elif client.phase == "input" and self._live(vehicle, "input"):
            relay = messages.decode(SharesRelay, payload)
            reply = client.masked_input(relay, self.vectors[vehicle])
        elif client.phase == "unmask" and self._live(vehicle, "unmask"):
            reply = client.unmask(messages.decode(UnmaskRequest, payload))
        else:
            return []
        return [(vehicle, messages.encode_binary(reply))]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()
