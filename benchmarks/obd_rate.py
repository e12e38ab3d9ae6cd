"""Readings per second the OBD-II path sustains against ELM327-emulator's car.

Starts the emulator on a free TCP port (``python -m elm -s car -n PORT``), then for each
python-OBD mode (``fast`` off and on) opens an ``obd://socket://…`` source for the OBD schema's
six channels and reads for ``--seconds``: first the source alone (python-OBD queries, one per
channel per reading), then the source driving a :class:`Vehicle` (scale, score, learn, alert),
which is what ``fedfleet device`` does between network events. Prints the time to connect,
readings per second and PID queries per second.

    python -m benchmarks.obd_rate --seconds 20
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

from devices.onboard.detector import FleetGaussian
from devices.onboard.vehicle import Vehicle
from devices.sources.obdii import ObdSource
from federation.features import load_schema
from tests.servers import Elm327Emulator

SCHEMA = load_schema(Path(__file__).parent.parent / "docs" / "schemas" / "obd.json")


def _connected(url: str, fast: bool) -> tuple[ObdSource, float]:
    source = ObdSource(url, SCHEMA.names, fast=fast)
    started = time.perf_counter()
    while source.read() is None:
        if time.perf_counter() - started > 60:
            raise SystemExit(f"no reading from {url} within 60 s")
    return source, time.perf_counter() - started


def _per_second(step: Callable[[], bool], seconds: float) -> float:
    """How many calls of ``step`` a second returned True, over ``seconds``."""
    got, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        got += step()
    return got / (time.perf_counter() - started)


def _source_step(source: ObdSource) -> Callable[[], bool]:
    return lambda: source.read() is not None


def _vehicle_step(vehicle: Vehicle) -> Callable[[], bool]:
    def step() -> bool:
        before = vehicle.readings
        vehicle.step()
        return vehicle.readings > before
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with Elm327Emulator() as emulator:
        print(f"ELM327-emulator 'car' on {emulator.url}; {len(SCHEMA)} channels per reading: "
              f"{', '.join(SCHEMA.names)}")
        for fast in (False, True):
            source, connect_s = _connected(emulator.url, fast)
            pids = len(source.queried)
            alone = _per_second(_source_step(source), args.seconds)
            vehicle = Vehicle("bench-1", source, mechanism=None,
                              detector=FleetGaussian(SCHEMA))
            agent_path = _per_second(_vehicle_step(vehicle), args.seconds)
            source.close()
            print(f"fast={fast!s:5}: connect {connect_s:4.1f} s | source alone "
                  f"{alone:6.1f} readings/s ({alone * pids:6.0f} PID queries/s) | source + "
                  f"vehicle {agent_path:6.1f} readings/s")


if __name__ == "__main__":
    main()
