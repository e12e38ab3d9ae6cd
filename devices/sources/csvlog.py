"""The generic CSV log: one device's timestamped sensor readings, optionally labelled.

The format, which any spreadsheet or logger can produce:

- one file per device (a folder of them is a fleet); the device id is the file name without
  its extension;
- a header row naming the columns; fields separated by ``,`` (or the ``sep`` given);
- a time column, ``timestamp`` by default: seconds (any number, e.g. POSIX time or a cycle
  count) or an ISO 8601 date and time (``2020-03-09 10:14:33``; without a zone it is UTC);
  rows in time order (equal times are allowed; a clock that steps back, such as a repeated
  daylight-saving hour, is repaired with a note: rows stay in file order and later times
  move forward);
- numeric sensor columns, named as the user likes (a unit in the name helps); an empty cell,
  ``nan`` or ``inf`` is a missing value for that reading;
- a 0/1 label column, ``label`` by default (1 = anomalous), required where labels are asked
  for (evaluation), ignored otherwise (a live device source);
- any other column that is not numeric throughout is ignored, with a note; in a folder, a
  column missing from some file or constant over the whole folder is ignored, with a note.

A file that breaks these rules raises :class:`CsvLogError` with the file, the line and what
is wrong, never a traceback from deep inside a parser.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from devices.sources.base import Reading

__all__ = ["CsvLogError", "DeviceLog", "read_folder", "read_log"]


class CsvLogError(ValueError):
    """A CSV log that does not follow the format; the message says where and why."""


@dataclass(frozen=True, eq=False)
class DeviceLog:
    """One device's log: times, numeric sensor columns, and labels when asked for.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "pump-1.csv").write_text(
    ...     "timestamp,temp_c,state,label\\n0,20.5,ok,0\\n1,,ok,0\\n2,35.0,hot,1\\n")
    >>> log = read_log(folder / "pump-1.csv")
    >>> log.device_id, log.columns, log.labels.tolist(), log.notes
    ('pump-1', ('temp_c',), [0, 0, 1], ("pump-1.csv: column 'state' is not numeric, ignored",))
    >>> [reading.values for reading in log.readings()]
    [{'temp_c': 20.5}, {}, {'temp_c': 35.0}]
    """

    device_id: str
    path: Path
    times_s: np.ndarray
    columns: tuple[str, ...]
    values: np.ndarray
    labels: np.ndarray | None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.times_s)

    def readings(self) -> Iterator[Reading]:
        """The rows as readings, in order; a missing value is left out of its reading."""
        for ts_s, row in zip(self.times_s.tolist(), self.values.tolist(), strict=True):
            values = {c: v for c, v in zip(self.columns, row, strict=True) if math.isfinite(v)}
            yield Reading(ts_s, values)

    def select(self, columns: Sequence[str]) -> DeviceLog:
        """The same log restricted to ``columns`` (in that order)."""
        index = [self.columns.index(c) for c in columns]
        return replace(self, columns=tuple(columns), values=self.values[:, index])


def read_log(
    path: str | Path,
    *,
    time_col: str = "timestamp",
    label_col: str | None = "label",
    sep: str = ",",
) -> DeviceLog:
    """Read one device's CSV log; ``label_col=None`` reads an unlabelled log."""
    path = Path(path)
    where = path.name
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=sep))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CsvLogError(f"{path}: cannot read: {exc}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise CsvLogError(f"{where}: empty file (a header row and data rows are needed)")
    header = [name.strip() for name in rows[0]]
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise CsvLogError(f"{where}: no data rows under the header")
    _check_header(where, header, time_col, label_col, sep)
    _check_widths(where, header, rows)
    table = {name: [row[i].strip() for row in body] for i, name in enumerate(header)}
    lines = [i + 1 for i, row in enumerate(rows) if i > 0 and any(c.strip() for c in row)]
    times_s, notes = _times(where, table[time_col], lines)
    labels = None if label_col is None else _labels(where, table[label_col], lines)
    columns = []
    parsed = []
    for name in header:
        if name in (time_col, label_col):
            continue
        numbers = _numbers(table[name])
        if numbers is None:
            notes.append(f"{where}: column {name!r} is not numeric, ignored")
            continue
        columns.append(name)
        parsed.append(numbers)
    if not columns:
        raise CsvLogError(f"{where}: no numeric sensor column besides {time_col!r}")
    values = np.array(parsed, dtype=float).T
    return DeviceLog(path.stem, path, times_s, tuple(columns), values, labels, tuple(notes))


def read_folder(
    directory: str | Path,
    *,
    time_col: str = "timestamp",
    label_col: str | None = "label",
    sep: str = ",",
    pattern: str = "*.csv",
) -> list[DeviceLog]:
    """Read every log in ``directory`` (sorted by name), on the sensor columns they share.

    A column that some file lacks, or that is constant over the whole folder, carries no
    information to compare devices on: it is dropped from every log, with a note.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CsvLogError(f"{directory}: not a folder")
    paths = sorted(directory.glob(pattern))
    if not paths:
        raise CsvLogError(f"{directory}: no {pattern} files")
    logs = [read_log(p, time_col=time_col, label_col=label_col, sep=sep) for p in paths]
    shared = [c for c in logs[0].columns if all(c in log.columns for log in logs)]
    notes = [f"column {c!r} is missing from some files, ignored"
             for c in sorted({c for log in logs for c in log.columns} - set(shared))]
    pooled = np.concatenate([log.select(shared).values for log in logs])
    varying = [c for c, column in zip(shared, pooled.T, strict=True) if _varies(column)]
    notes += [f"column {c!r} is constant, ignored" for c in shared if c not in varying]
    if not varying:
        raise CsvLogError(f"{directory}: no sensor column varies across the files")
    return [replace(log.select(varying), notes=(*log.notes, *notes)) for log in logs]


def _check_header(
    where: str, header: list[str], time_col: str, label_col: str | None, sep: str
) -> None:
    if len(set(header)) < len(header):
        duplicated = sorted({name for name in header if header.count(name) > 1})
        raise CsvLogError(f"{where}: line 1: duplicate column names {duplicated}")
    for role, name in (("time", time_col), ("label", label_col)):
        if name is not None and name not in header:
            hint = f" (is the separator {sep!r} right?)" if len(header) == 1 else ""
            raise CsvLogError(
                f"{where}: no {role} column {name!r} in the header {header}{hint}")


def _check_widths(where: str, header: list[str], rows: list[list[str]]) -> None:
    for line, row in enumerate(rows[1:], start=2):
        if any(cell.strip() for cell in row) and len(row) != len(header):
            raise CsvLogError(
                f"{where}: line {line}: {len(row)} fields where the header has {len(header)}")


def _times(where: str, cells: list[str], lines: list[int]) -> tuple[np.ndarray, list[str]]:
    """The rows' times, and a note if the clock went back.

    A log's clock that steps back (a daylight-saving hour written twice in local time, a
    clock set right) does not make the rows wrong: they stay in file order, and each row
    from a step back on is moved forward by that step (plus the log's usual interval), so
    that time keeps going on as it really did.
    """
    times = np.array([_time(where, cell, line) for cell, line in zip(cells, lines, strict=True)])
    steps = np.diff(times)
    backwards = np.flatnonzero(steps < 0)
    if not len(backwards):
        return times, []
    forward = steps[steps > 0]
    usual_s = float(np.median(forward)) if len(forward) else 0.0
    shift = np.zeros_like(times)
    for k in backwards.tolist():
        shift[k + 1:] += -steps[k] + usual_s
    k = int(backwards[0])
    note = (f"{where}: the clock goes back {len(backwards)} time(s), first on line "
            f"{lines[k + 1]} ({cells[k + 1]!r} after {cells[k]!r}, as when a daylight-saving "
            f"hour is written twice); rows kept in file order, {int(len(times) - k - 1):,} "
            f"times from there on moved forward by up to {float(shift[-1]):g} s")
    return times + shift, [note]


def _time(where: str, cell: str, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(cell)
        except ValueError:
            raise CsvLogError(
                f"{where}: line {line}: time {cell!r} is neither a number of seconds nor an "
                "ISO 8601 date and time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise CsvLogError(f"{where}: line {line}: time {cell!r} is not a finite number")
    return value


def _labels(where: str, cells: list[str], lines: list[int]) -> np.ndarray:
    labels = np.zeros(len(cells), dtype=np.int8)
    for k, (cell, line) in enumerate(zip(cells, lines, strict=True)):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if value not in (0.0, 1.0):
            raise CsvLogError(f"{where}: line {line}: label {cell!r} is not 0 or 1")
        labels[k] = int(value)
    return labels


def _numbers(cells: list[str]) -> list[float] | None:
    """The column as floats (empty cells are NaN), or ``None`` if any cell is not a number."""
    try:
        return [float(cell) if cell else math.nan for cell in cells]
    except ValueError:
        return None


def _varies(column: np.ndarray) -> bool:
    finite = column[np.isfinite(column)]
    return len(finite) > 0 and bool(finite.max() > finite.min())
