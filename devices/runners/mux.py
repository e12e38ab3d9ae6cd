"""Many MQTT clients on one thread: paho's external-loop hooks driven by one selector.

Each vehicle is its own MQTT client (own client id, own Last Will, own session), but no
vehicle has a thread: :class:`ClientMux` waits on all their sockets at once and lets paho
read, write and keep alive, and reconnects lost clients with exponential backoff capped at
``max_backoff_s`` (2 s by default: a broker that comes back has its clients back within 2 s).
What a client published while it was away waits in paho's queue and goes out on reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["ClientMux"]

log = logging.getLogger(__name__)


@dataclass
class _Link:
    client: mqtt.Client
    host: str
    port: int
    keepalive_s: int
    retry_at: float = 0.0
    backoff_s: float = 0.5
    up: bool = False
    misc_at: float = 0.0  # when paho next checks this client's keepalive


class ClientMux:
    """Drive many paho clients from the calling thread.

    >>> mux = ClientMux()
    >>> mux.poll(0.0)  # nothing to do, returns at once
    >>> mux.close()
    """

    def __init__(self, max_backoff_s: float = 2.0) -> None:
        self._selector = selectors.DefaultSelector()
        self._links: dict[mqtt.Client, _Link] = {}
        self.max_backoff_s = max_backoff_s
        self._misc_at = 0.0
        self.failures: Counter[str] = Counter()  # failed connection attempts, by reason

    def add(self, client: mqtt.Client, host: str, port: int, keepalive_s: int = 60) -> None:
        """Take over ``client``'s network loop and connect it (now, or retried later)."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_want_write
        client.on_socket_unregister_write = self._on_done_writing
        link = _Link(client, host, port, keepalive_s)
        self._links[client] = link
        self._connect(link, first=True)

    def connected(self) -> int:
        """How many clients have a live socket."""
        return sum(link.up for link in self._links.values())

    def poll(self, timeout_s: float) -> None:
        """Serve ready sockets (waiting at most ``timeout_s``), keepalives and reconnects."""
        if self._selector.get_map():
            for key, mask in self._selector.select(timeout_s):
                client: mqtt.Client = key.data
                if mask & selectors.EVENT_READ:
                    client.loop_read(max_packets=10)
                if mask & selectors.EVENT_WRITE and client.socket() is not None:
                    client.loop_write()
        elif timeout_s > 0:
            time.sleep(timeout_s)
        now = time.monotonic()
        if now >= self._misc_at:
            self._misc_at = now + 1.0
            self._housekeeping(now)

    def flush(self, timeout_s: float) -> None:
        """Poll until no client has anything left to write, or ``timeout_s`` passes."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and any(
            link.up and link.client.want_write() for link in self._links.values()
        ):
            self.poll(0.01)

    def close(self) -> None:
        """Disconnect every client cleanly (no Last Will) and release the selector."""
        for link in self._links.values():
            if link.up:
                link.client.disconnect()
        self.flush(2.0)
        self._selector.close()

    def _housekeeping(self, now: float) -> None:
        """Reconnect the clients due, and let paho keep each live one alive: a check every
        twelfth of its keepalive (5 s of 60) is early enough, and a fleet of thousands pays
        for a twelfth of them a second rather than all."""
        for link in self._links.values():
            if link.up:
                if now >= link.misc_at:
                    link.misc_at = now + max(link.keepalive_s / 12, 1.0)
                    link.client.loop_misc()
            elif now >= link.retry_at:
                self._connect(link, first=False)

    def _connect(self, link: _Link, first: bool) -> None:
        try:
            if first:
                link.client.connect(link.host, link.port, link.keepalive_s)
            else:
                link.client.reconnect()
            link.backoff_s = 0.5
        except (OSError, mqtt.WebsocketConnectionError) as exc:
            link.retry_at = time.monotonic() + link.backoff_s
            link.backoff_s = min(link.backoff_s * 2, self.max_backoff_s)
            self.failures[f"{link.host}:{link.port}: {exc}"] += 1
            log.debug("connect to %s:%d failed (%s); retry in %.1f s",
                      link.host, link.port, exc, link.backoff_s)

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._links[client].up = True

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        link = self._links[client]
        link.up = False
        link.retry_at = time.monotonic() + link.backoff_s

    def _on_want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._watch(client, sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_done_writing(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._watch(client, sock, selectors.EVENT_READ)

    def _watch(self, client: mqtt.Client, sock: Any, events: int) -> None:
        # A socket paho closes once the mux is closed (a client collected at exit with
        # something still unwritten) is no longer registered: nothing to watch.
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, events, client)
