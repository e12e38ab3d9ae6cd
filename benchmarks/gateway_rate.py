"""The gateway's update throughput against a bare paho subscriber on the same stream.

Starts a fresh Mosquitto (Debian's; ``--inflight`` is its ``max_inflight_messages``, what it
sends a client before that client acknowledges: 20 by default), ``fedfleet gateway`` (SQLite
store, one long round) and a bare paho subscriber in a process of its own, both on QoS 1. Then
one client publishes ``--updates`` valid updates (a real vehicle's exact summary, each from a
vehicle of its own, in the binary form vehicles send or, with ``--form json``, as JSON) as
fast as the broker takes them. It prints, as a table and as JSON, how
long each side took from the first publish to the last update (the gateway: accepted and
committed to its store; the subscriber: received), each as updates per second, and the
gateway's share of the subscriber's rate: a ratio within one run, which is what to compare
on a shared machine. It also prints the CPU time each spent an update (the gateway's
process from the first publish to its last commit, the subscriber's from its first update to
its last), which the machine's other load moves far less than the rates.

With ``--backlog`` both subscribers are paused (``SIGSTOP``) while every update is published,
so that the broker holds the whole stream for them; they resume together and each is timed
from then: the highest rate the broker can feed them, rather than the publisher's.

    python -m benchmarks.gateway_rate --updates 20000 --inflight 20
    python -m benchmarks.gateway_rate --updates 20000 --form json
    python -m benchmarks.gateway_rate --updates 50000 --backlog

Keep ``--updates`` times the update's size under the gateway's inbox (64 MiB): past it the
gateway refuses what it cannot hold (``overloaded``) and the benchmark never ends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil

from benchmarks.report import print_report
from devices.runners.fleet import simulated_vehicles
from federation import messages, topics
from federation.messages import RoundOpen, Update
from federation.transport import make_client, parse_mqtt_url
from tests.processes import Command, open_round, read_store, wait_until
from tests.servers import Mosquitto


def updates(count: int, round_number: int, form: str = "json") -> list[tuple[str, bytes]]:
    """``count`` valid exact updates for ``round_number``, each from a vehicle of its own, as
    JSON or in the binary ``form``."""
    vehicle = simulated_vehicles(1, 0, None, clock=lambda: 0.0)[0]
    vehicle.on_message(topics.ROUND_TOPIC, messages.encode(RoundOpen(round_number, 0.0, 1e12,
                                                                     1, 0)))
    sent = [out for _ in range(vehicle.min_readings_per_update) for out in vehicle.step()]
    update = messages.decode(Update, sent[-1].payload)
    ids = [f"rate-{index:06d}" for index in range(count)]
    encode = messages.encode_binary if form == "binary" else messages.encode
    return [(topics.update_topic(vid), encode(dataclasses.replace(update, vehicle_id=vid)))
            for vid in ids]


def subscriber(url: str, count: int, ready: Any, done: Any) -> None:
    """Count updates received on QoS 1 (paho acknowledges each at once); put the monotonic
    time of the ``count``-th on ``done``, and the CPU seconds the process spent from the
    first to it."""
    target = parse_mqtt_url(url)
    client = make_client("bench-bare-subscriber", target)
    received, first_cpu_s = [0], [0.0]
    finished = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] == 1:
            first_cpu_s[0] = time.process_time()
        if received[0] == count:
            done.put((time.monotonic(), time.process_time() - first_cpu_s[0]))
            finished.set()

    client.on_connect = lambda c, *_: c.subscribe(topics.subscription(topics.UPDATE), 1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.connect(target.host, target.port)
    client.loop_start()
    finished.wait(600)
    client.disconnect()
    client.loop_stop()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = work / "gw.db"
    options = {"max_queued_messages": "0", "max_inflight_messages": str(args.inflight)}
    with Mosquitto(options=options) as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", "3600",
                          "--store", f"sqlite:///{db}", "--http-port", "0", cwd=work)
        context = multiprocessing.get_context("spawn")
        ready, done = context.Event(), context.Queue()
        bare = context.Process(target=subscriber, args=(broker.url, args.updates, ready, done))
        bare.start()
        target = parse_mqtt_url(broker.url)
        publisher = make_client("bench-publisher", target)
        process = gateway.process
        assert process is not None and bare.pid is not None
        paused = (process.pid, bare.pid) if args.backlog else ()
        try:
            wait_until(lambda: open_round(db)[0] >= 1, 30, "the gateway's first round")
            wait_until(ready.is_set, 30, "the bare subscriber's subscription")
            stream = updates(args.updates, open_round(db)[0], args.form)
            publisher.max_inflight_messages_set(1000)
            publisher.max_queued_messages_set(0)
            publisher.connect(target.host, target.port)
            publisher.loop_start()
            wait_until(publisher.is_connected, 10, "the publisher's connection")
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            gateway_cpu_s = _cpu_s(process.pid)  # none is used while it is paused
            began = time.monotonic()
            sent = [publisher.publish(topic, payload, qos=1) for topic, payload in stream]
            publish_s = time.monotonic() - began
            if paused:  # the broker holds them all: time the subscribers from their resumption
                for info in sent:
                    info.wait_for_publish(60)
                began = time.monotonic()
                _resume(paused)
            wait_until(lambda: _accepted(db) >= args.updates or process.poll() is not None,
                       600, "every update accepted by the gateway")
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited:\n{gateway.output()[-2000:]}")
            gateway_done = time.monotonic()
            gateway_cpu_s = _cpu_s(process.pid) - gateway_cpu_s
            bare_done, bare_cpu_s = done.get(timeout=600)
        finally:
            _resume(paused)
            publisher.disconnect()
            publisher.loop_stop()
            bare.join(30)
            gateway.stop(60)
    gateway_s, bare_s = gateway_done - began, bare_done - began
    return {
        "updates": args.updates, "form": args.form, "update_bytes": len(stream[0][1]),
        "feed": "broker backlog" if args.backlog else "live publisher",
        "broker_max_inflight_messages": args.inflight,
        "publish_per_s": round(args.updates / publish_s),
        "bare_subscriber_per_s": round(args.updates / bare_s),
        "gateway_per_s": round(args.updates / gateway_s),
        "gateway_over_bare": round(bare_s / gateway_s, 3),
        "bare_subscriber_cpu_us_per_update": round(bare_cpu_s / (args.updates - 1) * 1e6, 1),
        "gateway_cpu_us_per_update": round(gateway_cpu_s / args.updates * 1e6, 1),
        "rejected": dict(read_store(db, "SELECT reason, SUM(count) FROM rejections "
                                        "GROUP BY reason")),
    }


def _cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) process ``pid`` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _resume(pids: tuple[int, ...]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _accepted(db: Path) -> int:
    return int(read_store(db, "SELECT COUNT(*) FROM accepted_updates")[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=20,
                        help="Mosquitto's max_inflight_messages (its default: 20)")
    parser.add_argument("--form", choices=("binary", "json"), default="binary",
                        help="the updates' form (vehicles send binary)")
    parser.add_argument("--backlog", action="store_true",
                        help="publish while both subscribers are paused, then time them draining "
                             "the broker's queue")
    args = parser.parse_args()
    report = run(args, Path(tempfile.mkdtemp(prefix="fedfleet-gateway-rate-")))
    print_report(report)


if __name__ == "__main__":
    main()
