"""Text-line sources: the line format, what is skipped and counted, and real serial ports."""

from __future__ import annotations

import os
import time

import pytest

from devices.sources import SourceError
from devices.sources.attach import open_source
from devices.sources.lines import LineError, parse_line
from devices.sources.serialport import SerialSource
from devices.sources.stdin import StdinSource
from federation.features import FEATURE_NAMES


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("engine_rpm=2110 coolant_temp_c=91.5", (None, {"engine_rpm": 2110.0,
                                                         "coolant_temp_c": 91.5})),
        ("ts=12.5;battery_v=14.1,", (12.5, {"battery_v": 14.1})),
        ('{"ts": 3, "battery_v": 14}', (3.0, {"battery_v": 14.0})),
        ("battery_v=nan", (None, {"battery_v": float("nan")})),
        ('{"battery_v": 1e999}', (None, {"battery_v": float("inf")})),
    ],
)
def test_a_line_is_pairs_or_one_json_object(line, expected):
    ts, values = parse_line(line)

    assert ts == expected[0]
    assert values.keys() == expected[1].keys()
    assert all(repr(values[k]) == repr(v) for k, v in expected[1].items())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("hello", "not_a_pair"),
        ("=3", "not_a_pair"),
        ("battery_v=high", "not_a_number"),
        ('{"battery_v": 14', "not_json"),
        ("[14]", "not_a_pair"),
        ('{"battery_v": true}', "not_a_number"),
        ('{"battery_v": [14]}', "not_a_number"),
        ("ts=-1 battery_v=14", "bad_ts"),
        ('{"ts": null}', "not_a_number"),
        ("[" * 5000, "not_a_pair"),
    ],
)
def test_a_malformed_line_is_refused_with_its_reason(line, reason):
    with pytest.raises(LineError) as refused:
        parse_line(line)

    assert refused.value.reason == reason


def _stdin(data: bytes, tmp_path, **kwargs) -> StdinSource:
    feed = tmp_path / "feed.txt"
    feed.write_bytes(data)
    return StdinSource(["battery_v", "coolant_temp_c"], stream=feed.open("rb"), **kwargs)


def _drain(source) -> list:
    readings = []
    while not source.finished:
        reading = source.read()
        if reading is not None:
            readings.append(reading)
    source.close()
    return readings


def test_bad_lines_are_skipped_and_counted_never_fatal(tmp_path):
    data = b"\n".join([
        b"battery_v=14.0", b"garbage", b"\xff\xfe\xfd", b"battery_v=" + b"9" * 5000,
        b"colour=3", b'{"ts": 5, "battery_v": 13.9}', b'{"ts": 4, "battery_v": 13.8}',
        b"", b"   ", b"coolant_temp_c=inf battery_v=13.7 colour=2", b"battery_v=13.6",
    ])
    source = _stdin(data, tmp_path, clock=lambda: 1.0)

    readings = _drain(source)

    assert [r.values for r in readings] == [
        {"battery_v": 14.0}, {"battery_v": 13.9}, {"battery_v": 13.7}, {"battery_v": 13.6}]
    assert dict(source.rejected) == {"not_a_pair": 1, "not_utf8": 1, "too_long": 1,
                                     "no_known_values": 1, "time_went_back": 1}
    assert source.counters()["skipped too_long"] == 1


def test_lines_without_ts_are_stamped_on_arrival_in_strict_order(tmp_path):
    source = _stdin(b"battery_v=1\nbattery_v=2\nbattery_v=3", tmp_path, clock=lambda: 50.0)

    times = [r.ts_s for r in _drain(source)]

    assert times[0] == 50.0 and times[0] < times[1] < times[2]


def test_a_line_split_across_reads_is_put_back_together(tmp_path):
    read_end, write_end = os.pipe()
    source = StdinSource(["battery_v"], stream=os.fdopen(read_end, "rb"), wait_s=0.01)
    os.write(write_end, b"battery_v=1")
    first = source.read()
    os.write(write_end, b"4.5\r\nbattery_v=13\r")
    os.close(write_end)

    readings = _drain(source)

    assert first is None
    assert [r.values["battery_v"] for r in readings] == [14.5, 13.0]


def test_a_serial_board_on_a_pseudo_terminal_is_read_with_bad_lines_skipped():
    board, device = os.openpty()
    source = open_source(f"serial://{os.ttyname(device)}?baud=115200", FEATURE_NAMES)
    os.write(board, b"boot v1.2\r\ncoolant_temp_c=88.5 battery_v=14.2\r\n{bad json\r\n"
                    b'{"coolant_temp_c": 89.0, "oil_pressure_kpa": 310}\r\n')

    readings = []
    deadline = time.monotonic() + 10
    while len(readings) < 2 and time.monotonic() < deadline:
        reading = source.read()
        if reading is not None:
            readings.append(reading)
    source.close()
    os.close(board)
    os.close(device)

    assert [r.values for r in readings] == [
        {"coolant_temp_c": 88.5, "battery_v": 14.2},
        {"coolant_temp_c": 89.0, "oil_pressure_kpa": 310.0}]
    assert source.counters() == {"skipped not_a_pair": 1, "skipped not_json": 1}


def test_a_serial_port_that_does_not_exist_is_a_clear_error():
    with pytest.raises(SourceError, match="cannot open serial port '/dev/nonexistent-tty'"):
        SerialSource("/dev/nonexistent-tty", FEATURE_NAMES)


def test_a_lost_serial_port_is_reopened_and_readings_resume():
    source = SerialSource("loop://", ["battery_v"], wait_s=0.01)
    source.port.write(b"battery_v=14\n")
    before = source.read()
    source.port.close()  # as if the board were unplugged: reading now fails

    gaps = [source.read() for _ in range(3)]
    deadline = time.monotonic() + 5
    while source.port is None and time.monotonic() < deadline:
        source.read()
    source.port.write(b"battery_v=13\n")
    after = source.read()
    source.close()

    assert before is not None and gaps == [None] * 3
    assert after is not None and after.values == {"battery_v": 13.0}
    assert source.counters() == {"reopened": 1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("serial://", "no port or path after serial://"),
        ("serial://COM3?baud=fast", "baud must be a number"),
        ("serial://COM3?baud=0", "baud must be greater than 0"),
        ("obd://COM3?speed=2", "unknown option(s) speed; obd:// takes baud, timeout"),
        ("tcp://x", "unknown source 'tcp://x'"),
    ],
)
def test_a_bad_source_spec_says_what_is_wrong(spec, message):
    with pytest.raises(SourceError) as refused:
        open_source(spec, FEATURE_NAMES)

    assert message in str(refused.value)
