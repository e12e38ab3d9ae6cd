"""The client multiplexer: paho's socket hooks on one selector."""

from __future__ import annotations

import socket
import time

import pytest

from devices.runners.mux import ClientMux
from federation.transport import MqttTarget, make_client
from tests.servers import free_port


def test_a_client_that_closes_its_socket_after_the_mux_closed_raises_nothing():
    # Arrange: a client whose socket is open and has something to write when the mux closes
    mux = ClientMux()
    client = make_client("test-mux-late-close", MqttTarget("127.0.0.1", free_port()))
    mux.add(client, "127.0.0.1", free_port())  # nothing listens: it retries later
    ours, theirs = socket.socketpair()
    client.on_socket_open(client, None, ours)
    client.on_socket_register_write(client, None, ours)
    mux.close()

    # Act: what paho does when it closes that socket (at exit, say)
    client.on_socket_unregister_write(client, None, ours)
    client.on_socket_register_write(client, None, ours)
    client.on_socket_close(client, None, ours)

    # Assert
    assert mux.connected() == 0
    ours.close()
    theirs.close()


def test_a_live_client_is_kept_alive_every_twelfth_of_its_keepalive_not_every_second(
        monkeypatch):
    mux = ClientMux()
    client = make_client("test-mux-keepalive", MqttTarget("127.0.0.1", free_port()))
    mux.add(client, "127.0.0.1", free_port(), keepalive_s=60)
    ours, theirs = socket.socketpair()
    client.on_socket_open(client, None, ours)
    checks: list[float] = []
    monkeypatch.setattr(client, "loop_misc", lambda: checks.append(0.0))
    now = time.monotonic()

    for second in range(20):
        mux._housekeeping(now + second)

    assert len(checks) == 4  # at 0, 5, 10 and 15 s
    mux.close()
    ours.close()
    theirs.close()


@pytest.mark.integration
def test_a_client_on_a_real_broker_stays_connected_across_keepalives(mosquitto):
    mux = ClientMux()
    client = make_client("test-mux-alive", MqttTarget("127.0.0.1", mosquitto.port))
    mux.add(client, "127.0.0.1", mosquitto.port, keepalive_s=2)  # checked every second
    lost: list[object] = []
    client.on_disconnect = lambda *args: lost.append(args)
    end = time.monotonic() + 7.0  # the broker drops a client silent for 1.5 keepalives

    while time.monotonic() < end:
        mux.poll(0.1)

    assert mux.connected() == 1
    assert not lost
    mux.close()
