"""The generic CSV log format: what it reads, and the clear errors for what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices.sources.csvlog import CsvLogError, read_folder, read_log

SKAB = Path(__file__).parent.parent.parent / "shared" / "datasets" / "skab"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_log_reads_times_sensors_and_labels_row_for_row(tmp_path):
    path = _write(tmp_path, "truck-7.csv",
                  "timestamp,oil_kpa,label\n10,300,0\n11,,0\n12,120.5,1\n")

    log = read_log(path)

    assert log.device_id == "truck-7"
    assert log.times_s.tolist() == [10.0, 11.0, 12.0]
    assert log.columns == ("oil_kpa",)
    assert np.isnan(log.values[1, 0]) and log.values[2, 0] == 120.5
    assert log.labels is not None and log.labels.tolist() == [0, 0, 1]


def test_iso_times_separator_and_column_names_are_options(tmp_path):
    path = _write(tmp_path, "rig.csv",
                  "when;flow;anomaly\n2020-03-09 10:14:33;32.0;0\n2020-03-09 10:14:35;31.0;1\n")

    log = read_log(path, time_col="when", label_col="anomaly", sep=";")

    assert log.times_s[1] - log.times_s[0] == 2.0
    assert log.times_s[0] == 1583748873.0  # naive times are UTC
    assert log.labels is not None and log.labels.tolist() == [0, 1]


def test_an_unlabelled_log_needs_no_label_column(tmp_path):
    path = _write(tmp_path, "car.csv", "timestamp,rpm\n0,800\n1,900\n")

    log = read_log(path, label_col=None)

    assert log.labels is None
    assert [r.values for r in log.readings()] == [{"rpm": 800.0}, {"rpm": 900.0}]


def test_non_numeric_columns_are_ignored_with_a_note(tmp_path):
    path = _write(tmp_path, "a.csv", "timestamp,mode,temp,label\n0,idle,20,0\n1,city,21,0\n")

    log = read_log(path)

    assert log.columns == ("temp",)
    assert log.notes == ("a.csv: column 'mode' is not numeric, ignored",)


def test_a_folder_keeps_the_shared_varying_columns_in_name_order(tmp_path):
    _write(tmp_path, "b.csv", "timestamp,temp,volts,extra,label\n0,20,12,5,0\n1,22,12,6,1\n")
    _write(tmp_path, "a.csv", "timestamp,temp,volts,label\n0,19,12,0\n1,23,12,0\n")

    logs = read_folder(tmp_path)

    assert [log.device_id for log in logs] == ["a", "b"]
    assert all(log.columns == ("temp",) for log in logs)
    assert logs[1].values[:, 0].tolist() == [20.0, 22.0]
    assert "column 'extra' is missing from some files, ignored" in logs[0].notes
    assert "column 'volts' is constant, ignored" in logs[0].notes


def test_a_repeated_daylight_saving_hour_is_kept_in_order_with_a_note_and_a_count(tmp_path):
    local = ["2021-10-31 01:30:00", "2021-10-31 02:00:00", "2021-10-31 02:30:00",
             "2021-10-31 02:00:00", "2021-10-31 02:30:00", "2021-10-31 03:00:00"]
    path = _write(tmp_path, "boiler.csv", "timestamp,temp_c,label\n" + "".join(
        f"{stamp},{20 + k},0\n" for k, stamp in enumerate(local)))

    log = read_log(path)

    assert log.values[:, 0].tolist() == [20, 21, 22, 23, 24, 25]  # every row, in file order
    assert np.diff(log.times_s).tolist() == [1800.0] * 5  # the clock repaired
    assert len(log.notes) == 1
    assert "the clock goes back 1 time(s), first on line 5" in log.notes[0]
    assert "3 times from there on moved forward" in log.notes[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("timestamp,temp,label\n", "no data rows"),
        ("timestamp,temp\n0,1\n", "no label column 'label'"),
        ("timestamp;temp;label\n0;1;0\n", "is the separator ',' right?"),
        ("timestamp,temp,label\n0,1,0\n1,2,yes\n", "line 3: label 'yes' is not 0 or 1"),
        ("timestamp,temp,label\n0,1,0\n1,2,2\n", "line 3: label '2' is not 0 or 1"),
        ("timestamp,temp,label\n0,1,0\n1,2,\n", "line 3: label '' is not 0 or 1"),
        ("timestamp,temp,label\nmonday,1,0\n", "line 2: time 'monday' is neither"),
        ("timestamp,temp,label\n0,1,0\n1,2\n", "line 3: 2 fields where the header has 3"),
        ("timestamp,name,label\n0,x,0\n", "no numeric sensor column"),
        ("timestamp,t,t,label\n0,1,1,0\n", "duplicate column names ['t']"),
    ],
)
def test_a_malformed_log_is_refused_with_a_clear_message(tmp_path, text, message):
    path = _write(tmp_path, "bad.csv", text)

    with pytest.raises(CsvLogError, match=r"bad\.csv") as caught:
        read_log(path)

    assert message in str(caught.value)


def test_an_empty_folder_or_a_missing_one_is_refused(tmp_path):
    with pytest.raises(CsvLogError, match=r"no \*\.csv files"):
        read_folder(tmp_path)
    with pytest.raises(CsvLogError, match="not a folder"):
        read_folder(tmp_path / "nowhere")


def test_a_skab_experiment_reads_with_its_own_column_names():
    log = read_log(SKAB / "valve1" / "0.csv", time_col="datetime", label_col="anomaly", sep=";")

    assert len(log) == 1147
    assert "Accelerometer1RMS" in log.columns and "anomaly" not in log.columns
    assert log.labels is not None and 0 < log.labels.mean() < 0.5
