"""Round close latency: from a round's deadline to its global model at a subscriber.

Starts a fresh Mosquitto and ``fedfleet gateway`` (SQLite store, ``--round-seconds``), then,
for each of ``--rounds`` rounds, reads the retained ``round`` message, publishes
``--participants`` valid updates for it (a real vehicle's summary, each from a vehicle of its
own, ``--privacy`` off, central or local) and waits for the ``model`` message the round
produces. The latency of a round is the model's arrival (``time.time()`` at a plain paho
subscriber) less the deadline the round message announced: what a vehicle waits for the new
model once the round is over, with the merge, the store's commit, the encoding and the
broker's delivery in it. It prints the latency's median, 99th percentile and maximum, and how
many updates each model merged (a round whose updates did not all arrive in time counts
fewer: see ``participants_min``).

    python -m benchmarks.round_close --participants 10000 --rounds 20
    python -m benchmarks.round_close --participants 50000 --rounds 8 --privacy central

``--round-seconds`` must leave time to publish every update (about 2,000-5,000 a second on a
2-core machine); the default gives one second per 1,500 updates, and at least 3 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from benchmarks.gateway_rate import updates
from benchmarks.report import print_report
from federation import messages, topics
from federation.messages import Update
from federation.transport import make_client, parse_mqtt_url
from tests.processes import Command
from tests.servers import Mosquitto

_CENTRAL: dict[str, Any] = {"privacy": "central", "mechanism": "gaussian", "epsilon": 0.5,
                            "delta": 1e-5, "clip_norm": 4.0}
_LOCAL: dict[str, Any] = {"privacy": "local", "mechanism": "gaussian", "noise_std": 0.5}


def templates(count: int, privacy: str) -> list[tuple[str, bytes]]:
    """``count`` updates for round 1 in ``privacy``, ready to be renumbered by :func:`for_round`."""
    made = updates(count, 1)
    if privacy == "off":
        return made
    fields = _CENTRAL if privacy == "central" else _LOCAL
    first = messages.decode(Update, made[0][1])
    return [(topic, messages.encode(dataclasses.replace(
        first, vehicle_id=topics.parse_vehicle_topic(topic)[0], **fields)))  # type: ignore[index]
        for topic, _ in made]


def for_round(payload: bytes, number: int) -> bytes:
    """``payload`` (an update for round 1) for round ``number``."""
    return payload.replace(b'"round":1,', b'"round":%d,' % number, 1)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    db = work / "gw.db"
    round_s = args.round_seconds or max(3.0, args.participants / 1500)
    stream = templates(args.participants, args.privacy)
    events: queue.Queue[tuple[float, str, dict[str, Any]]] = queue.Queue()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        events.put((time.time(), msg.topic, json.loads(msg.payload)))

    with Mosquitto(options={"max_queued_messages": "0"}) as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", f"{round_s:g}",
                          "--store", f"sqlite:///{db}", "--http-port", "0", cwd=work)
        target = parse_mqtt_url(broker.url)
        listener = make_client("bench-round-listener", target)
        listener.on_connect = lambda c, *_: c.subscribe(
            [(topics.ROUND_TOPIC, 1), (topics.MODEL_TOPIC, 1)])
        listener.on_message = on_message
        publisher = make_client("bench-round-publisher", target)
        publisher.max_inflight_messages_set(1000)
        publisher.max_queued_messages_set(0)
        for client in (listener, publisher):
            client.connect(target.host, target.port)
            client.loop_start()
        try:
            closes = _rounds(args.rounds, round_s, stream, events, publisher)
        except queue.Empty:
            raise TimeoutError(f"no round closed; the gateway said:\n{gateway.output()}") from None
        finally:
            for client in (listener, publisher):
                client.disconnect()
                client.loop_stop()
            gateway.stop(60)
    latency_ms = np.array([c[0] for c in closes]) * 1000
    merged = [c[1] for c in closes]
    return {
        "participants": args.participants, "privacy": args.privacy, "rounds": len(closes),
        "round_seconds": round_s,
        "close_ms_p50": round(float(np.percentile(latency_ms, 50)), 1),
        "close_ms_p99": round(float(np.percentile(latency_ms, 99)), 1),
        "close_ms_max": round(float(latency_ms.max()), 1),
        "participants_min": min(merged), "participants_max": max(merged),
        "model_bytes": closes[-1][2],
    }


def _rounds(count: int, round_s: float, stream: list[tuple[str, bytes]],
            events: queue.Queue[tuple[float, str, dict[str, Any]]],
            publisher: mqtt.Client) -> list[tuple[float, int, int]]:
    """Feed ``count`` rounds; each round's (latency s, updates merged, model bytes). The first
    round announced may be half over when the benchmark hears of it: it is fed, not timed."""
    closes: list[tuple[float, int, int]] = []
    deadlines: dict[int, float] = {}
    while len(closes) < count:
        arrived, topic, obj = events.get(timeout=round_s * 3 + 60)
        if topic == topics.ROUND_TOPIC:
            deadlines[obj["round"]] = obj["deadline"]
            for vehicle_topic, payload in stream:
                publisher.publish(vehicle_topic, for_round(payload, obj["round"]), qos=1)
        elif obj["round"] in deadlines and obj["round"] > min(deadlines):
            size = len(json.dumps(obj, separators=(",", ":")))
            closes.append((arrived - deadlines[obj["round"]], obj["participants"], size))
            print(f"round {obj['round']}: {closes[-1][0] * 1000:.1f} ms, "
                  f"{obj['participants']} merged", flush=True)
    return closes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--privacy", choices=("off", "central", "local"), default="central")
    parser.add_argument("--round-seconds", type=float, default=0.0,
                        help="the gateway's round length (0: from --participants)")
    args = parser.parse_args()
    report = run(args, Path(tempfile.mkdtemp(prefix="fedfleet-round-close-")))
    print_report(report)


if __name__ == "__main__":
    main()
