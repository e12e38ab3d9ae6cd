"""What fedfleet needs from a broker, checked on Mosquitto and on the embedded broker alike."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from queue import Queue
from types import TracebackType

import paho.mqtt.client as mqtt
import pytest

from broker.access import acl_text
from broker.embedded import BrokerError, EmbeddedBroker
from federation import topics
from federation.transport import make_client, parse_mqtt_url
from tests.servers import Mosquitto, mosquitto_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT_S = 5.0


class Peer:
    """A connected paho client on its own network thread; what it receives goes to a queue."""

    def __init__(self, url: str, will: tuple[str, bytes] | None = None) -> None:
        target = parse_mqtt_url(url)
        self.client = make_client(f"test-{uuid.uuid4().hex[:12]}", target, will)
        self.inbox: Queue[mqtt.MQTTMessage] = Queue()
        self._subacks: Queue[int] = Queue()
        self.client.on_message = lambda _c, _u, message: self.inbox.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _p: self._subacks.put(mid)
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        _wait_until(self.client.is_connected, "CONNACK")

    def subscribe(self, topic: str) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        assert self._subacks.get(timeout=TIMEOUT_S) == mid

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def receive(self) -> mqtt.MQTTMessage:
        return self.inbox.get(timeout=TIMEOUT_S)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT_S} s"
        time.sleep(0.01)


def _topic(name: str) -> str:
    """A topic no other test uses: the session's brokers keep retained messages."""
    return f"test/{uuid.uuid4().hex}/{name}"


def _vanish(url: str, will: tuple[str, bytes]) -> None:
    """Connect, then close the socket without DISCONNECT, as a vehicle losing power does."""
    target = parse_mqtt_url(url)
    client = make_client(f"test-{uuid.uuid4().hex[:12]}", target, will)
    client.connect(target.host, target.port)
    # No network thread: once connected, nothing else touches the socket.
    _wait_until(lambda: client.loop(timeout=0.05) == 0 and client.is_connected(), "CONNACK")
    sock = client.socket()
    assert sock is not None
    sock.close()


def test_a_retained_message_reaches_a_later_subscriber(broker_url: str) -> None:
    topic = _topic("round")
    with Peer(broker_url) as gateway:
        gateway.publish(topic, b"round 7", retain=True)

    with Peer(broker_url) as vehicle:
        vehicle.subscribe(topic)

        message = vehicle.receive()
        assert (message.payload, message.retain) == (b"round 7", True)


def test_a_qos1_publish_is_acknowledged_and_delivered_at_qos1(broker_url: str) -> None:
    topic = _topic("update")
    with Peer(broker_url) as gateway, Peer(broker_url) as vehicle:
        gateway.subscribe(topic)

        vehicle.publish(topic, b"summary")

        message = gateway.receive()
        assert (message.payload, message.qos) == (b"summary", 1)


def test_a_vanished_client_s_last_will_is_published_and_retained(broker_url: str) -> None:
    topic = _topic("status")
    with Peer(broker_url) as watcher:
        watcher.subscribe(topic)

        _vanish(broker_url, will=(topic, b"offline"))

        live = watcher.receive()
    with Peer(broker_url) as late:
        late.subscribe(topic)
        retained = late.receive()

    assert (live.payload, live.retain) == (b"offline", False)
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_a_new_client_gets_no_retained_message_it_did_not_subscribe_to(
        broker_url: str) -> None:
    topic, other = _topic("round"), _topic("model")
    with Peer(broker_url) as gateway, Peer(broker_url) as vehicle:
        vehicle.subscribe(topic)
        gateway.publish(topic, b"round 7", retain=True)

        with Peer(broker_url) as newcomer:
            newcomer.subscribe(other)
            gateway.publish(other, b"model 3")

            message = newcomer.receive()
    assert (message.topic, message.payload) == (other, b"model 3")


def test_the_embedded_broker_refuses_a_busy_port_without_leaving_a_thread(
        mosquitto: Mosquitto) -> None:
    threads = threading.active_count()
    broker = EmbeddedBroker(port=mosquitto.port)

    with pytest.raises(BrokerError, match="Address already in use"):
        broker.start(timeout_s=TIMEOUT_S)

    assert not broker.running
    assert threading.active_count() == threads


def test_the_embedded_broker_starts_and_stops_twice_on_the_same_port() -> None:
    broker = EmbeddedBroker(port=0)
    urls = []
    for payload in (b"first", b"second"):
        broker.start()
        broker.start()
        urls.append(broker.url)
        with Peer(broker.url) as peer:
            peer.subscribe("test/restart")
            peer.publish("test/restart", payload)
            assert peer.receive().payload == payload
        broker.stop()
        broker.stop()

    assert not broker.running
    assert urls[0] == urls[1]


def test_the_embedded_broker_forwards_what_it_accepted_before_it_stops() -> None:
    # The demo's vehicles publish their last statuses as the broker stops with them.
    count = 500
    broker = EmbeddedBroker(port=0)
    broker.start()
    with Peer(broker.url) as listener, Peer(broker.url) as sender:
        listener.subscribe("test/last-words")
        sent = [sender.client.publish("test/last-words", b"%d" % i, qos=1) for i in range(count)]
        for info in sent:
            info.wait_for_publish(TIMEOUT_S)  # PUBACK: the broker has accepted it
        broker.stop()
        _wait_until(lambda: not listener.client.is_connected(), "disconnection")
        inbox = listener.inbox
        received = {bytes(inbox.get_nowait().payload) for _ in range(inbox.qsize())}

    assert received == {b"%d" % i for i in range(count)}


def _topic_and_payload(message: mqtt.MQTTMessage) -> tuple[str, bytes]:
    return message.topic, bytes(message.payload)


def _password_file(directory: Path, users: dict[str, str]) -> Path:
    path = directory / "passwd"
    path.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
    subprocess.run([mosquitto_binary("mosquitto_passwd"), "-U", str(path)], check=True,
                   capture_output=True, timeout=TIMEOUT_S)
    return path


def test_the_written_acl_lets_a_vehicle_write_only_its_own_topics(tmp_path: Path) -> None:
    users = {"gateway": "pw-gateway", "veh-1": "pw-veh-1", "veh-2": "pw-veh-2"}
    acl_file = tmp_path / "acl"
    acl_file.write_text(acl_text(topics.VEHICLE_KINDS, topics.ROOT))
    options = {"allow_anonymous": "false", "acl_file": str(acl_file),
               "password_file": str(_password_file(tmp_path, users))}
    with Mosquitto(options=options) as server:
        url = {user: f"mqtt://{user}:{pw}@127.0.0.1:{server.port}" for user, pw in users.items()}
        with Peer(url["gateway"]) as gateway, Peer(url["veh-1"]) as veh1, \
                Peer(url["veh-2"]) as veh2:
            gateway.subscribe("fleet/v1/vehicles/+/+")
            veh1.subscribe("fleet/v1/global/#")
            veh1.subscribe("fleet/v1/vehicles/veh-2/status")

            # Each publish is acknowledged before the next, so the broker handles them in order.
            veh1.publish("fleet/v1/vehicles/veh-2/update", b"spoofed")
            veh1.publish("fleet/v1/global/model", b"forged")
            gateway.publish("fleet/v1/vehicles/veh-1/update", b"forged")
            veh2.publish("fleet/v1/vehicles/veh-2/status", b"online", retain=True)
            veh1.publish("fleet/v1/vehicles/veh-1/update", b"own")
            gateway.publish("fleet/v1/global/model", b"model")

            gateway_got = [_topic_and_payload(gateway.receive()) for _ in range(2)]
            veh1_got = [_topic_and_payload(veh1.receive())]

    assert gateway_got == [("fleet/v1/vehicles/veh-2/status", b"online"),
                           ("fleet/v1/vehicles/veh-1/update", b"own")]
    assert veh1_got == [("fleet/v1/global/model", b"model")]
    assert gateway.inbox.empty() and veh1.inbox.empty()
