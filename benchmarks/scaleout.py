"""Gateway workers: updates merged per second with 1, 2 and 4 workers, and what each part costs.

Three figures:

- **Through one broker**: a fresh Mosquitto, ``K`` gateway workers (``gateway/worker.py``),
  each in a process of its own on one shared subscription, and one client that publishes
  ``--updates`` valid exact updates (a real vehicle's summary, each from a vehicle of its own)
  as fast as the broker takes them. The rate is the updates over the time from the first
  publish to the last update any worker merged; every update must be merged by one worker.
  With it, the CPU each worker process and each broker spent per update (``psutil``).
  Then the same through two region brokers bridged to a top one (``broker/bridge.py``), with
  1, 2 or 4 region gateways on each (a shared subscription on the region's broker when more
  than one), half the updates published to each region.
- **A worker's cost per update** (no broker): decoding, checking and merging one update; and
  one gateway's, which also stores it.
- **The coordinator's cost per partial** (no broker): decoding a partial of ``M`` vehicles,
  taking it into the round (no vehicle twice) and merging its summary.

Workers merge exact updates only under a strategy that merges them by the exact rule: every
part here runs ``mean`` (``--strategy mean``); the default clips exact updates centred, which
needs every vector at once, and its workers forward them to the gateway instead.

    python -m benchmarks.scaleout --updates 20000 --workers 1 2 4

(``--workers 1 2 4`` runs 1, 2 and 4 workers on one broker, then 1, 2 and 4 region gateways
on each of two bridged region brokers.)
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import pwd
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil

from benchmarks.gateway_rate import updates
from benchmarks.report import print_report
from broker.bridge import Bridge, bridge_config
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import Partial, RoundOpen, Update
from federation.summary import ModelSummary
from federation.transport import MqttTarget, make_client, parse_mqtt_url
from gateway.rounds import Round
from gateway.service import Gateway
from gateway.store import SQLiteStore
from gateway.strategy import make_strategy
from gateway.worker import GROUP, Worker
from tests.servers import HOST, Mosquitto, free_port

IDLE_S = 3.0  # a worker that merged nothing for this long has had its share
MERGING = make_strategy("mean")  # the strategy whose merge of exact updates decomposes


def member(url: str, worker_id: str, group: str | None, ready: Any, results: Any) -> None:
    """One worker process: merge its share; report how many, when the last one came, and the
    CPU seconds the process spent from its first update on."""
    counted = {"n": 0, "last": 0.0, "cpu_s": 0.0}
    worker = Worker(parse_mqtt_url(url), worker_id, group=group, strategy=MERGING,
                    send=lambda topic, payload: None)
    handle = worker.handle

    def timed(topic: str, payload: bytes) -> None:
        if topic != topics.ROUND_TOPIC and not counted["n"]:
            counted["cpu_s"] = time.process_time()
        handle(topic, payload)
        if topic != topics.ROUND_TOPIC:
            counted["n"] += 1
            counted["last"] = time.monotonic()

    worker.handle = timed  # type: ignore[method-assign]
    worker._client.on_subscribe = lambda *_: ready.release()
    stop = multiprocessing.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    runner.start()
    while counted["n"] == 0 or time.monotonic() - counted["last"] < IDLE_S:
        time.sleep(0.1)
    cpu_s = time.process_time() - counted["cpu_s"]  # the idle wait costs no CPU
    stop.set()
    runner.join(10)
    merged = len(worker.round.accepted) if worker.round else 0
    results.put((worker_id, counted["n"], merged, counted["last"], dict(worker.rejected),
                 cpu_s))


def _publisher(url: str, role: str = "publisher") -> mqtt.Client:
    """A client of its own id: two clients with one id take the connection from each other,
    and each reconnect sends the unacknowledged updates again (copies of them)."""
    target = parse_mqtt_url(url)
    client = make_client(f"bench-{role}-{target.port}", target)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(target.host, target.port)
    client.loop_start()
    return client


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes ``pids`` have spent so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def _flood(count: int, top: str, members: list[tuple[str, str | None]],
           entries: list[str], brokers: list[int]) -> dict[str, Any]:
    """Open round 1 on ``top``; start a worker process on each ``(url, group)`` of
    ``members``; publish ``count`` updates spread over the ``entries`` brokers; time them,
    and the CPU the ``brokers`` (process ids) spent meanwhile."""
    context = multiprocessing.get_context("spawn")
    publishers = [_publisher(url) for url in entries]
    now = time.time()
    announcer = _publisher(top, "announcer")
    announcer.publish(topics.ROUND_TOPIC, messages.encode(
        RoundOpen(1, now, now + 3600, 1, 0)), qos=1, retain=True).wait_for_publish(10)
    ready, results = context.Semaphore(0), context.Queue()
    processes = [context.Process(target=member, args=(url, f"w{i}", group, ready, results))
                 for i, (url, group) in enumerate(members)]
    for process in processes:
        process.start()
    for _ in processes:
        if not ready.acquire(timeout=60):
            raise TimeoutError("a worker did not subscribe within 60 s")
    stream = updates(count, 1)
    broker_cpu_s = _cpu_s(brokers)
    began = time.monotonic()
    for index, (topic, payload) in enumerate(stream):
        publishers[index % len(publishers)].publish(topic, payload, qos=1)
    published = time.monotonic()
    reports = [results.get(timeout=600) for _ in processes]
    broker_cpu_s = _cpu_s(brokers) - broker_cpu_s
    for process in processes:
        process.join(30)
    for client in [*publishers, announcer]:
        client.disconnect()
        client.loop_stop()
    merged = sum(r[2] for r in reports)
    return {
        "updates": count, "merged": merged,
        "publish_per_s": round(count / (published - began)),
        "merged_per_s": round(merged / (max(r[3] for r in reports) - began)),
        "shares": sorted(r[1] for r in reports),
        "worker_cpu_us_per_update": round(sum(r[5] for r in reports) / max(1, merged) * 1e6),
        "broker_cpu_us_per_update": round(broker_cpu_s / count * 1e6),
        "rejected": {k: v for r in reports for k, v in r[4].items()},
    }


def through_broker(count: int, workers: int) -> dict[str, Any]:
    """Updates merged a second by ``workers`` worker processes on one Mosquitto."""
    with Mosquitto(options={"max_queued_messages": "0"}) as broker:
        assert broker.pid is not None
        return _flood(count, broker.url, [(broker.url, GROUP)] * workers, [broker.url],
                      [broker.pid])


def through_regions(count: int, regions: int, per_region: int = 1) -> dict[str, Any]:
    """Updates merged a second by ``per_region`` region gateways on each of ``regions``
    Mosquitto brokers bridged to a top one (the round comes down the bridges), the vehicles
    spread evenly."""
    with contextlib.ExitStack() as stack:
        top = stack.enter_context(Mosquitto())
        urls, pids = [], [top.pid]
        for index in range(regions):
            port = free_port()
            conf = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "region.conf"
            conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\n"
                            f"max_queued_messages 0\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
                            + bridge_config(Bridge(f"r{index}", HOST, top.port)))
            region = stack.enter_context(Mosquitto(port, conf=conf))
            urls.append(region.url)
            pids.append(region.pid)
        group = GROUP if per_region > 1 else None
        return _flood(count, top.url, [(url, group) for url in urls for _ in range(per_region)],
                      urls, [pid for pid in pids if pid is not None])


def worker_cost_us(count: int) -> float:
    """A worker's time to decode, check and merge one update, in microseconds."""
    worker = Worker(MqttTarget("127.0.0.1", 1), "bench", send=lambda topic, payload: None,
                    strategy=MERGING)
    worker.handle(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, 0.0, 1e12, 1, 0)))
    stream = updates(count, 1)
    began = time.perf_counter()
    for topic, payload in stream:
        worker.handle(topic, payload)
    assert worker.round is not None and len(worker.round.accepted) == count
    return (time.perf_counter() - began) / count * 1e6


def gateway_cost_us(count: int) -> float:
    """One gateway's time to decode, check and store one update (SQLite in memory), in
    microseconds: what a worker saves it."""
    gateway = Gateway(MqttTarget("127.0.0.1", 1), SQLiteStore(":memory:"), round_seconds=1e9)
    gateway._publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
    gateway._open_round()
    stream = updates(count, 1)
    began = time.perf_counter()
    for topic, payload in stream:
        gateway.handle(topic, payload)
    gateway.store.flush()
    assert gateway.round is not None and len(gateway.round.accepted) == count
    return (time.perf_counter() - began) / count * 1e6


def coordinator_cost_ms(vehicles: int) -> float:
    """The coordinator's time to decode a partial of ``vehicles``, take it and merge it."""
    summary = messages.decode(Update, updates(1, 1)[0][1]).summary
    partial = Partial("w0", 1, 0, tuple(f"rate-{i:06d}" for i in range(vehicles)),
                      summary.weighted(summary.n * vehicles), 0.0)
    payload = messages.encode(partial)
    began = time.perf_counter()
    current = Round(RoundOpen(1, 0.0, 1.0, 1, 0))
    assert current.add_partial(messages.decode(Partial, payload)) is None
    current.merge(None, MERGING, VEHICLE_SCHEMA, 0.0)
    return (time.perf_counter() - began) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--partial-vehicles", type=int, nargs="+", default=[1_000, 25_000])
    args = parser.parse_args()
    report: dict[str, Any] = {"worker_us_per_update": round(worker_cost_us(5_000), 1),
                              "gateway_us_per_update": round(gateway_cost_us(5_000), 1)}
    for vehicles in args.partial_vehicles:
        report[f"coordinator_ms_per_partial_of_{vehicles}"] = round(
            coordinator_cost_ms(vehicles), 2)
    report["partial_bytes_per_vehicle"] = round(len(messages.encode(Partial(
        "w0", 1, 0, tuple(f"rate-{i:06d}" for i in range(1000)),
        ModelSummary.empty(VEHICLE_SCHEMA.names), 0.0))) / 1000, 1)
    for workers in args.workers:
        for key, value in through_broker(args.updates, workers).items():
            report[f"k{workers}_{key}"] = value
    for workers in args.workers:
        for key, value in through_regions(args.updates, 2, workers).items():
            report[f"regions2_k{workers}_{key}"] = value
    print_report(report)


if __name__ == "__main__":
    main()
