"""Where readings come from: the :class:`SensorSource` interface and the real sources.

A source yields :class:`Reading` objects: an OBD-II adapter (:mod:`~devices.sources.obdii`),
lines on a serial port or standard input (:mod:`~devices.sources.serialport`,
:mod:`~devices.sources.stdin`), or a CSV log replayed at its own pace
(:mod:`~devices.sources.replay`); :mod:`~devices.sources.attach` opens one from a spec.
Simulated vehicles are sources too, in :mod:`devices.sim`.
"""

from devices.sources.base import Reading, SensorSource, SourceError, import_optional

__all__ = ["Reading", "SensorSource", "SourceError", "import_optional"]
