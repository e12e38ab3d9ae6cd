"""One contract, one suite: every sensor source passes the same checks.

The text sources (serial, standard input) are fed what a simulated vehicle measures, written
out as lines in both formats with malformed lines mixed in; the OBD-II source reads the car of
ELM327-emulator, a peer nobody here wrote.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.sim.simulator import SimulatedVehicle
from devices.sources import Reading, SensorSource
from devices.sources.obdii import ObdSource
from devices.sources.replay import CsvReplay
from devices.sources.serialport import SerialSource
from devices.sources.stdin import StdinSource
from federation.features import FEATURE_NAMES
from tests.servers import Elm327Emulator

READINGS = 200
GARBAGE = [b"ESP-ROM:esp32s3-20210327", b'{"coolant_temp_c": "hot"}', b"\xff\xfe", b"[1, 2]"]


def simulated_lines(count: int, seed: int = 3) -> bytes:
    """``count`` simulated readings as lines, alternating the two formats, with garbage."""
    sim = SimulatedVehicle("veh-0001", seed=seed)
    lines = []
    for i in range(count):
        reading = sim.read()
        if i % 2:
            lines.append(json.dumps({"ts": reading.ts_s, **reading.values}).encode())
        else:
            pairs = {"ts": reading.ts_s, **reading.values}
            lines.append(" ".join(f"{k}={v:.9g}" for k, v in pairs.items()).encode())
        if i % 50 == 7:
            lines.append(GARBAGE[i // 50 % len(GARBAGE)])
    return b"\r\n".join(lines) + b"\r\n"


def _serial(request: pytest.FixtureRequest, tmp_path: Path) -> SensorSource:
    source = SerialSource("loop://", FEATURE_NAMES, baudrate=115200)
    # loop:// holds 4 KiB: a board writes while the source reads, as on a real line.
    feed = simulated_lines(READINGS)  # all of it is read, so the writer always finishes
    port = source.port
    writer = threading.Thread(target=_write_slowly, args=(port, feed), daemon=True)
    writer.start()
    request.addfinalizer(lambda: writer.join(timeout=10))
    return source


def _write_slowly(port: Any, data: bytes) -> None:
    with contextlib.suppress(Exception):  # the source closed the port: the board stops
        for start in range(0, len(data), 256):
            port.write(data[start:start + 256])


def _stdin(request: pytest.FixtureRequest, tmp_path: Path) -> SensorSource:
    feed = tmp_path / "stdin.txt"
    feed.write_bytes(simulated_lines(READINGS + 50))
    return StdinSource(FEATURE_NAMES, stream=feed.open("rb"))


def simulated_csv(path: Path, count: int, seed: int = 3) -> Path:
    """``count`` simulated readings as a generic CSV log, with a label column and a gap."""
    sim = SimulatedVehicle("veh-0001", seed=seed)
    rows = [f"timestamp,{','.join(FEATURE_NAMES)},label"]
    for i in range(count):
        reading = sim.read()
        cells = ["" if i % 40 == 3 and name == "battery_v" else f"{reading.values[name]:.9g}"
                 for name in FEATURE_NAMES]
        rows.append(f"{reading.ts_s},{','.join(cells)},0")
    path.write_text("\n".join(rows) + "\n")
    return path


def _csv(request: pytest.FixtureRequest, tmp_path: Path) -> SensorSource:
    log = simulated_csv(tmp_path / "veh-0001.csv", READINGS + 50)
    return CsvReplay(log, FEATURE_NAMES, speedup=2000)


def _obd(request: pytest.FixtureRequest, tmp_path: Path) -> SensorSource:
    emulator: Elm327Emulator = request.getfixturevalue("elm327")
    return ObdSource(emulator.url, FEATURE_NAMES)


SOURCES: dict[str, Callable[[pytest.FixtureRequest, Path], SensorSource]] = {
    "simulated": lambda request, tmp_path: SimulatedVehicle("veh-0001", seed=3),
    "serial": _serial,
    "stdin": _stdin,
    "csv": _csv,
    "obd": _obd,
}
FINITE = {"stdin", "csv"}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SensorSource]:
    made = SOURCES[request.param](request, tmp_path)
    yield made
    made.close()


def _readings(source: SensorSource, count: int, timeout_s: float = 60.0) -> list[Reading]:
    """Up to ``count`` readings, reading until then, the end, or ``timeout_s``."""
    readings: list[Reading] = []
    deadline = time.monotonic() + timeout_s
    while len(readings) < count and not source.finished and time.monotonic() < deadline:
        reading = source.read()
        if reading is not None:
            readings.append(reading)
    return readings


def test_readings_come_in_time_order(source):
    times = [r.ts_s for r in _readings(source, READINGS)]

    assert len(times) == READINGS
    assert all(b > a for a, b in itertools.pairwise(times))


def test_readings_hold_only_known_features_with_finite_values(source):
    readings = _readings(source, READINGS)

    assert readings
    for reading in readings:
        assert reading.values and set(reading.values) <= set(FEATURE_NAMES)
        assert all(isinstance(v, float) and math.isfinite(v) for v in reading.values.values())


def test_counters_are_counts_by_reason(source):
    _readings(source, READINGS)

    counters = source.counters()

    assert all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in counters.items())


@pytest.mark.parametrize("name", sorted(FINITE))
def test_a_finite_source_ends_and_then_gives_nothing(name, request, tmp_path):
    source = SOURCES[name](request, tmp_path)

    everything = _readings(source, 10 * READINGS)
    after = [source.read() for _ in range(5)]
    source.close()

    assert len(everything) == READINGS + 50
    assert source.finished
    assert after == [None] * 5
