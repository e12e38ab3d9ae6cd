"""Readings as text lines, one per line: ``name=value`` pairs or a JSON object.

The format that serial boards and scripts speak (``serial://`` and ``stdin``)::

    engine_rpm=2110 coolant_temp_c=91.5 battery_v=14.1
    {"ts": 1764000000.5, "engine_rpm": 2110, "coolant_temp_c": 91.5}

Pairs are separated by spaces, commas or semicolons, with no space around ``=``. ``ts``
(Unix seconds) is optional: without it a reading is stamped with its time of arrival. Names
the fleet's schema does not know are ignored (logged once each); a NaN or infinite value
counts as a missing channel. Any other line is skipped, logged and counted under a reason
(:data:`REASONS`); a bad line never stops the source.

>>> parse_line("engine_rpm=2110, coolant_temp_c=91.5")
(None, {'engine_rpm': 2110.0, 'coolant_temp_c': 91.5})
>>> parse_line('{"ts": 12.5, "battery_v": 14}')
(12.5, {'battery_v': 14.0})
>>> parse_line("ESP-ROM:esp32s3-20210327")
Traceback (most recent call last):
...
devices.sources.lines.LineError: not_a_pair: 'ESP-ROM:esp32s3-20210327' is not name=value
"""

from __future__ import annotations

import abc
import json
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from devices.sources.base import Reading, SensorSource

__all__ = ["REASONS", "LineError", "LineSource", "parse_line"]

log = logging.getLogger(__name__)

REASONS = ("not_utf8", "too_long", "not_json", "not_object", "not_a_pair", "not_a_number",
           "bad_ts", "time_went_back", "no_known_values")
_SEPARATORS = re.compile(r"[\s,;]+")
_LOGGED_IN_FULL = 10  # the first rejections are all logged, then one in a thousand


class LineError(ValueError):
    """A line that is not a reading; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            raise LineError("not_a_number", f"{name}={raw!r} is not a number") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise LineError("not_a_number", f"{name}: {raw!r} is not a number")
    try:
        return float(raw)
    except OverflowError:  # an integer too large for a float
        return math.inf


def parse_line(line: str) -> tuple[float | None, dict[str, float]]:
    """Split one line into its optional timestamp and its values; :class:`LineError` if bad."""
    text = line.strip()
    items: Iterable[tuple[str, Any]]
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise LineError("not_json", str(exc)) from None
        if not isinstance(obj, dict):
            raise LineError("not_object", "a JSON line must be one object")
        items = obj.items()
    else:
        pairs = []
        for token in filter(None, _SEPARATORS.split(text)):
            name, sep, value = token.partition("=")
            if not sep or not name:
                raise LineError("not_a_pair", f"{token!r} is not name=value")
            pairs.append((name, value))
        items = pairs
    values = {str(name): _number(str(name), raw) for name, raw in items}
    ts = values.pop("ts", None)
    if ts is not None and not (math.isfinite(ts) and ts >= 0):
        raise LineError("bad_ts", f"ts must be finite Unix seconds, got {ts}")
    return ts, values


class LineSource(SensorSource):
    """Readings from a byte stream of text lines in the module's format.

    Subclasses say how to get the next bytes (:meth:`_pull`); this class splits lines,
    parses, stamps and filters them, and counts what it skips in :attr:`rejected`.

    Parameters
    ----------
    name
        How logs name the source (``"stdin"``, ``"serial:///dev/ttyUSB0"``).
    channels
        The feature names the fleet's schema knows; other names are ignored.
    clock
        Stamps readings that carry no ``ts``.
    max_line_bytes
        Longer lines are skipped (``too_long``).
    """

    def __init__(self, name: str, channels: Iterable[str], *,
                 clock: Callable[[], float] = time.time, max_line_bytes: int = 4096) -> None:
        self.name = name
        self.channels = frozenset(channels)
        self.clock = clock
        self.max_line_bytes = max_line_bytes
        self.rejected: Counter[str] = Counter()
        self.lines = 0
        self._buffer = bytearray()
        self._lines: deque[bytes] = deque()
        self._discarding = False  # inside a too-long line, until its end
        self._ended = False
        self._last_ts = -math.inf
        self._ignored: set[str] = set()

    @abc.abstractmethod
    def _pull(self) -> bytes | None:
        """The next bytes, waiting briefly: ``b""`` if none came, ``None`` at end of stream."""

    @property
    def finished(self) -> bool:
        return self._ended and not self._lines

    def counters(self) -> dict[str, int]:
        return {f"skipped {reason}": count for reason, count in sorted(self.rejected.items())}

    def read(self) -> Reading | None:
        for line in self._next_lines():
            reading = self._reading(line)
            if reading is not None:
                return reading
        return None

    def _next_lines(self) -> Iterator[bytes]:
        """Lines already received, then those that one pull brings."""
        while self._lines:
            yield self._lines.popleft()
        if self._ended:
            return
        chunk = self._pull()
        if chunk is None:
            self._ended = True
            self._take(b"\n")  # a last line without its newline still counts
        else:
            self._take(chunk)
        while self._lines:
            yield self._lines.popleft()

    def _take(self, chunk: bytes) -> None:
        self._buffer += chunk.replace(b"\r", b"\n")
        *complete, rest = self._buffer.split(b"\n")
        for line in complete:
            if self._discarding:
                self._discarding = False
            elif len(line) > self.max_line_bytes:
                self.lines += 1
                self._reject("too_long", f"a line longer than {self.max_line_bytes} bytes")
            elif line.strip():
                self._lines.append(bytes(line))
        self._buffer = bytearray(rest)
        if len(self._buffer) > self.max_line_bytes:
            if not self._discarding:
                self.lines += 1
                self._reject("too_long", f"a line longer than {self.max_line_bytes} bytes")
            self._discarding = True
            self._buffer.clear()

    def _reading(self, raw: bytes) -> Reading | None:
        self.lines += 1
        try:
            ts, values = parse_line(raw.decode("utf-8"))
        except UnicodeDecodeError:
            self._reject("not_utf8", "a line that is not UTF-8 text")
            return None
        except LineError as exc:
            self._reject(exc.reason, str(exc).partition(": ")[2])
            return None
        known = {k: v for k, v in values.items() if k in self.channels and math.isfinite(v)}
        self._note_ignored(values)
        if not known:
            self._reject("no_known_values", f"no value for a schema channel in {raw[:80]!r}")
            return None
        if ts is None:
            ts = max(self.clock(), self._last_ts + 1e-6)
        elif ts <= self._last_ts:
            self._reject("time_went_back", f"ts {ts} is not after the previous {self._last_ts}")
            return None
        self._last_ts = ts
        return Reading(ts, known)

    def _note_ignored(self, values: dict[str, float]) -> None:
        unknown = set(values) - self.channels - self._ignored
        if unknown:
            self._ignored |= unknown
            log.info("%s: ignoring channels the schema does not know: %s", self.name,
                     ", ".join(sorted(unknown)))

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if total <= _LOGGED_IN_FULL or total % 1000 == 0:
            log.warning("%s: skipped line %d (%s: %s); %d skipped so far", self.name,
                        self.lines, reason, detail, total)
