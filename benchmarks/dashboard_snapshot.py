"""What one dashboard snapshot costs on a store with a long history.

Fills a temporary SQLite store as a fleet of ``--vehicles`` vehicles would after ``--rounds``
rounds (every vehicle's update accepted each round, an alert every few rounds, statuses,
traffic), then times :func:`gateway.dashboard.figures.snapshot` (every figure the page shows,
read from the store) and each store read behind it. The live stream computes one snapshot per
second while a page is open, so this is the dashboard's load on the gateway's store.

    python -m benchmarks.dashboard_snapshot --vehicles 200 --rounds 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from federation.features import VEHICLE_SCHEMA
from federation.messages import Alert, GlobalModel, Status, Update
from federation.summary import ModelSummary
from gateway.dashboard.figures import snapshot
from gateway.store import RoundRecord, SQLiteStore, Traffic, raw_reading_bytes

SUBSYSTEMS = [(f.subsystem, f.name) for f in VEHICLE_SCHEMA.features if f.subsystem]


def fill(store: SQLiteStore, vehicles: int, rounds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    summary = ModelSummary.from_array(VEHICLE_SCHEMA.names, rng.random((50, len(VEHICLE_SCHEMA))))
    ids = [f"veh-{i:04d}" for i in range(vehicles)]
    for vehicle in ids:
        store.record_status(Status(vehicle, "online", 1.7e9))
    for number in range(1, rounds + 1):
        for vehicle in ids:
            store.record_budget(Update(vehicle, number, number - 1, summary, 1.0, 1e-5,
                                       float(number), 1.7e9 + number))
        if number % 5 == 0:
            subsystem, sensor = SUBSYSTEMS[int(rng.integers(len(SUBSYSTEMS)))]
            store.record_alert(Alert(ids[int(rng.integers(vehicles))], 1.7e9 + number, 6.0, 4.0,
                                     subsystem, ((sensor, 6.0),), number))
        store.record_round(RoundRecord(number, 0.0, 1.0, vehicles, 0, True, number))
        store.record_traffic(1.0, "update", Traffic(vehicles, vehicles * 2_100, vehicles * 60))
    store.record_model(GlobalModel(rounds, rounds, vehicles, summary, 1.7e9))
    store.flush()


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        started = time.perf_counter()
        fill(store, args.vehicles, args.rounds, args.seed)
        print(f"store: {args.vehicles} vehicles, {args.rounds} rounds, "
              f"{args.vehicles * args.rounds:,} accepted updates, filled in "
              f"{time.perf_counter() - started:.1f} s")
        reading_bytes = raw_reading_bytes()
        body = json.dumps(snapshot(store, reading_bytes)).encode()
        print(f"snapshot: {median_ms(lambda: snapshot(store, reading_bytes), args.repeat):.1f} ms "
              f"(median of {args.repeat}), {len(body) / 1000:.0f} kB of JSON")
        reads: dict[str, Callable[[], Any]] = {
            "vehicles": store.vehicles, "participants": lambda: store.participants(30),
            "rounds": lambda: store.rounds(30), "alerts": lambda: store.alerts(50),
            "budgets": store.budgets, "latest_model": store.latest_model,
            "traffic": store.traffic, "rejection_counts": store.rejection_counts,
        }
        for name, read in reads.items():
            print(f"  {name}: {median_ms(read, args.repeat):.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
