"""Write throughput of the InfluxDB store to a real time-series server, by batch size.

Starts Debian's victoria-metrics (InfluxDB v2 write API) on a free port. For each batch
size, records a mix of alerts, accepted updates (two points each) and statuses through
:class:`InfluxStore` while no server answers (so they wait in the outbox, as in an outage),
then opens the store again against the server and times writing that backlog until the
server has acknowledged every point; then checks the server holds them all. Prints points
recorded per second (what the gateway pays: a local SQLite row and an outbox row) and points
written per second (gzip batches to the server).

    python -m benchmarks.influx_write --points 60000 --batch-size 500 5000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from federation.features import VEHICLE_SCHEMA
from federation.messages import Alert, Status, Update
from federation.summary import ModelSummary
from gateway.store.influx import InfluxSettings, InfluxStore
from gateway.store.schema import MEASUREMENTS
from tests.servers import VictoriaMetrics

ENV = {"INFLUXDB_V2_ORG": "bench", "INFLUXDB_V2_TOKEN": "bench"}
# One sample per point: the first field of each measurement, which every point carries.
FIRST_FIELDS = "|".join(f"{name}_{next(iter(spec.fields))}" for name, spec in MEASUREMENTS.items())
POINTS = f'{{__name__=~"{FIRST_FIELDS}"}}'


def _records(points: int, vehicles: int, seed: int) -> list[Alert | Update | Status]:
    """Alerts, updates and statuses of ``vehicles`` vehicles: ``points`` points in all."""
    rng = np.random.default_rng(seed)
    names = VEHICLE_SCHEMA.names
    summary = ModelSummary.from_array(names, rng.random((50, len(names))))
    update = Update("veh-0000", 1, 0, summary, 1.0, 1e-5, 1.0, 1.7e9)
    records: list[Alert | Update | Status] = []
    made = 0
    while made < points:
        vehicle = f"veh-{int(rng.integers(vehicles)):04d}"
        kind = made % 3
        if kind == 0:
            sensor = str(rng.choice(VEHICLE_SCHEMA.health))
            records.append(Alert(vehicle, 1.7e9, float(rng.normal(8, 1)), 6.0,
                                 VEHICLE_SCHEMA.feature(sensor).subsystem or "", (
                                     (sensor, float(rng.normal(8, 1))),), 3))
        elif kind == 1:
            records.append(replace(update, vehicle_id=vehicle, round=made))
            made += 1
        else:
            records.append(Status(vehicle, "online", 1.7e9))
        made += 1
    return records


def _record(store: InfluxStore, record: Alert | Update | Status) -> None:
    if isinstance(record, Alert):
        store.record_alert(record)
    elif isinstance(record, Update):
        store.record_budget(record)
    else:
        store.record_status(record)


def run(points: int, batch_size: int, vm: VictoriaMetrics, seed: int) -> dict[str, float]:
    """Record ``points`` while the server is away, then time writing the backlog to it."""
    records = _records(points, vehicles=500, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        local = f"batch_size={batch_size}&local={Path(tmp) / 'bench.db'}"
        away = InfluxStore(InfluxSettings.from_url(f"influx://127.0.0.1:9/b?{local}", ENV))
        start = time.perf_counter()
        for record in records:
            _record(away, record)
        recorded_s = time.perf_counter() - start
        queued = away.outbox_stats().queued
        away.close(timeout_s=0)
        before = vm.samples(POINTS)
        start = time.perf_counter()
        store = InfluxStore(InfluxSettings.from_url(f"influx://127.0.0.1:{vm.port}/b?{local}",
                                                    ENV))
        if not store.drain(timeout_s=600):
            raise RuntimeError("the server did not take every point within 600 s")
        written_s = time.perf_counter() - start
        stats = store.outbox_stats()
        store.close()
    return {"points": stats.written, "on_server": _settled_samples(vm, before, stats.written),
            "batches": stats.batches, "errors": stats.write_errors,
            "record_pps": queued / recorded_s, "write_pps": stats.written / written_s,
            "seconds": written_s}


def _settled_samples(vm: VictoriaMetrics, before: int, expected: int) -> int:
    """New points on the server (one sample of each point's first field), once searchable."""
    deadline = time.monotonic() + 10
    while (stored := vm.samples(POINTS) - before) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.points} points per run (alerts, updates: participation + privacy, statuses)"
          f" to victoria-metrics over the InfluxDB v2 write API, gzip")
    print(f"{'batch':>6} {'points':>8} {'on server':>9} {'requests':>8} {'errors':>6} "
          f"{'recorded/s':>11} {'written/s':>10} {'seconds':>8}")
    logging.getLogger("gateway.store.outbox").setLevel(logging.CRITICAL)  # the away phase fails
    with VictoriaMetrics() as vm:
        for batch_size in args.batch_size:
            r = run(args.points, batch_size, vm, args.seed)
            print(f"{batch_size:>6} {r['points']:>8.0f} {r['on_server']:>9.0f} "
                  f"{r['batches']:>8.0f} {r['errors']:>6.0f} {r['record_pps']:>11,.0f} "
                  f"{r['write_pps']:>10,.0f} {r['seconds']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
