"""A fleet process's steps after every vehicle hears of a new global model, staggered or not.

``--vehicles`` simulated vehicles (one process, no broker) read ``--warm-readings`` each,
then all receive the same binary global model, as they do when the gateway publishes one,
and step ``--readings`` more times. For each stagger (0: every vehicle's detector refreshes
on the next reading; 0.5: what ``fedfleet fleet`` uses, each at its own place), the CPU time
of each step per vehicle: the worst step (``worst_us``), the 90th percentile and the median.
Both run in this process one after the other: compare the two.

    python -m benchmarks.adoption --vehicles 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.report import print_report
from devices.runners.fleet import simulated_vehicles
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import GlobalModel
from federation.summary import ModelSummary


def _model() -> bytes:
    rows = np.random.default_rng(0).uniform(0.2, 0.8, (500, len(VEHICLE_SCHEMA)))
    summary = ModelSummary.from_array(VEHICLE_SCHEMA.names, rows)
    return messages.encode_binary(GlobalModel(1, 1, 100, summary, time.time(), 0.01))


def measure(vehicles: int, stagger: float, warm_readings: int, readings: int) -> dict[str, Any]:
    """Per-vehicle CPU of each step after the model, in µs: worst, 90th percentile, median."""
    fleet = simulated_vehicles(vehicles, 0, None, stagger=stagger)
    for _ in range(warm_readings):
        for vehicle in fleet:
            vehicle.step()
    payload = _model()
    for vehicle in fleet:
        vehicle.on_message(topics.MODEL_BINARY_TOPIC, payload)
    steps = []
    for _ in range(readings):
        started = time.process_time()
        for vehicle in fleet:
            vehicle.step()
        steps.append((time.process_time() - started) / vehicles * 1e6)
    return {"worst_us": round(max(steps), 1),
            "p90_us": round(float(np.percentile(steps, 90)), 1),
            "median_us": round(statistics.median(steps), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=2000)
    parser.add_argument("--warm-readings", type=int, default=150)
    parser.add_argument("--readings", type=int, default=20)
    args = parser.parse_args()
    report: dict[str, Any] = {"vehicles": args.vehicles}
    for stagger in (0.0, 0.5):
        figures = measure(args.vehicles, stagger, args.warm_readings, args.readings)
        report |= {f"stagger_{stagger:g}_{key}": value for key, value in figures.items()}
    print_report(report)


if __name__ == "__main__":
    main()
