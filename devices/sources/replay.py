"""Replay a recorded log in the generic CSV format (:mod:`devices.sources.csvlog`) as a live source.

Rows come out when their time is due: at the pace they were recorded, or ``speedup`` times
faster. Columns named after the schema's channels are read; any other column (a label, a
note) is ignored. The log is read and checked whole when the source opens, so a malformed
file is refused at once with the line that is wrong.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from devices.sources.base import Reading, SensorSource, SourceError
from devices.sources.csvlog import CsvLogError, read_log

__all__ = ["CsvReplay"]

log = logging.getLogger(__name__)


class CsvReplay(SensorSource):
    """A CSV log's rows as readings, paced by their timestamps.

    Parameters
    ----------
    path
        The log.
    channels
        The schema's channel names: the columns to read.
    speedup
        Recorded seconds per wall second (``math.inf``: as fast as the agent reads).
    time_col, sep
        The log's time column and field separator.

    Examples
    --------
    >>> import math, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "truck-9.csv"
    >>> _ = path.write_text("timestamp,coolant_temp_c,label\\n0,88,0\\n1,,0\\n1,91,1\\n")
    >>> replay = CsvReplay(path, ["coolant_temp_c"], speedup=math.inf)
    >>> [(r.ts_s, r.values) for r in (replay.read(), replay.read())]
    [(0.0, {'coolant_temp_c': 88.0}), (1.0, {'coolant_temp_c': 91.0})]
    >>> replay.read() is None
    True
    >>> replay.finished
    True
    >>> replay.counters()
    {'skipped no_known_values': 1}
    """

    def __init__(self, path: str | Path, channels: Iterable[str], *, speedup: float = 1.0,
                 time_col: str = "timestamp", sep: str = ",",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not speedup > 0:
            raise SourceError(f"speedup must be greater than 0, got {speedup}")
        try:
            recorded = read_log(path, time_col=time_col, label_col=None, sep=sep)
        except CsvLogError as exc:
            raise SourceError(str(exc)) from None
        wanted = frozenset(channels)
        used = [c for c in recorded.columns if c in wanted]
        ignored = sorted(set(recorded.columns) - wanted)
        if not used:
            raise SourceError(f"{path}: no column named after a schema channel "
                              f"({', '.join(sorted(wanted))}); columns: {list(recorded.columns)}")
        if ignored:
            log.info("%s: ignoring columns the schema does not know: %s", path,
                     ", ".join(ignored))
        for note in recorded.notes:  # a repaired clock, a column that is not numeric
            log.warning("%s", note)
        self.path = Path(path)
        self.rows = len(recorded)
        self._readings = iter(recorded.select(used).readings())
        self._times = recorded.times_s
        self.speedup, self.clock = speedup, clock
        self.skipped: Counter[str] = Counter()
        self._next: Reading | None = next(self._readings, None)
        self._started_at: float | None = None
        self._last_ts = -math.inf

    @property
    def finished(self) -> bool:
        return self._next is None

    def counters(self) -> dict[str, int]:
        return {f"skipped {reason}": n for reason, n in sorted(self.skipped.items())}

    def read(self) -> Reading | None:
        while self._next is not None:
            reading = self._next
            if not self._due(reading.ts_s):
                return None
            self._next = next(self._readings, None)
            if not reading.values:
                self.skipped["no_known_values"] += 1
                continue
            # Equal times are allowed in a log; readings must still move forward.
            self._last_ts = max(reading.ts_s, self._last_ts + 1e-6)
            return Reading(self._last_ts, reading.values)
        return None

    def _due(self, ts_s: float) -> bool:
        if math.isinf(self.speedup):
            return True
        now = self.clock()
        if self._started_at is None:
            self._started_at = now
        wait_s = (ts_s - float(self._times[0])) / self.speedup - (now - self._started_at)
        if wait_s > 0:
            time.sleep(min(wait_s, 0.05))
            return False
        return True
