"""The client multiplexer: paho's socket hooks on one selector."""

from __future__ import annotations

import socket

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
