"""Counting rejected messages by reason, and logging them without flooding the log.

A component that validates what the network sends it rejects a bad message with a reason and
carries on. Every rejection is counted; the first of each reason is logged in full, and after
that at most one line per reason every ``every_s`` seconds says how many more came, so a
flood of hostile messages costs a counter, not a log line each.

>>> import logging
>>> rejections = RejectionLog(logging.getLogger("doc"), clock=lambda: 0.0)
>>> for _ in range(3):
...     rejections.reject("not_json", "fleet/v1/vehicles/veh-1/update: Expecting value")
>>> dict(rejections.counts), rejections.logged
({'not_json': 3}, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["RejectionLog"]


class RejectionLog:
    """Rejections by reason (``counts``), logged at ``level`` once per reason per ``every_s``.

    Safe to call from several threads (a network thread may reject what it cannot queue).
    """

    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0,
                 level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self.logged = 0
        self._log, self._every_s, self._level, self._clock = logger, every_s, level, clock
        self._next: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reject(self, reason: str, detail: str) -> None:
        """Count one rejection; log it if its reason has not been logged for ``every_s``."""
        now = self._clock()
        with self._lock:
            self.counts[reason] += 1
            if now < self._next.get(reason, -float("inf")):
                self._unlogged[reason] += 1
                return
            self._next[reason] = now + self._every_s
            more = self._unlogged.pop(reason, 0)
        since = f" (and {more} more since the last report)" if more else ""
        self._log.log(self._level, "rejected %s (%s)%s", detail, reason, since)
        self.logged += 1
