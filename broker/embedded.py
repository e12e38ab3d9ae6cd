"""The embedded MQTT broker: amqtt on an asyncio loop in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from concurrent.futures import Future
from functools import partial
from types import TracebackType

from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from amqtt.session import Session

__all__ = ["BrokerError", "EmbeddedBroker"]

_CHATTY_LOGGERS = ("amqtt", "transitions")
_LISTENER = "default"
# At a stop, how long messages already accepted (clients' last statuses) may take to go out.
_DRAIN_S = 2.0


class BrokerError(RuntimeError):
    """The embedded broker could not start or stop."""


class _Broker(Broker):
    """amqtt's broker, sending a client retained messages for its own subscriptions only."""

    async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Session) -> None:
        # amqtt 0.12 also calls this whenever a client connects, for each filter that any
        # client has subscribed to: the newcomer got others' retained messages at QoS 0, and a
        # subscription made meanwhile crashed its connection ("dictionary changed size").
        subscribers = self.subscriptions.get(subscription[0], [])
        if any(other.client_id == session.client_id for other, _qos in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """A pure-Python MQTT 3.1.1 broker (amqtt) for development, tests and the demo.

    It serves anonymous clients only and keeps retained messages in memory, so they are lost
    on :meth:`stop`. ``port=0`` picks a free port at the first start; the broker keeps it
    across restarts, and :attr:`port` and :attr:`url` report it.

    Parameters
    ----------
    host
        Address to listen on.
    port
        TCP port to listen on; ``0`` for any free port.

    Notes
    -----
    amqtt 0.12 differs from Mosquitto in ways a client can notice:

    - It never drops a client whose keepalive has expired, so a half-open connection (a
      vehicle that vanished without its TCP connection closing) does not trigger its Last
      Will. A closed connection does, at once.
    - A message is forwarded at the subscriber's QoS, not at the lower of the publisher's and
      the subscriber's.

    Use Mosquitto, as ``fedfleet broker-setup`` sets it up, for real deployments.

    Examples
    --------
    A retained message reaches a client that subscribes later:

    >>> from paho.mqtt import publish, subscribe
    >>> with EmbeddedBroker(port=0) as broker:
    ...     publish.single("fleet/v1/global/round", b"open", qos=1, retain=True,
    ...                    hostname=broker.host, port=broker.port)
    ...     message = subscribe.simple("fleet/v1/global/round", qos=1,
    ...                                hostname=broker.host, port=broker.port)
    >>> print(message.topic, message.payload, message.retain)
    fleet/v1/global/round b'open' True
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        """The port the broker listens on (the requested one until a ``port=0`` start)."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port``, for :func:`federation.transport.parse_mqtt_url`."""
        return f"mqtt://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has succeeded and :meth:`stop` has not been called since."""
        return self._thread is not None

    def start(self, timeout_s: float = 10.0) -> None:
        """Return once the broker accepts connections; do nothing if it is running.

        Raises
        ------
        BrokerError
            If it cannot listen on ``host:port`` (for example the port is in use), or it
            does not come up within ``timeout_s``.
        """
        if self.running:
            return
        _quiet_chatty_loggers()
        started: Future[None] = Future()
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, started), name=f"mqtt-broker-{self._port}",
            daemon=True,  # a broker the caller forgot to stop must not keep the process alive
        )
        self._thread.start()
        try:
            started.result(timeout_s)
        except Exception as exc:
            self._abandon(timeout_s)
            raise BrokerError(f"embedded broker cannot start on {self.url}: "
                              f"{_reason(exc, timeout_s)}") from exc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect every client and close the listener; do nothing if it is not running.

        Raises
        ------
        BrokerError
            If the broker thread has not finished within ``timeout_s``.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        # The loop closes by itself when the thread ends, e.g. after a failed start.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise BrokerError(f"embedded broker on {self.url} did not stop within "
                              f"{timeout_s:g} s")
        self._thread = self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _abandon(self, timeout_s: float) -> None:
        with contextlib.suppress(BrokerError):
            self.stop(timeout_s)
        self._thread = self._loop = None

    def _run(self, loop: asyncio.AbstractEventLoop, started: Future[None]) -> None:
        # The Runner cancels whatever amqtt leaves pending, then closes the loop.
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(self._serve(started))

    async def _serve(self, started: Future[None]) -> None:
        try:
            broker, server = await self._open()
        except Exception as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        await self._stopping.wait()
        server.close()
        await _drain(broker, _DRAIN_S)
        await broker.shutdown()
        await server.wait_closed()

    async def _open(self) -> tuple[_Broker, asyncio.Server]:
        broker = _Broker(_config(self.host, self._port))
        # Listening ourselves (amqtt's "external" listener) gives a plain OSError for a busy
        # port, where amqtt would log a traceback first, and the real port for port=0.
        server = await asyncio.start_server(
            partial(broker.stream_connected, listener_name=_LISTENER),
            self.host, self._port, start_serving=False,
        )
        self._port = server.sockets[0].getsockname()[1]
        await broker.start()
        await server.start_serving()
        return broker, server


async def _drain(broker: Broker, timeout_s: float) -> None:
    """Wait until the broker has delivered every message it accepted, or ``timeout_s``.

    amqtt's shutdown drops (and warns of) messages still queued, and cancels deliveries still
    under way; clients that stop together with the broker (the demo's fleet) publish their
    last statuses just before. amqtt 0.12 has no public way to wait for either.
    """
    queue, deliveries = broker._broadcast_queue, broker._tasks_queue
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and (
            not queue.empty() or not all(task.done() for task in deliveries)):
        await asyncio.sleep(0.02)


def _config(host: str, port: int) -> BrokerConfig:
    # amqtt ignores "bind" for an external listener but skips a listener without one.
    listener = ListenerConfig(type=ListenerType.EXTERNAL, bind=f"{host}:{port}")
    anonymous = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    return BrokerConfig(listeners={_LISTENER: listener}, plugins=anonymous)


def _reason(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"not listening after {timeout_s:g} s"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)  # asyncio's message would repeat the address
    return str(exc)


def _quiet_chatty_loggers() -> None:
    """Set amqtt's loggers to WARNING, unless the caller has given them a level."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
