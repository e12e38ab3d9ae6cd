"""A paho client on its own network thread that records what the broker does with it: for
tests of what a login may and may not do."""

from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import Any

from federation.transport import MqttTarget, make_client

__all__ = ["TIMEOUT_S", "Client"]

TIMEOUT_S = 5.0


class Client:
    """A paho client on its own network thread that records what happens to it."""

    def __init__(self, target: MqttTarget, client_id: str) -> None:
        self.client = make_client(client_id, target)
        self.connacks: queue.Queue[Any] = queue.Queue()
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self._subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc)
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self._subacks.put(codes)
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def refusal(self) -> str | None:
        """``None`` if the broker accepted the login, else its reason."""
        rc = self.connacks.get(timeout=TIMEOUT_S)
        return str(rc) if rc.is_failure else None

    def subscribe(self, topic: str) -> bool:
        """Whether the broker granted the subscription."""
        self.client.subscribe(topic, qos=1)
        return not self._subacks.get(timeout=TIMEOUT_S)[0].is_failure

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def received(self, count: int) -> list[tuple[str, bytes]]:
        return [self.inbox.get(timeout=TIMEOUT_S) for _ in range(count)]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()
