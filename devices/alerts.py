"""When a score becomes an alert: persistence over a window, and a cooldown per subsystem."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["AlertPolicy"]


@dataclass
class AlertPolicy:
    """Raise an alert when ``min_hits`` of the last ``window`` scores exceed ``threshold``.

    A subsystem that has alerted stays quiet for ``cooldown_s`` seconds of reading time, so a
    developing fault is reported, not streamed.

    Examples
    --------
    >>> policy = AlertPolicy(threshold=5.0, window=4, min_hits=3, cooldown_s=60)
    >>> [policy.observe(t, s, "cooling") for t, s in enumerate([9, 1, 9, 9, 9, 9])]
    [False, False, False, True, False, False]
    >>> policy.observe(100.0, 9.0, "cooling")
    True
    """

    threshold: float = 6.0
    window: int = 10
    min_hits: int = 6
    cooldown_s: float = 1800.0
    _hits: deque[bool] = field(init=False, repr=False)
    _last_alert_s: dict[str, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.min_hits <= self.window:
            raise ValueError("need 1 <= min_hits <= window")
        self._hits = deque(maxlen=self.window)

    def observe(self, ts_s: float, score: float, subsystem: str) -> bool:
        """Record one score; return ``True`` when it should raise an alert for ``subsystem``."""
        self._hits.append(score > self.threshold)
        if score <= self.threshold or sum(self._hits) < self.min_hits:
            return False
        last = self._last_alert_s.get(subsystem)
        if last is not None and ts_s - last < self.cooldown_s:
            return False
        self._last_alert_s[subsystem] = ts_s
        return True
