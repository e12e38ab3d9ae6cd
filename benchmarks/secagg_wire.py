"""Round latency over a real Mosquitto: a secure round against a plain central one.

For each ``--vehicles`` count, starts a fresh Mosquitto and ``fedfleet gateway`` (its own
process: ``--privacy secagg`` or the default central, ``--target-updates`` the count, rounds
long enough that no deadline is reached), and runs ``--rounds`` rounds. The vehicles are
simulated in this process on one MQTT client: for a plain round they publish one central
``update`` each as soon as they hear of the round; for a secure round each answers the four
phases through its own :class:`~federation.secagg.client.SecAggClient` (noise on, seeded), and
every phase closes as soon as every vehicle in it has answered. A round's latency is from the
moment the vehicles hear of it (the ``round`` message, or the ``secure_round`` one) to the
arrival of the model it produced at a plain subscriber. The first round is fed, not timed
(the vehicles may hear of it late).

All the vehicles' work is done one after another on one thread here, while real vehicles
work in parallel: the report gives that work (``vehicles_cpu_s``) so that the latency a fleet
would see can be bounded below by the latency less it.

    python -m benchmarks.secagg_wire --vehicles 100 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from benchmarks.report import print_report
from benchmarks.round_close import for_round, templates
from benchmarks.secagg import releases
from federation import topics
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from tests.processes import Command
from tests.secagg_clients import Vehicles
from tests.servers import Mosquitto

ROUND_S = 300.0  # never reached: every round closes at its target


def _listener(target: MqttTarget, models: queue.Queue[tuple[float, int]]) -> mqtt.Client:
    client = make_client("bench-secagg-listener", target)
    client.on_connect = lambda c, *_: c.subscribe(topics.MODEL_TOPIC, 1)
    client.on_message = lambda c, u, m: models.put(
        (time.monotonic(), json.loads(m.payload)["round"]))
    client.connect(target.host, target.port)
    client.loop_start()
    return client


def _plain(target: MqttTarget, vehicles: int, heard: dict[int, float]) -> mqtt.Client:
    """Vehicles that publish one central update each when they hear of a round."""
    stream = templates(vehicles, "central")
    client = make_client("bench-plain-vehicles", target)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        number = json.loads(msg.payload)["round"]
        if number in heard:
            return
        heard[number] = time.monotonic()
        for topic, payload in stream:
            client.publish(topic, for_round(payload, number), qos=1)

    client.on_connect = lambda c, *_: c.subscribe(topics.ROUND_TOPIC, 1)
    client.on_message = on_message
    client.connect(target.host, target.port)
    client.loop_start()
    return client


def measure(vehicles: int, rounds: int, secure: bool, work: Path) -> dict[str, Any]:
    """``rounds`` timed rounds of ``vehicles``, secure or plain: latency and vehicles' CPU."""
    models: queue.Queue[tuple[float, int]] = queue.Queue()
    mode = "secagg" if secure else "central"
    with Mosquitto(options={"max_queued_messages": "0"}) as broker:
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", f"{ROUND_S:g}",
                          "--target-updates", str(vehicles), "--privacy", mode,
                          "--store", f"sqlite:///{work / f'{mode}-{vehicles}.db'}", cwd=work)
        target = parse_mqtt_url(broker.url)
        listener = _listener(target, models)
        fleet: Vehicles | None = None
        heard: dict[int, float] = {}
        if secure:
            vectors, _ = releases(vehicles, seed=0)
            fleet = Vehicles(target, vectors)
            heard = fleet.heard
            plain = None
        else:
            plain = _plain(target, vehicles, heard)
        latencies: list[float] = []
        try:
            while len(latencies) < rounds:
                arrived, number = models.get(timeout=600)
                if number in heard and number > min(heard):
                    latencies.append(arrived - heard[number])
                    print(f"{mode} {vehicles}: round {number} {latencies[-1]:.2f} s",
                          flush=True)
        except queue.Empty:
            raise TimeoutError(f"no model came; the gateway said:\n{gateway.output()}") from None
        finally:
            for client in (listener, plain):
                if client is not None:
                    client.loop_stop()
                    client.disconnect()
            if fleet is not None:
                fleet.close()
            gateway.stop(60)
    cpu = fleet.cpu_seconds / len(fleet.heard) if fleet else 0.0
    return {"latency_s": float(np.median(latencies)), "vehicles_cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfleet-secagg-wire-"))
    report: dict[str, Any] = {}
    for vehicles in args.vehicles:
        plain = measure(vehicles, args.rounds, secure=False, work=work)
        secure = measure(vehicles, args.rounds, secure=True, work=work)
        report[f"plain_latency_s_{vehicles}"] = round(plain["latency_s"], 3)
        report[f"secure_latency_s_{vehicles}"] = round(secure["latency_s"], 3)
        report[f"secure_vehicles_cpu_s_{vehicles}"] = round(secure["vehicles_cpu_s"], 3)
        report[f"times_plain_{vehicles}"] = round(secure["latency_s"] / plain["latency_s"], 1)
    print_report(report)


if __name__ == "__main__":
    main()
