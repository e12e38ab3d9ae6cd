"""`fedfleet evaluate` on a user's own CSV logs: short devices get a tuning that scores them
and the choice is said, lead times are measured on logs that run to failure, in the unit of
the time column, and the table prints its columns' whole names."""

from __future__ import annotations

import json
import random
from pathlib import Path

from analytics.datasets import load
from analytics.replay import choose_tuning
from devices.onboard.tuning import ENGINE_CYCLES, VEHICLE
from fedfleet.cli import main


def _run_to_failure(folder: Path, devices: int, rows: int, time_col: str = "timestamp") -> None:
    """Logs whose last 20 rows drift away, labelled 1, to the end of the log."""
    rng = random.Random(1)
    for d in range(devices):
        lines = [f"{time_col},temp_c,pressure_kpa,label"]
        for t in range(rows):
            drift = max(0, t - (rows - 20)) * 0.8
            lines.append(f"{t},{60 + rng.gauss(0, 1) + drift:.2f},"
                         f"{200 + rng.gauss(0, 3) + d:.2f},{int(drift > 0 or t == rows - 20)}")
        (folder / f"unit-{d}.csv").write_text("\n".join(lines) + "\n")


def test_short_devices_get_the_per_cycle_tuning_and_the_choice_names_the_flag(tmp_path, capsys):
    _run_to_failure(tmp_path, devices=5, rows=150)
    out = tmp_path / "report.json"

    code = main(["evaluate", "--dataset", f"csv:{tmp_path}", "--out", str(out)])

    report = json.loads(out.read_text())
    printed = capsys.readouterr()
    assert code == 0
    assert "tuning: engine" in printed.err and "--tuning vehicle" in printed.err
    assert report["settings"]["tuning"]["min_readings"] == ENGINE_CYCLES.min_readings
    assert report["regimes"]["local"]["recall"] > 0  # it scores, and alarms
    assert report["regimes"]["local"]["lead_time"]["devices"] == 5
    assert report["regimes"]["local"]["lead_time"]["median"] > 0
    assert "false_alarms_per_1000" in printed.out.splitlines()[0]


def test_long_devices_keep_the_vehicle_tuning(tmp_path):
    _run_to_failure(tmp_path, devices=2, rows=2 * VEHICLE.min_readings)

    tuning, why = choose_tuning(load(f"csv:{tmp_path}"))

    assert tuning is VEHICLE
    assert "median of 6,000 rows" in why


def test_a_time_column_of_cycles_gives_lead_times_in_cycles(tmp_path):
    _run_to_failure(tmp_path, devices=3, rows=120, time_col="cycle")

    dataset = load(f"csv:{tmp_path}", time_col="cycle")

    assert dataset.time_unit == "cycle"
    assert [s.failure_s for s in dataset.streams] == [119.0, 119.0, 119.0]
