"""Readings from a vehicle's OBD-II port through an ELM327 adapter, with python-OBD.

python-OBD (PyPI ``obd``) is GPL-2.0, so it is an optional extra (``fedfleet[obd]``) and is
imported only when an ``obd://`` source is opened. Each reading queries, once, every mode-01
PID that the fleet's schema wants and the car says it supports (:data:`PIDS`), converted to
the unit in the feature's name. A PID the car does not support, or a null answer, leaves that
channel missing for the reading. A lost adapter or car is reconnected with backoff, and
readings resume when it answers again.

No standard OBD-II PID reports oil pressure or vibration: a fleet of OBD-only vehicles uses a
schema without those channels (see ``docs/DEVICES.md``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from devices.sources.base import Reading, SensorSource, SourceError, import_optional

__all__ = ["PIDS", "ObdSource", "Pid"]

log = logging.getLogger(__name__)

# python-OBD cannot find the baud rate of a TCP link by probing: it must be given.
SOCKET_BAUDRATE = 38400


@dataclass(frozen=True, slots=True)
class Pid:
    """A python-OBD command, the feature it feeds, and the unit that feature is in."""

    command: str
    feature: str
    unit: str


PIDS: tuple[Pid, ...] = (
    Pid("RPM", "engine_rpm", "revolutions_per_minute"),              # 01 0C
    Pid("SPEED", "vehicle_speed_kmh", "kilometer_per_hour"),         # 01 0D
    Pid("ENGINE_LOAD", "engine_load_pct", "percent"),                # 01 04
    Pid("AMBIANT_AIR_TEMP", "ambient_temp_c", "degree_Celsius"),     # 01 46
    Pid("COOLANT_TEMP", "coolant_temp_c", "degree_Celsius"),         # 01 05
    Pid("CONTROL_MODULE_VOLTAGE", "battery_v", "volt"),              # 01 42
    Pid("ELM_VOLTAGE", "battery_v", "volt"),  # the adapter's AT RV: when 01 42 is missing
    Pid("INTAKE_TEMP", "intake_temp_c", "degree_Celsius"),           # 01 0F
    Pid("OIL_TEMP", "oil_temp_c", "degree_Celsius"),                 # 01 5C
    Pid("INTAKE_PRESSURE", "intake_pressure_kpa", "kilopascal"),     # 01 0B
    Pid("MAF", "maf_g_s", "gram / second"),                          # 01 10
    Pid("THROTTLE_POS", "throttle_pct", "percent"),                  # 01 11
    Pid("LONG_FUEL_TRIM_1", "fuel_trim_long_pct", "percent"),        # 01 07
    Pid("SHORT_FUEL_TRIM_1", "fuel_trim_short_pct", "percent"),      # 01 06
    Pid("HYBRID_BATTERY_REMAINING", "hybrid_battery_pct", "percent"),  # 01 5B
)
"""Which PID feeds which feature; the first supported PID of a feature is used."""


class ObdSource(SensorSource):
    """Readings from an ELM327 adapter on a serial port or a pyserial URL.

    Parameters
    ----------
    port
        ``/dev/ttyUSB0``, ``/dev/rfcomm0``, ``socket://192.168.0.10:35000``, ...
    channels
        The feature names the fleet's schema wants.
    baudrate
        The adapter's line speed; ``None`` lets python-OBD probe it (serial ports only: a
        ``socket://`` link gets 38400, since probing cannot work over TCP).
    timeout_s
        How long python-OBD waits for each answer.
    fast
        python-OBD's optimisations (fewer bytes per query); some clone adapters dislike them.

    Examples
    --------
    >>> [(p.command, p.unit) for p in PIDS if p.feature == "coolant_temp_c"]
    [('COOLANT_TEMP', 'degree_Celsius')]
    """

    def __init__(self, port: str, channels: Iterable[str], *, baudrate: int | None = None,
                 timeout_s: float = 1.0, fast: bool = False,
                 clock: Callable[[], float] = time.time, max_backoff_s: float = 30.0) -> None:
        with _quiet("pint"):  # python-OBD redefines a few pint units, and pint says so
            self._obd = import_optional("obd", "obd", "obd://")
        _own_handlers_only(self._obd.logger)
        if "://" not in port:  # a device, not a pyserial URL: one that is not there is a
            _check_port(port)  # usage error now, as for serial://, not a retry forever
        if baudrate is None and port.startswith("socket://"):
            baudrate = SOCKET_BAUDRATE
        self.name = f"obd://{port}"
        self.port, self.baudrate, self.timeout_s, self.fast = port, baudrate, timeout_s, fast
        self.channels = frozenset(channels)
        self.clock = clock
        self.connection: Any = None
        self.queried: dict[str, Pid] = {}  # feature -> the PID that feeds it
        self.missing: Counter[str] = Counter()  # null answers per feature
        self.reconnects = 0
        self._max_backoff_s = max_backoff_s
        self._backoff_s = 0.5
        self._retry_at = 0.0
        self._last_ts = -math.inf
        self._connected_once = False

    def read(self) -> Reading | None:
        if self.connection is None and not self._connect():
            return None
        values: dict[str, float] = {}
        for feature, pid in self.queried.items():
            response = self.connection.query(self._obd.commands[pid.command])
            if response.is_null():
                if self.connection.status() == self._obd.OBDStatus.NOT_CONNECTED:
                    self._lost("the adapter stopped answering")
                    return None
                self.missing[feature] += 1
                continue
            value = _in_unit(response.value, pid.unit)
            if value is None:
                self.missing[feature] += 1
            else:
                values[feature] = value
        if not values:
            return None
        self._last_ts = max(self.clock(), self._last_ts + 1e-6)
        return Reading(self._last_ts, values)

    def counters(self) -> dict[str, int]:
        missed = {f"no answer for {feature}": n for feature, n in sorted(self.missing.items())}
        return missed | ({"reconnected": self.reconnects} if self.reconnects else {})

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(min(0.1, self._retry_at - now))
            return False
        connection = self._obd.OBD(self.port, baudrate=self.baudrate, fast=self.fast,
                                   timeout=self.timeout_s)
        status = connection.status()
        if status != self._obd.OBDStatus.CAR_CONNECTED:
            connection.close()
            self._lost(f"status {status!r}" + (
                "" if status == self._obd.OBDStatus.NOT_CONNECTED
                else ": the adapter answers but the car does not (ignition off?)"))
            return False
        self.connection = connection
        self._choose_pids()
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        self._backoff_s = 0.5
        return True

    def _choose_pids(self) -> None:
        self.queried = {}
        for pid in PIDS:
            if pid.feature in self.channels and pid.feature not in self.queried and (
                    self.connection.supports(self._obd.commands[pid.command])):
                self.queried[pid.feature] = pid
        unread = sorted(self.channels - set(self.queried))
        log.info("%s: connected (%s); reading %s%s", self.name,
                 self.connection.protocol_name(),
                 ", ".join(f"{f} <- {p.command}" for f, p in self.queried.items()) or "nothing",
                 f"; no PID for {', '.join(unread)}" if unread else "")

    def _lost(self, why: str) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self._retry_at = time.monotonic() + self._backoff_s
        log.warning("%s: not connected (%s); next try in %.1f s", self.name, why,
                    self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hide a logger's warnings for a while."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _own_handlers_only(logger: logging.Logger) -> None:
    """python-OBD prints to stderr through a handler of its own; drop it, so that its lines
    go through the application's logging once instead of twice."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def _check_port(port: str) -> None:
    """Open and close a serial device; :class:`SourceError` if it cannot be opened."""
    serial = import_optional("serial", "obd", "obd://")
    try:
        serial.serial_for_url(port, timeout=0).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceError(f"obd://{port}: {exc}") from None


def _in_unit(value: Any, unit: str) -> float | None:
    """A python-OBD quantity as a float in ``unit``; ``None`` if it is not one, or not finite."""
    try:
        number = float(value.to(unit).magnitude)
    except (AttributeError, TypeError, ValueError, ArithmeticError):
        return None
    return number if math.isfinite(number) else None
