"""Labelled fleets to replay: one stream of readings per device, with the true fault rows.

A source names a loader and its argument:

- ``sim:N`` — ``N`` simulated vehicles (:mod:`devices.sim.simulator`) with the simulator's own
  fault plan; a row is anomalous from its vehicle's fault onset on. Half of the vehicles that
  join late (:func:`split_devices` with the run's seed and ``late_fraction``) get a fault, so
  that a cold start has faults to detect: in turn, one that begins within their first
  ``cold_fraction`` of readings, and one they arrive with (a used vehicle joining the fleet);
- ``cmapss:DIR`` — NASA C-MAPSS ``train_FD001.txt`` (and any other ``train_FD00x.txt`` in
  ``DIR``): one engine is one device, run to failure; its last ``window`` cycles are anomalous;
- ``skab:DIR`` — the Skoltech Anomaly Benchmark: one experiment (``valve1/3.csv``) is one
  device, labelled by its ``anomaly`` column;
- ``csv:DIR`` — the generic CSV log format of :mod:`devices.sources.csvlog`.

Each dataset also says which columns are operating conditions rather than health sensors,
and carries *reference* rows — data the operator owns apart from the streams replayed (the
C-MAPSS test engines, SKAB's anomaly-free run) — from which fleet-wide limits may be derived.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devices.sim.faults import FaultSpec, plan_faults
from devices.sim.simulator import SimulatedFleet
from devices.sources.csvlog import CsvLogError, DeviceLog, read_folder, read_log
from federation.features import VEHICLE_SCHEMA, Schema, SchemaError

__all__ = ["Dataset", "DatasetError", "Stream", "load", "simulated_faults", "split_devices"]

Progress = Callable[[str, int, int], None]  # what is done, how many of how many
_SIMULATED_STEPS = 600  # readings per vehicle simulated between two progress reports
_TOUCHED_VEHICLES = 500  # vehicles whose memory is made ready between two progress reports

# The columns of a C-MAPSS file: unit, cycle, three operating settings, 21 sensors.
CMAPSS_SETTINGS = ("setting1", "setting2", "setting3")
CMAPSS_COLUMNS = ("unit", "cycle", *CMAPSS_SETTINGS, *(f"s{i}" for i in range(1, 22)))
SKAB_GROUPS = ("valve1", "valve2", "other")
# The rig's thermal state: the motor body and the water warm slowly through every experiment,
# whatever the fault, and explain the other channels (a warmer loop flows and draws current
# differently). Judged against its first minutes, the warming alone would alarm.
SKAB_CONDITIONS = ("Temperature", "Thermocouple")


class DatasetError(ValueError):
    """A dataset source that cannot be loaded; the message says why."""


@dataclass(frozen=True, eq=False)
class Stream:
    """One device's readings in time order, with the true label of every row.

    ``failure_s`` is when the device failed (run-to-failure data), or ``None``.
    """

    device_id: str
    times_s: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    failure_s: float | None = None

    def __post_init__(self) -> None:
        if not len(self.times_s) == len(self.values) == len(self.labels):
            raise ValueError("times, values and labels must have one entry per row")

    def __len__(self) -> int:
        return len(self.times_s)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled fleet: streams over the same columns, and how to read them.

    Examples
    --------
    >>> fleet = load("sim:3", seed=1, duration_s=600)
    >>> fleet.name, len(fleet.streams), fleet.columns[:2], fleet.time_unit
    ('sim:3', 3, ('engine_rpm', 'vehicle_speed_kmh'), 's')
    >>> fleet.rows
    1800
    """

    name: str
    columns: tuple[str, ...]
    streams: list[Stream]
    conditions: tuple[str, ...] = ()
    reference: np.ndarray | None = None
    time_unit: str = "s"
    notes: tuple[str, ...] = field(default=())
    schema: Schema = VEHICLE_SCHEMA

    @property
    def rows(self) -> int:
        return sum(len(s) for s in self.streams)

    @property
    def run_to_failure(self) -> bool:
        return any(s.failure_s is not None for s in self.streams)


def load(
    source: str,
    *,
    seed: int = 0,
    window: int = 30,
    time_col: str = "timestamp",
    label_col: str = "label",
    sep: str = ",",
    duration_s: float = 8100.0,
    limit: int | None = None,
    late_fraction: float = 0.1,
    cold_fraction: float = 0.1,
    progress: Progress | None = None,
) -> Dataset:
    """Load ``kind:arg`` (see the module docstring); ``limit`` keeps the first devices only;
    ``progress`` hears how many readings of a simulated fleet are made.

    ``late_fraction`` and ``cold_fraction`` must be the run's (see
    :class:`analytics.replay.Schedule`): simulated fleets plan their late devices' early faults
    with them.
    """
    kind, _, arg = source.partition(":")
    if not arg:
        raise DatasetError(f"dataset {source!r}: expected KIND:ARG, e.g. sim:50 or cmapss:DIR")
    if kind == "sim":
        if not arg.isdigit() or int(arg) < 1:
            raise DatasetError(f"dataset {source!r}: sim:N needs a whole number N >= 1")
        return _simulated(int(arg), seed, duration_s, late_fraction, cold_fraction, progress)
    if kind not in ("cmapss", "skab", "csv"):
        raise DatasetError(f"dataset {source!r}: unknown kind {kind!r} "
                           "(use sim:N, cmapss:DIR, skab:DIR or csv:DIR)")
    directory = Path(arg)
    if not directory.is_dir():
        raise DatasetError(f"dataset {source!r}: {directory} is not a folder")
    try:
        if kind == "cmapss":
            dataset = _cmapss(directory, window, limit)
        elif kind == "skab":
            dataset = _skab(directory, limit)
        else:
            dataset = _csv(directory, time_col, label_col, sep, limit)
    except CsvLogError as exc:
        raise DatasetError(f"dataset {source!r}: {exc}") from None
    return _named(dataset, source)


def _named(dataset: Dataset, name: str) -> Dataset:
    """The dataset under its source's name, with the schema its devices agree on.

    Fleet-wide limits come from the reference rows when the source has them (data the
    operator holds apart from the replayed streams), else from the streams themselves.
    """
    rows = dataset.reference
    notes = dataset.notes
    pooled = np.concatenate([s.values for s in dataset.streams])
    if rows is None:
        rows = pooled
        notes = (*notes, "limits derived from the replayed rows (no reference data)")
    elif (outside := _outside(rows, pooled)) > 0.01:
        # Clipped readings lose what they say (SKAB's anomaly-free run is one set-up of the
        # rig, and would clip most readings of the others).
        rows = np.concatenate([rows, pooled])
        notes = (*notes, f"the reference rows' ranges leave {outside:.0%} of the readings "
                         "outside: limits span both")
    try:
        schema = Schema.infer(name.split(":")[0], dict(zip(dataset.columns, rows.T, strict=True)),
                              conditions=dataset.conditions)
    except SchemaError as exc:
        raise DatasetError(f"dataset {name!r}: {exc}") from None
    return Dataset(name, dataset.columns, dataset.streams, dataset.conditions,
                   dataset.reference, dataset.time_unit, notes, schema)


def simulated_faults(ids: Sequence[str], seed: int, duration_s: float = 8100.0,
                     late_fraction: float = 0.1,
                     cold_fraction: float = 0.1) -> dict[str, FaultSpec]:
    """The fault plan of ``sim:N``: the simulator's own, and early faults for half the late.

    The late vehicles' faults alternate (in the order of their ids) between one that begins
    between a tenth and a half of the way through the cold-start window, and one the vehicle
    arrives with, a tenth to a half of the way from its onset to failure (its onset is
    negative: before the vehicle's first reading).

    >>> ids = [f"veh-{i:04d}" for i in range(10)]
    >>> sorted(split_devices(ids, 0.2, seed=1))
    ['veh-0004', 'veh-0005']
    >>> {vehicle: round(fault.onset_s)
    ...  for vehicle, fault in simulated_faults(ids, seed=1, late_fraction=0.2).items()}
    {'veh-0004': 388, 'veh-0005': 1662}
    >>> sorted(split_devices(ids, 0.4, seed=1))
    ['veh-0003', 'veh-0004', 'veh-0006', 'veh-0009']
    >>> {vehicle: round(fault.onset_s)
    ...  for vehicle, fault in simulated_faults(ids, seed=1, late_fraction=0.4).items()}
    {'veh-0004': 182, 'veh-0005': 1662, 'veh-0006': -882}
    """
    plan = plan_faults(ids, seed)
    late = sorted(split_devices(ids, late_fraction, seed))
    if late:
        # Onsets between a tenth and half of the cold-start window: there are healthy readings
        # before it to rank against, and a fault under way to detect in it.
        window_s = cold_fraction * duration_s
        low, high = 0.1 * window_s, 0.5 * window_s
        early = plan_faults(late, seed, fault_fraction=0.5, onset_s=(low, high))
        for k, vehicle in enumerate(sorted(early)):
            spec = early[vehicle]
            if k % 2:
                # The same draw, placed a tenth to a half of the way to failure at arrival.
                way = 0.1 + 0.4 * (spec.onset_s - low) / (high - low or 1.0)
                ramp = spec.failure_s - spec.onset_s
                spec = FaultSpec(spec.mode, -way * ramp, (1.0 - way) * ramp)
            plan[vehicle] = spec
    return plan


def _simulated(vehicles: int, seed: int, duration_s: float, late_fraction: float,
               cold_fraction: float, progress: Progress | None) -> Dataset:
    ids = [f"veh-{i:04d}" for i in range(vehicles)]
    plan = simulated_faults(ids, seed, duration_s, late_fraction, cold_fraction)
    fleet = SimulatedFleet(ids, seed, plan)
    steps = int(duration_s)
    times_s, values = np.empty((vehicles, steps)), np.empty((vehicles, steps, len(fleet.columns)))
    # Every step writes a little of every vehicle's rows: the first would fault in all of the
    # memory (huge pages, for NumPy asks for them), for seconds without a word. So it is
    # touched here first, some vehicles at a time.
    for start in range(0, vehicles, _TOUCHED_VEHICLES):
        times_s[start:start + _TOUCHED_VEHICLES] = values[start:start + _TOUCHED_VEHICLES] = 0.0
        if progress is not None:
            done = min(vehicles, start + _TOUCHED_VEHICLES)
            progress("allocating", done * steps, vehicles * steps)
    for start in range(0, steps, _SIMULATED_STEPS):  # a piece at a time, to say how far it got
        taken = min(_SIMULATED_STEPS, steps - start)
        times_s[:, start:start + taken], values[:, start:start + taken] = fleet.run(taken)
        if progress is not None:
            progress("simulating", (start + taken) * vehicles, steps * vehicles)
    streams = []
    for i, (vehicle_id, fault) in enumerate(zip(ids, fleet.faults, strict=True)):
        labels = (times_s[i] > (fault.onset_s if fault else np.inf)).astype(np.int8)
        streams.append(Stream(vehicle_id, times_s[i], values[i], labels,
                              fault.failure_s if fault else None))
    conditions = tuple(f.name for f in VEHICLE_SCHEMA.features if not f.is_health)
    return Dataset(f"sim:{vehicles}", fleet.columns, streams, conditions, schema=VEHICLE_SCHEMA)


def _cmapss(directory: Path, window: int, limit: int | None) -> Dataset:
    if window < 1:
        raise DatasetError(f"window must be at least 1 cycle, got {window}")
    paths = sorted(directory.glob("train_FD00*.txt"))
    if not paths:
        raise DatasetError(f"{directory}: no train_FD00x.txt file (NASA C-MAPSS)")
    streams = []
    for path in paths:
        table = _cmapss_table(path)
        for unit in np.unique(table[:, 0]).astype(int):
            rows = table[table[:, 0] == unit]
            cycles = rows[:, 1]
            if np.any(np.diff(cycles) <= 0):
                raise DatasetError(f"{path.name}: engine {unit}: cycles are not increasing")
            labels = (cycles > cycles[-1] - window).astype(np.int8)
            streams.append(Stream(f"{path.stem[6:].lower()}-engine-{unit:03d}", cycles,
                                  rows[:, 2:], labels, float(cycles[-1])))
    streams = streams[:limit]
    reference = [_cmapss_table(p)[:, 2:] for p in sorted(directory.glob("test_FD00*.txt"))]
    return _drop_constant(Dataset(
        "", CMAPSS_COLUMNS[2:], streams, CMAPSS_SETTINGS,
        np.concatenate(reference) if reference else None, "cycles"))


def _cmapss_table(path: Path) -> np.ndarray:
    try:
        table = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{path.name}: not a C-MAPSS file: {exc}") from None
    if table.shape[1] != len(CMAPSS_COLUMNS):
        raise DatasetError(f"{path.name}: {table.shape[1]} columns, C-MAPSS has "
                           f"{len(CMAPSS_COLUMNS)} (unit, cycle, 3 settings, 21 sensors)")
    return table


def _skab(directory: Path, limit: int | None) -> Dataset:
    paths = [p for group in SKAB_GROUPS
             for p in sorted((directory / group).glob("*.csv"), key=_numeric_stem)]
    if not paths:
        raise DatasetError(f"{directory}: no valve1/, valve2/ or other/ experiments (SKAB)")
    logs = [_skab_log(p) for p in paths[:limit]]
    streams = [Stream(f"{p.parent.name}-{p.stem}", log.times_s - log.times_s[0], log.values,
                      _labels(log)) for p, log in zip(paths, logs, strict=False)]
    free = directory / "anomaly-free" / "anomaly-free.csv"
    reference = _skab_log(free, labelled=False).values if free.exists() else None
    return _drop_constant(Dataset("", _names(logs[0].columns), streams, SKAB_CONDITIONS,
                                  reference))


def _skab_log(path: Path, labelled: bool = True) -> DeviceLog:
    log = read_log(path, time_col="datetime", label_col="anomaly" if labelled else None,
                   sep=";")
    columns = tuple(c for c in log.columns if c not in ("anomaly", "changepoint"))
    return log.select(columns)


def _csv(directory: Path, time_col: str, label_col: str, sep: str, limit: int | None) -> Dataset:
    """A folder of generic logs. A log whose last row is anomalous ran to failure, at its last
    time, so lead times are measured on it. Times are in seconds in the default ``timestamp``
    column, and in the unit another time column names (``cycle``, say)."""
    logs = read_folder(directory, time_col=time_col, label_col=label_col, sep=sep)[:limit]
    streams = [Stream(_name(log.device_id), log.times_s, log.values, _labels(log),
                      float(log.times_s[-1]) if _labels(log)[-1] else None) for log in logs]
    to_failure = sum(s.failure_s is not None for s in streams)
    notes = [note for log in logs for note in log.notes] + (
        [f"lead times on the {to_failure} of {len(streams)} devices whose log ends anomalous "
         "(run to failure)"] if to_failure else [])
    unit = "s" if time_col == "timestamp" else time_col
    return Dataset("", _names(logs[0].columns), streams, time_unit=unit,
                   notes=tuple(dict.fromkeys(notes)))


def _labels(log: DeviceLog) -> np.ndarray:
    assert log.labels is not None
    return log.labels


def _name(name: str) -> str:
    """A device or feature name as ids allow (1-64 of ``A-Za-z0-9_.-``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in name)
    return cleaned.strip("_.-")[:64] or "unnamed"


def _names(columns: Sequence[str]) -> tuple[str, ...]:
    names = tuple(_name(c) for c in columns)
    if len(set(names)) < len(names):
        raise DatasetError(f"columns {list(columns)} are not distinct once made into names")
    return names


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 30, path.stem)


def _drop_constant(dataset: Dataset) -> Dataset:
    """Drop columns constant over every stream: they carry nothing to learn."""
    pooled = np.concatenate([s.values for s in dataset.streams])
    keep = [i for i, column in enumerate(pooled.T) if _varies(column)]
    dropped = [dataset.columns[i] for i in range(len(dataset.columns)) if i not in keep]
    streams = [Stream(s.device_id, s.times_s, s.values[:, keep], s.labels, s.failure_s)
               for s in dataset.streams]
    return Dataset(
        dataset.name, tuple(dataset.columns[i] for i in keep), streams,
        tuple(c for c in dataset.conditions if c not in dropped),
        None if dataset.reference is None else dataset.reference[:, keep],
        dataset.time_unit,
        (*dataset.notes, *(f"column {c!r} is constant, ignored" for c in dropped)))


def _outside(reference: np.ndarray, rows: np.ndarray) -> float:
    """The share of values in ``rows`` outside the column ranges of ``reference``."""
    low, high = np.nanmin(reference, axis=0), np.nanmax(reference, axis=0)
    return float(np.mean((rows < low) | (rows > high)))


def _varies(column: np.ndarray) -> bool:
    finite = column[np.isfinite(column)]
    return finite.size > 0 and bool(finite.max() > finite.min())


def split_devices(devices: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded choice of ``fraction`` of the device ids (at least one of two or more).

    >>> sorted(split_devices(["a", "b", "c", "d"], 0.5, seed=0))
    ['c', 'd']
    """
    if len(devices) < 2 or fraction <= 0:
        return set()
    count = min(len(devices) - 1, max(1, round(fraction * len(devices))))
    chosen = np.random.default_rng(seed).choice(len(devices), size=count, replace=False)
    return {devices[i] for i in chosen}
