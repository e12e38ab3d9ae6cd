"""A secure round against a plain central one over a real Mosquitto: bytes, CPU, latency.

For each ``--vehicles`` count and each mode, starts a fresh Mosquitto, the simulated vehicles
spread over ``--processes`` processes of their own (:mod:`benchmarks.wire_fleet`), then
``fedfleet gateway`` (its own process: ``--privacy secagg`` or the default central,
``--target-updates`` the count, rounds long enough that no deadline is reached), and runs
``--rounds`` timed rounds after one that is fed, not timed. In a plain round each vehicle
sends one central ``update`` (binary form) as soon as it hears of the round; in a secure
round each answers the four phases through its own
:class:`~federation.secagg.client.SecAggClient` (noise on, seeded), and every phase closes
as soon as every vehicle in it has answered. For each timed round it measures:

- **bytes a vehicle sends and receives**, the MQTT packets of every message it sends or
  hears in the round (the announcements, its own messages, the model) and their ``PUBACK``
  (:mod:`benchmarks.wire_fleet` says exactly what is counted), and the payloads alone;
- **CPU of a vehicle**: its state machine and codec (in a plain round, encoding its
  update), on the thread that runs them;
- **CPU of the gateway**: the ``fedfleet gateway`` process's user and system time from one
  round's model to the next's (``psutil``), for the round and for each vehicle;
- **latency**: from the first vehicle hearing of the round to the arrival of the model it
  produced at a plain subscriber;
- **the vehicles' serial work**: the CPU of the busiest vehicle process over the round (its
  MQTT client included), and of all of them. The simulated vehicles share the machine's cores
  with the gateway and the broker and work through their slice one after another, where a
  real fleet's vehicles work at once: the latency less the busiest process's work is nearer
  what a fleet would see.

It prints, per count, the medians over the timed rounds, and then every figure as JSON.

    python -m benchmarks.secagg_wire --vehicles 100 1000 10000 --processes 2 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil

from benchmarks.report import print_report
from benchmarks.round_close import templates
from benchmarks.secagg import releases
from benchmarks.wire_fleet import run_plain, run_secure
from federation import messages, topics
from federation.messages import GlobalModel, Update
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from tests.processes import Command
from tests.servers import Mosquitto

ROUND_S = 1800.0  # never reached: every round closes at its target
WAIT_S = 1800.0  # the longest a round may take before the benchmark gives up
Arrival = tuple[float, int, float]  # when a model came, its round, the gateway's CPU by then


def _listener(target: MqttTarget, gateway: psutil.Process,
              models: queue.Queue[Arrival]) -> mqtt.Client:
    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        times = gateway.cpu_times()
        number = messages.decode(GlobalModel, bytes(msg.payload)).round
        models.put((arrived, number, times.user + times.system))

    client = make_client("bench-secagg-listener", target)
    client.on_connect = lambda c, *_: c.subscribe(topics.MODEL_BINARY_TOPIC, 1)
    client.on_message = on_message
    client.connect(target.host, target.port)
    client.loop_start()
    return client


class _Fleet:
    """The simulated vehicles, in ``processes`` processes started at once."""

    def __init__(self, url: str, vehicles: int, processes: int, secure: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop, self.results = context.Event(), context.Queue()
        ids = [f"veh-{k:05d}" for k in range(vehicles)]
        vectors = releases(vehicles, seed=0)[0] if secure else {}
        update = messages.decode(Update, templates(1, "central")[0][1])
        self.workers = []
        for index, chunk in enumerate(np.array_split(np.array(ids), processes)):
            ready = context.Event()
            args = ((url, {v: vectors[v] for v in chunk}, index) if secure
                    else (url, update, list(chunk), index))
            worker = context.Process(target=run_secure if secure else run_plain,
                                     args=(*args, ready, self.stop, self.results))
            worker.start()
            self.workers.append(worker)
            if not ready.wait(300):
                raise TimeoutError(f"vehicle process {index} did not start")

    def close(self) -> list[dict[str, Any]]:
        """Stop the processes; what each heard, spent and counted."""
        self.stop.set()
        reports = [self.results.get(timeout=60) for _ in self.workers]
        for worker in self.workers:
            worker.join(30)
        return reports


def _next_model(models: queue.Queue[Arrival], gateway: Command) -> Arrival:
    """The next model's arrival; raises once the gateway has exited or ``WAIT_S`` passed."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            return models.get(timeout=1.0)
        assert gateway.process is not None
        if gateway.process.poll() is not None:
            raise RuntimeError(f"the gateway exited ({gateway.process.returncode}); it said:\n"
                               f"{gateway.output()[-2000:]}")
    raise TimeoutError(f"no model came in {WAIT_S:g} s; the gateway said:\n{gateway.output()}")


def measure(vehicles: int, rounds: int, processes: int, secure: bool,
            work: Path) -> dict[str, float]:
    """The medians over ``rounds`` timed rounds of ``vehicles``, secure or plain."""
    models: queue.Queue[Arrival] = queue.Queue()
    mode = "secagg" if secure else "central"
    arrivals: dict[int, tuple[float, float]] = {}
    with Mosquitto(options={"max_queued_messages": "0"}) as broker:
        target = parse_mqtt_url(broker.url)
        fleet = _Fleet(broker.url, vehicles, processes, secure)
        gateway = Command("gateway", "--mqtt", broker.url, "--round-seconds", f"{ROUND_S:g}",
                          "--target-updates", str(vehicles), "--privacy", mode,
                          "--store", f"sqlite:///{work / f'{mode}-{vehicles}.db'}",
                          "--http-port", "0", cwd=work)
        assert gateway.process is not None
        listener = _listener(target, psutil.Process(gateway.process.pid), models)
        try:
            while len(arrivals) < rounds + 1:
                arrived, number, cpu_s = _next_model(models, gateway)
                arrivals[number] = (arrived, cpu_s)
                print(f"{mode} {vehicles}: round {number} done", flush=True)
        finally:
            reports = fleet.close()
            listener.loop_stop()
            listener.disconnect()
            gateway.stop(60)
    timed = sorted(arrivals)[1:]
    return _medians([_round(number, vehicles, arrivals, reports) for number in timed])


def _round(number: int, vehicles: int, arrivals: dict[int, tuple[float, float]],
           reports: list[dict[str, Any]]) -> dict[str, float]:
    """One round's figures from the model arrivals and the vehicle processes' reports."""
    (arrived, gateway_s), (_, gateway_before_s) = arrivals[number], arrivals[number - 1]
    heard = min(report["heard"][number] for report in reports)
    spans = [np.subtract(report["snapshots"][number], report["snapshots"][number - 1])
             for report in reports]
    tally = {key: sum(report["tally"][key].get(number, 0) for report in reports)
             for key in ("up", "down", "payload_up", "payload_down")}
    gateway_cpu_s = gateway_s - gateway_before_s
    return {
        "latency_s": arrived - heard,
        "up_bytes": tally["up"] / vehicles, "down_bytes": tally["down"] / vehicles,
        "payload_up_bytes": tally["payload_up"] / vehicles,
        "payload_down_bytes": tally["payload_down"] / vehicles,
        "vehicle_cpu_ms": 1e3 * sum(span[1] for span in spans) / vehicles,
        "gateway_cpu_s": gateway_cpu_s,
        "gateway_cpu_ms_per_vehicle": 1e3 * gateway_cpu_s / vehicles,
        "serial_vehicles_s": max(span[0] for span in spans),
        "vehicles_processes_cpu_s": sum(span[0] for span in spans),
    }


def _medians(figures: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([f[key] for f in figures])) for key in figures[0]}


def _row(vehicles: int, plain: dict[str, float], secure: dict[str, float]) -> dict[str, Any]:
    def total(m: dict[str, float]) -> float:
        return m["up_bytes"] + m["down_bytes"]

    row: dict[str, Any] = {"vehicles": vehicles}
    for name, m in (("plain", plain), ("secure", secure)):
        row |= {f"{name}_{key}": round(value, 4) for key, value in m.items()}
    row |= {"bytes_times_plain": round(total(secure) / total(plain), 2),
            "payload_times_plain": round(
                (secure["payload_up_bytes"] + secure["payload_down_bytes"])
                / (plain["payload_up_bytes"] + plain["payload_down_bytes"]), 2),
            "latency_times_plain": round(secure["latency_s"] / plain["latency_s"], 1),
            "secure_latency_less_serial_s": round(
                secure["latency_s"] - secure["serial_vehicles_s"], 3)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2,
                        help="the processes the simulated vehicles are spread over")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfleet-secagg-wire-"))
    report: dict[str, Any] = {}
    for vehicles in args.vehicles:
        plain = measure(vehicles, args.rounds, args.processes, secure=False, work=work)
        secure = measure(vehicles, args.rounds, args.processes, secure=True, work=work)
        row = _row(vehicles, plain, secure)
        print(json.dumps(row), flush=True)
        report |= {f"{key}_{vehicles}": value for key, value in row.items() if key != "vehicles"}
    print_report(report)


if __name__ == "__main__":
    main()
