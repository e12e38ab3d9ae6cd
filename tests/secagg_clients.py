"""Many test vehicles of secure rounds on one MQTT client, for tests and benchmarks: each
answers every phase through its own :class:`SecAggClient` (seeded: whoever knows the seed
knows every secret), and any may drop out before a phase."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from federation import topics
from federation.secagg import SecAggClient, messages
from federation.secagg.messages import Roster, SecureRound, SharesRelay, UnmaskRequest
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.randomness import SeededBytes
from federation.transport import MqttTarget, make_client

PHASES = ("advertise", "share", "input", "unmask")


class Vehicles:
    """Test vehicles on one MQTT client: each answers every phase with its ``vectors`` entry
    through its own :class:`SecAggClient`, but those in ``dropouts`` stop before the phase
    named for them."""

    def __init__(self, target: MqttTarget, vectors: dict[str, np.ndarray],
                 dropouts: dict[str, str] | None = None, seed: int = 0) -> None:
        self.vectors, self.dropouts, self.seed = vectors, dropouts or {}, seed
        self.clients: dict[str, SecAggClient] = {}
        self.sent: list[tuple[str, bytes]] = []
        self.heard: dict[int, float] = {}  # round: when its announcement arrived (monotonic)
        self.cpu_seconds = 0.0  # what the vehicles' state machines and codec took, together
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = make_client(f"test-vehicles-{seed}", target)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(topics.SECAGG_ROUND_TOPIC, 1), (f"{topics.ROOT}/{topics.SECAGG}/+", 1)])
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def publish(self, vehicle: str, payload: bytes) -> None:
        self.client.publish(topics.secagg_topic(vehicle), payload, qos=1)

    def _live(self, vehicle: str, phase: str) -> bool:
        gone = self.dropouts.get(vehicle)
        return gone is None or PHASES.index(gone) > PHASES.index(phase)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                topic, payload = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            for vehicle, reply in self._answers(topic, payload):
                self.sent.append((vehicle, reply))
                self.publish(vehicle, reply)

    def _answers(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        began = time.thread_time()
        try:
            return self._answer(topic, payload)
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
            return [(v, messages.encode(c.advertise())) for v, c in self.clients.items()
                    if self._live(v, "advertise")]
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
        return [(vehicle, messages.encode(reply))]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()
