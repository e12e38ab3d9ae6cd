"""Where readings come from: the sensor-source interface every source implements.

Exceptions::

    ValueError
    └── SourceError        a source that cannot be opened: bad spec, missing file or library
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from types import ModuleType

__all__ = ["Reading", "SensorSource", "SourceError", "import_optional"]


class SourceError(ValueError):
    """A source that cannot be opened, with what to do about it."""


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
    it never raises for a bad sample or a lost connection (a source skips and counts bad
    samples, and reconnects, itself). A finite source (a log, a pipe) sets ``finished``
    once it has nothing more to give.
    """

    @abc.abstractmethod
    def read(self) -> Reading | None:
        """Return the next reading, or ``None`` if there is none yet."""

    @property
    def finished(self) -> bool:
        """Whether the source has ended for good (end of a log or of standard input)."""
        return False

    def counters(self) -> dict[str, int]:
        """What the source skipped, missed or retried so far, by reason (for people to read)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release whatever the source holds (ports, files)."""


def import_optional(module: str, extra: str, what: str) -> ModuleType:
    """Import a source's optional dependency, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"{what} needs the Python package behind `import {module}`: "
                          f"pip install 'fedfleet[{extra}]'") from None
