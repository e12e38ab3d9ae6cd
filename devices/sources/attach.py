"""From a source spec on the command line to an open :class:`~devices.sources.SensorSource`.

======================================  ==============================================
``obd://PORT[?baud=N&timeout=S]``       an ELM327 adapter (:mod:`devices.sources.obdii`)
``serial://DEVICE[?baud=N]``            a board printing lines (:mod:`devices.sources.serialport`)
``csv://PATH[?speedup=X&time=C&sep=S]`` a recorded log, replayed (:mod:`devices.sources.replay`)
``stdin``                               lines on standard input (:mod:`devices.sources.stdin`)
======================================  ==============================================

PORT and DEVICE are serial devices (``/dev/ttyUSB0``) or pyserial URLs
(``socket://host:port``). Anything else is a :class:`~devices.sources.SourceError` that says
what was expected.

>>> open_source("serial://loop://?baud=115200", ["battery_v"]).name
'serial://loop://'
>>> open_source("serial://COM3?bits=7", ["battery_v"])
Traceback (most recent call last):
...
devices.sources.base.SourceError: serial://COM3?bits=7: unknown option(s) bits; serial:// takes baud
>>> try:
...     open_source("can0", ["battery_v"])
... except SourceError as exc:
...     print(exc)
unknown source 'can0': use obd://PORT, serial://DEVICE, csv://PATH or stdin
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from devices.sources.base import SensorSource, SourceError

__all__ = ["open_source"]

_FORMS = "obd://PORT, serial://DEVICE, csv://PATH or stdin"


def _split(spec: str, scheme: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``scheme://TARGET?k=v`` -> (TARGET, {k: v}), with unknown options refused."""
    rest = spec[len(scheme) + 3:]
    target, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    try:
        raw = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise SourceError(f"{spec}: options must be key=value pairs joined by &") from None
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise SourceError(f"{spec}: unknown option(s) {', '.join(unknown)}; "
                          f"{scheme}:// takes {', '.join(allowed)}")
    if not target:
        raise SourceError(f"{spec}: no port or path after {scheme}://")
    return target, {k: v[-1] for k, v in raw.items()}


def _number(spec: str, options: dict[str, str], key: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(options[key])
    except ValueError:
        raise SourceError(f"{spec}: {key} must be a number, got {options[key]!r}") from None
    if not value > 0:
        raise SourceError(f"{spec}: {key} must be greater than 0, got {options[key]}")
    return value


def open_source(spec: str, channels: Iterable[str]) -> SensorSource:
    """Open the source that ``spec`` names, reading the schema's ``channels``."""
    channels = list(channels)
    if spec in ("stdin", "-"):
        from devices.sources.stdin import StdinSource
        return StdinSource(channels)
    if spec.startswith("serial://"):
        from devices.sources.serialport import SerialSource
        port, options = _split(spec, "serial", ("baud",))
        serial_baud = int(_number(spec, options, "baud", int)) if "baud" in options else 9600
        return SerialSource(port, channels, baudrate=serial_baud)
    if spec.startswith("obd://"):
        from devices.sources.obdii import ObdSource
        port, options = _split(spec, "obd", ("baud", "timeout"))
        baud = int(_number(spec, options, "baud", int)) if "baud" in options else None
        timeout_s = _number(spec, options, "timeout", float) if "timeout" in options else 1.0
        return ObdSource(port, channels, baudrate=baud, timeout_s=timeout_s)
    if spec.startswith("csv://"):
        from devices.sources.replay import CsvReplay
        path, options = _split(spec, "csv", ("speedup", "time", "sep"))
        speedup = _number(spec, options, "speedup", float) if "speedup" in options else 1.0
        return CsvReplay(path, channels, speedup=speedup,
                         time_col=options.get("time", "timestamp"), sep=options.get("sep", ","))
    raise SourceError(f"unknown source {spec!r}: use {_FORMS}")
