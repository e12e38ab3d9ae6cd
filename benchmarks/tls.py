"""What TLS costs: connecting clients and QoS 1 publishes, over TLS and plain, one Mosquitto.

Writes a setup with ``fedfleet broker-setup`` (password logins, a TLS listener and a plain one
on 127.0.0.1, both on one Mosquitto), then, for each listener in turn:

- **connect**: ``--clients`` vehicles connect one after another, each timed from the TCP
  connect to its CONNACK (handshake, login, the broker's password check), then disconnect;
- **publish**: one vehicle publishes ``--messages`` QoS 1 updates of ``--payload-bytes`` with
  up to ``--inflight`` unacknowledged, timed from the first publish to the last PUBACK.

It prints a table and the same figures as JSON. Both listeners share the broker, the logins
and the ACL, so the difference is TLS alone (ECDSA P-256 certificates, TLS 1.3 as negotiated).

    python -m benchmarks.tls --clients 200 --messages 20000
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from broker.access import client_login
from federation.transport import MqttTarget, make_client
from fedfleet.cli import main as fedfleet
from tests.servers import Mosquitto, free_port

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Figures:
    connect_ms_median: float
    connect_ms_p95: float
    clients_per_s: float
    publishes_per_s: float
    payload_mb_per_s: float


def _connect_ms(target: MqttTarget) -> float:
    """Connect ``target``'s login once, wait for CONNACK, disconnect; milliseconds taken."""
    client = make_client(f"fedfleet-{target.username}", target)
    started = time.perf_counter()
    client.connect(target.host, target.port)
    while not client.is_connected():
        if client.loop(timeout=1.0) != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{target.username}: refused or lost")
        if time.perf_counter() - started > TIMEOUT_S:
            raise TimeoutError(f"{target.username}: no CONNACK")
    elapsed_ms = (time.perf_counter() - started) * 1000
    client.disconnect()
    client.loop(timeout=0.1)
    return elapsed_ms


def _publish_rate(target: MqttTarget, messages: int, payload_bytes: int,
                  inflight: int) -> float:
    """QoS 1 publishes per second, from the first publish to the last PUBACK."""
    client = make_client(f"fedfleet-{target.username}", target)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    client.connect(target.host, target.port)
    client.loop_start()
    deadline = time.monotonic() + TIMEOUT_S
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise TimeoutError("no CONNACK")
        time.sleep(0.01)
    topic, payload = f"fleet/v1/vehicles/{target.username}/update", b"x" * payload_bytes
    started = time.perf_counter()
    for _ in range(messages):
        client.publish(topic, payload, qos=1)
    for _ in range(messages):
        if not acked.acquire(timeout=TIMEOUT_S):
            raise TimeoutError("PUBACKs stopped")
    elapsed_s = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return messages / elapsed_s


def _measure(logins: list[MqttTarget], messages: int, payload_bytes: int,
             inflight: int) -> Figures:
    _connect_ms(logins[0])  # warm-up: the first connection pays for lazy set-up on both sides
    started = time.perf_counter()
    times_ms = sorted(_connect_ms(login) for login in logins)
    clients_per_s = len(logins) / (time.perf_counter() - started)
    rate = _publish_rate(logins[0], messages, payload_bytes, inflight)
    return Figures(
        connect_ms_median=statistics.median(times_ms),
        connect_ms_p95=times_ms[min(len(times_ms) - 1, int(0.95 * len(times_ms)))],
        clients_per_s=clients_per_s, publishes_per_s=rate,
        payload_mb_per_s=rate * payload_bytes / 1e6)


def run(clients: int, messages: int, payload_bytes: int, inflight: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedfleet-tls-") as workdir:
        setup = Path(workdir) / "setup"
        tls_port, plain_port = free_port(), free_port()
        code = fedfleet(["broker-setup", str(setup), "--vehicles", str(clients), "--host",
                         "127.0.0.1", "--port", str(tls_port), "--bind", "127.0.0.1",
                         "--plain-port", str(plain_port),
                         "--broker-user", pwd.getpwuid(os.geteuid()).pw_name])
        if code != 0:
            raise SystemExit(code)
        clients_dir = setup / "clients"
        tls = MqttTarget("127.0.0.1", tls_port, tls=True, ca_file=str(clients_dir / "ca.crt"))
        plain = MqttTarget("127.0.0.1", plain_port)
        ids = [f"veh-{index:04d}" for index in range(clients)]
        with Mosquitto(tls_port, conf=setup / "broker" / "mosquitto.conf", tls=True):
            figures = {}
            for name, base in (("plain", plain), ("tls", tls)):
                logins = []
                for vehicle_id in ids:
                    login = client_login(clients_dir, vehicle_id)
                    logins.append(replace(base, username=login.username,
                                          password=login.password))
                figures[name] = _measure(logins, messages, payload_bytes, inflight)
    return {"clients": clients, "messages": messages, "payload_bytes": payload_bytes,
            "inflight": inflight, **{k: vars(v) for k, v in figures.items()}}


def _table(result: dict[str, Any]) -> str:
    plain, tls = result["plain"], result["tls"]
    rows = [("connect, median (ms)", "connect_ms_median", "{:.2f}"),
            ("connect, 95th percentile (ms)", "connect_ms_p95", "{:.2f}"),
            ("clients connected per second", "clients_per_s", "{:,.0f}"),
            ("QoS 1 publishes per second", "publishes_per_s", "{:,.0f}"),
            ("payload MB per second", "payload_mb_per_s", "{:.2f}")]
    lines = [f"{result['clients']} clients one after another; {result['messages']:,} QoS 1 "
             f"publishes of {result['payload_bytes']} bytes, {result['inflight']} in flight",
             f"{'':32}{'plain':>12}{'TLS':>12}{'TLS / plain':>14}"]
    for label, key, fmt in rows:
        lines.append(f"{label:32}{fmt.format(plain[key]):>12}{fmt.format(tls[key]):>12}"
                     f"{tls[key] / plain[key]:>14.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--payload-bytes", type=int, default=2_300,
                        help="about one vehicle update (default 2,300)")
    parser.add_argument("--inflight", type=int, default=20)
    args = parser.parse_args()
    result = run(args.clients, args.messages, args.payload_bytes, args.inflight)
    print(_table(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
