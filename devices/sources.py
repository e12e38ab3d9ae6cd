"""Where readings come from: the sensor-source interface every source implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

__all__ = ["Reading", "SensorSource"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One timestamped set of physical sensor values, keyed by feature name (unit in name).

    A channel the source could not read is simply absent from ``values``.
    """

    ts_s: float
    values: dict[str, float] = field(default_factory=dict)


class SensorSource(abc.ABC):
    """A stream of readings from one vehicle.

    ``read`` returns the next reading, or ``None`` when none is available right now;
    it never raises for a bad sample (a source skips and counts those itself).
    """

    @abc.abstractmethod
    def read(self) -> Reading | None:
        """Return the next reading, or ``None`` if there is none yet."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release whatever the source holds (ports, files)."""
